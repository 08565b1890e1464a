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
from executor.families import Ranges, split_layer_name
from executor.layer_patch import patch_layer
from executor.shard import slice_weights
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


def load_shard(
    model_dir: Path,
    rank_plan: RankPlan | None = None,
    group: Any = None,
    progress: Progress | None = None,
) -> tuple[nn.Module, dict[str, Any], ModelSpec]:
    """The model with this rank's slices; `rank_plan=None` loads the whole model unsharded."""
    config = read_json(model_dir / "config.json")
    try:
        spec = read_config(config)
    except ValueError as e:
        raise LoadError(f"{model_dir / 'config.json'}: {e}") from None
    files = weight_files(model_dir)
    absorbed = absorbed_sources(files)
    model = skeleton(config, set(files) | set(absorbed))
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(files) - set(absorbed))
    if missing:
        raise LoadError(
            f"{model_dir}: the checkpoint lacks {len(missing)} tensors, e.g. {missing[0]}"
        )

    ranges = Ranges.of(rank_plan) if rank_plan is not None else None
    by_layer: dict[int | None, list[str]] = defaultdict(list)
    for name in expected:
        by_layer[split_layer_name(name)[0]].append(name)
    layers = _decoder_layers(model)
    steps = [None, *range(len(layers))]
    for done, layer_index in enumerate(steps, start=1):
        names = by_layer.get(layer_index, [])
        loaded = _read([n for n in names if n in files], files)
        if made := [n for n in names if n not in files]:
            loaded.update(read_absorbed(model, made, absorbed, files, _read))
        if ranges is not None:
            loaded = slice_weights(loaded, spec, ranges, rank_plan.rank if rank_plan else 0)
        for name in names:
            mx.eval(loaded[name])  # one tensor at a time: its full buffer is freed after the copy
        model.update(tree_unflatten(list(loaded.items())))
        del loaded
        mx.clear_cache()  # freed full tensors would otherwise stay in MLX's buffer cache
        if layer_index is not None and ranges is not None:
            patch_layer(layers[layer_index], spec, ranges, group)
        if progress:
            progress(done, len(steps))
    model.eval()
    return model, config, spec


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
