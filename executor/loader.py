"""Load one rank's slice of an mlx-lm model directory, layer by layer.

The model is built from its config with mlx-lm's own classes (its randomly initialised
arrays are lazy and never evaluated), then each layer's tensors are read from the
safetensors, cut to the rank's ranges and evaluated one tensor at a time, so the peak stays
near the rank's shard plus one full tensor rather than the whole model.
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.utils import _get_classes

from executor.checkpoint_forms import absorbed_sources, read_absorbed
from executor.families import EMBEDDINGS, OUTPUT_HEAD, Ranges, module_named, split_layer_name
from executor.layer_patch import patch_layer
from executor.pipeline import check_family, wire
from executor.shard import slice_weights
from executor.stage_links import StageLinks
from protocol.config_reader import read_config
from protocol.model_spec import ModelSpec
from protocol.plan import RankPlan

Progress = Callable[[int, int], None]


class LoadError(RuntimeError):
    """A model directory that cannot be loaded; the message names the file at fault."""


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LoadError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise LoadError(f"{path}: not a JSON object")
    return data


def read_header(path: Path) -> dict[str, Any]:
    """A safetensors header (tensor name -> dtype, shape, data_offsets), without the tensors."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100 << 20:
                raise ValueError("header too large")
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as e:
        raise LoadError(f"{path}: not a readable safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise LoadError(f"{path}: not a readable safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    return header


def weight_files(model_dir: Path) -> dict[str, Path]:
    """tensor name -> the file holding it."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        mapping = read_json(index).get("weight_map", {})
        return {name: model_dir / file for name, file in mapping.items()}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LoadError(f"{model_dir}: no *.safetensors files")
    return {name: f for f in files for name in read_header(f)}


def eos_token_ids(model_dir: Path) -> list[int]:
    """The ids that end a generation, found as mlx-lm finds them: `eos_token_id` from
    `generation_config.json` over `config.json` (chat models keep their end-of-turn token
    there), plus the tokenizer's own `eos_token`."""
    from mlx_lm.utils import load_config

    try:
        value = load_config(model_dir).get("eos_token_id")
    except (OSError, json.JSONDecodeError) as e:
        raise LoadError(f"{model_dir / 'config.json'}: {e}") from None
    ids = {value} if isinstance(value, int) else set(value or [])
    token = _tokenizer_eos(model_dir)
    if token is not None:
        ids.add(token)
    return sorted(ids)


def _tokenizer_eos(model_dir: Path) -> int | None:
    config_file, vocab_file = model_dir / "tokenizer_config.json", model_dir / "tokenizer.json"
    if not (config_file.is_file() and vocab_file.is_file()):
        return None
    name = read_json(config_file).get("eos_token")
    if isinstance(name, dict):  # an AddedToken as transformers saves it
        name = name.get("content")
    if not isinstance(name, str):
        return None
    tokenizer = read_json(vocab_file)
    added = {t.get("content"): t.get("id") for t in tokenizer.get("added_tokens", [])}
    found = added.get(name, tokenizer.get("model", {}).get("vocab", {}).get(name))
    return found if isinstance(found, int) else None


def skeleton(config: dict[str, Any], names: set[str]) -> nn.Module:
    """mlx-lm's model for `config`, quantized where the checkpoint is (as mlx_lm.load does)."""
    model_cls, args_cls = _get_classes(config)
    model: nn.Module = model_cls(args_cls.from_dict(config))
    quant = config.get("quantization")
    if quant:
        # As mlx_lm.load: a module's own entry (settings, or false) wins; else the default
        # wherever the checkpoint holds scales.
        overrides = {k: v for k, v in quant.items() if isinstance(v, dict | bool)}

        def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
            if path in overrides:
                return overrides[path]
            return hasattr(module, "to_quantized") and f"{path}.scales" in names

        nn.quantize(
            model,
            group_size=quant["group_size"],
            bits=quant["bits"],
            mode=quant.get("mode", "affine"),
            class_predicate=predicate,
        )
    return model


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    layers: list[nn.Module] = model.layers
    return layers


def _wanted(name: str, links: StageLinks | None) -> bool:
    """Whether this rank holds a non-layer tensor: pipeline stages after the first hold no
    embeddings, and only rank 0 holds the output head (their modules are swapped out)."""
    if links is None:
        return True
    if module_named(name, EMBEDDINGS):
        return links.role.embeds
    return links.role.holds_head or not module_named(name, OUTPUT_HEAD)


def load_shard(
    model_dir: Path,
    rank_plan: RankPlan | None = None,
    group: Any = None,
    progress: Progress | None = None,
    links: StageLinks | None = None,
) -> tuple[nn.Module, dict[str, Any], ModelSpec]:
    """The model with this rank's slices; `rank_plan=None` loads the whole model unsharded.
    With `links` (a plan with pipeline stages) only the rank's layers are loaded and the model
    becomes its part of the pipeline (`executor.pipeline`); the stage's ranks form the group
    of the layers' all-sums."""
    config = read_json(model_dir / "config.json")
    try:
        spec = read_config(config)
    except ValueError as e:
        raise LoadError(f"{model_dir / 'config.json'}: {e}") from None
    if links is not None:
        check_family(spec)
    files = weight_files(model_dir)
    absorbed = absorbed_sources(files)
    model = skeleton(config, set(files) | set(absorbed))
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(files) - set(absorbed))
    if missing:
        raise LoadError(
            f"{model_dir}: the checkpoint lacks {len(missing)} tensors, e.g. {missing[0]}"
        )
    by_layer: dict[int | None, list[str]] = defaultdict(list)
    for name in expected:
        by_layer[split_layer_name(name)[0]].append(name)
    by_layer[None] = [n for n in by_layer[None] if _wanted(n, links)]
    whole = range(len(_decoder_layers(model)))
    own = range(*rank_plan.layers) if links is not None and rank_plan else whole
    sharded = rank_plan is not None and (links is None or links.role.stage.size > 1)
    slicer = Slicer(model, spec, rank_plan if sharded else None, links or group, files, absorbed)
    steps = [None, *own]
    for done, layer_index in enumerate(steps, start=1):
        slicer.load(layer_index, by_layer.get(layer_index, []))
        if progress:
            progress(done, len(steps))
    if links is not None:
        wire(model, spec, links)
    model.eval()
    return model, config, spec


class Slicer:
    """Loads one layer's tensors (or the non-layer ones: `index` None), cut to the rank's
    ranges and patched for its group when `rank_plan` is given."""

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        rank_plan: RankPlan | None,
        group: Any,
        files: dict[str, Path],
        absorbed: dict[str, str],
    ) -> None:
        self.model, self.spec, self.group = model, spec, group
        self.files, self.absorbed = files, absorbed
        self.layers = _decoder_layers(model)
        self.ranges = Ranges.of(rank_plan) if rank_plan is not None else None
        # The rank within the all-sum's group: its first rank adds the row-parallel biases.
        in_stage = group.role.stage_rank if isinstance(group, StageLinks) else None
        self.group_rank = in_stage if in_stage is not None else rank_plan.rank if rank_plan else 0

    def load(self, index: int | None, names: list[str]) -> None:
        loaded = _read([n for n in names if n in self.files], self.files)
        if made := [n for n in names if n not in self.files]:
            loaded.update(read_absorbed(self.model, made, self.absorbed, self.files, _read))
        if self.ranges is not None:
            loaded = slice_weights(loaded, self.spec, self.ranges, self.group_rank)
        for name in names:
            mx.eval(loaded[name])  # one tensor at a time: its full buffer is freed after the copy
        self.model.update(tree_unflatten(list(loaded.items())))
        del loaded
        mx.clear_cache()  # freed full tensors would otherwise stay in MLX's buffer cache
        if index is not None and self.ranges is not None:
            patch_layer(self.layers[index], self.spec, self.ranges, self.group)


def _read(names: list[str], files: dict[str, Path]) -> dict[str, mx.array]:
    by_file: dict[Path, list[str]] = defaultdict(list)
    for n in names:
        by_file[files[n]].append(n)
    out: dict[str, mx.array] = {}
    for path, wanted in by_file.items():
        try:
            arrays = mx.load(str(path))  # lazy: nothing is read until a slice is evaluated
        except Exception as e:  # mlx raises RuntimeError/ValueError for bad files
            raise LoadError(f"{path}: cannot read safetensors ({e})") from None
        assert isinstance(arrays, dict)
        for n in wanted:
            if n not in arrays:
                raise LoadError(f"{path}: tensor {n} is missing")
            out[n] = arrays[n]
    return out
