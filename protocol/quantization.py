"""A checkpoint's quantization: the default and every per-module override, as MLX stores them.

mlx-lm conversions (and GGUF imports) write one `quantization` block: the default `bits`,
`group_size` and `mode`, plus an entry per module whose precision differs (8-bit embeddings
beside 4-bit layers, 8-bit routers, `false` for a module kept unquantized). Hugging Face's
own MXFP4 checkpoints (gpt-oss) write `quantization_config` with `quant_method` and
`modules_to_not_convert` instead; compressed-tensors checkpoints (Kimi-K2 Thinking's native
INT4) write `quant_method: compressed-tensors`, a `format` and an `ignore` list of module names
and `re:` patterns kept unquantized. All become one `Quantization`, asked per module path.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ModelConfigError(ValueError):
    """A config.json that cannot be planned; the message names the key at fault."""


class QuantMode(StrEnum):
    AFFINE = "affine"
    MXFP4 = "mxfp4"
    NVFP4 = "nvfp4"
    MXFP8 = "mxfp8"


# The floating-point modes allow one (bits, group_size) each and keep one uint8 scale a group.
_FIXED_MODES = {
    QuantMode.MXFP4: (4, 32),
    QuantMode.NVFP4: (4, 16),
    QuantMode.MXFP8: (8, 32),
}
_HF_METHODS = {"mxfp4": QuantMode.MXFP4, "mxfp8": QuantMode.MXFP8}
COMPRESSED_TENSORS = "compressed-tensors"
# What mlx-lm's loader (`_compressed_tensors_quantization`) makes of each packed format.
_PACKED_FORMATS = {
    "pack-quantized": (QuantMode.AFFINE, 4, 32),
    "mxfp4-pack-quantized": (QuantMode.MXFP4, 4, 32),
    "nvfp4-pack-quantized": (QuantMode.NVFP4, 4, 16),
}
REGEX_PREFIX = "re:"
# compressed-tensors names modules as Hugging Face does, one module per expert; mlx-lm stacks
# the experts into one `switch_mlp`, whose ignore-list name is that of any one expert.
_STACKED_EXPERTS = (".switch_mlp.", ".experts.0.")


@dataclass(frozen=True)
class Quant:
    bits: int
    group_size: int
    mode: QuantMode = QuantMode.AFFINE

    def matrix_bytes(self, out_dim: int, in_dim: int, dtype_bytes: int) -> int:
        """Packed weights plus per-group scales (and biases, for affine) as MLX holds them."""
        groups = out_dim * (in_dim // self.group_size)
        packed = out_dim * in_dim * self.bits // 8
        if self.mode is QuantMode.AFFINE:
            return packed + 2 * groups * dtype_bytes
        return packed + groups  # one uint8 scale a group, no biases


def read_quant(block: Any, where: str) -> Quant:
    if not isinstance(block, dict):
        raise ModelConfigError(f"{where} must be an object with bits and group_size")
    mode_name = block.get("mode", QuantMode.AFFINE.value)
    try:
        mode = QuantMode(mode_name)
    except ValueError:
        modes = ", ".join(m.value for m in QuantMode)
        raise ModelConfigError(f"{where}.mode must be one of {modes}, got {mode_name!r}") from None
    bits, group = (_whole_or_same(block.get(k)) for k in ("bits", "group_size"))
    if mode in _FIXED_MODES:
        fixed = _FIXED_MODES[mode]
        if (bits, group) != fixed and (bits, group) != (None, None):
            raise ModelConfigError(
                f"{where}: mode {mode.value} means bits {fixed[0]} and group_size {fixed[1]}, "
                f"got {bits!r} and {group!r}"
            )
        return Quant(bits=fixed[0], group_size=fixed[1], mode=mode)
    if isinstance(bits, bool) or bits not in (2, 3, 4, 5, 6, 8):
        raise ModelConfigError(f"{where}.bits must be one of 2, 3, 4, 5, 6, 8, got {bits!r}")
    if isinstance(group, bool) or group not in (32, 64, 128):
        raise ModelConfigError(f"{where}.group_size must be 32, 64 or 128, got {group!r}")
    return Quant(bits=bits, group_size=group, mode=mode)


@dataclass(frozen=True)
class Quantization:
    default: Quant
    overrides: tuple[tuple[str, Quant | None], ...] = ()
    """Module path -> its own quantization (None: kept unquantized)."""
    not_converted: tuple[str, ...] = ()
    """Module path patterns (`*` for a layer index) kept unquantized."""
    ignored: tuple[str, ...] = ()
    """compressed-tensors `ignore` entries: exact Hugging Face module names, or `re:` regexes
    matched from the start of the name; those modules are kept unquantized."""

    def at(self, path: str) -> Quant | None:
        """How the module at `path` (mlx-lm's parameter path, without the leaf) is stored."""
        for name, quant in self.overrides:
            if name == path:
                return quant
        for pattern in self.not_converted:
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + ".*"):
                return None
        if self.ignored and _ignored(path.replace(*_STACKED_EXPERTS), self.ignored):
            return None
        return self.default

    @property
    def group_size(self) -> int:
        """A column count that is whole groups of every module's quantization: where a split
        must fall so that each module's row-parallel slice keeps whole groups."""
        return math.lcm(self.default.group_size, *(q.group_size for _, q in self.overrides if q))


def read_quantization(cfg: dict[str, Any]) -> Quantization | None:
    """The config's quantization (mlx-lm's `quantization`, else Hugging Face's MXFP4 block)."""
    block = cfg.get("quantization")
    if block is None and isinstance(cfg.get("quantization_config"), dict):
        block = cfg["quantization_config"]
        method = block.get("quant_method")
        if method in _HF_METHODS:
            return _hf_quantization(block, _HF_METHODS[method])
        if method == COMPRESSED_TENSORS:
            return _compressed_tensors(block)
    if block is None:
        return None
    default = read_quant(block, "model.quantization")
    overrides: list[tuple[str, Quant | None]] = []
    for key, value in block.items():
        where = f"model.quantization.{key}"
        if isinstance(value, dict):
            overrides.append((key, read_quant(value, where)))
        elif value is False:
            overrides.append((key, None))
        elif value is True:
            overrides.append((key, default))
    return Quantization(default=default, overrides=tuple(overrides))


def _hf_quantization(block: dict[str, Any], mode: QuantMode) -> Quantization:
    bits, group = _FIXED_MODES[mode]
    skip = block.get("modules_to_not_convert") or []
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise ModelConfigError(
            "model.quantization_config.modules_to_not_convert must be a list of module names"
        )
    return Quantization(default=Quant(bits, group, mode), not_converted=tuple(skip))


def _ignored(name: str, ignore: tuple[str, ...]) -> bool:
    for entry in ignore:
        if entry.startswith(REGEX_PREFIX):
            if re.match(entry[len(REGEX_PREFIX) :], name):
                return True
        elif name == entry:
            return True
    return False


def _compressed_tensors(block: dict[str, Any]) -> Quantization:
    """A compressed-tensors checkpoint as mlx-lm loads it: its packed format's quantization
    for the modules it packs, every `ignore`d module unquantized."""
    where = "model.quantization_config"
    fmt = block.get("format")
    if fmt not in _PACKED_FORMATS:
        formats = ", ".join(_PACKED_FORMATS)
        raise ModelConfigError(f"{where}.format must be one of {formats}, got {fmt!r}")
    mode, bits, group = _PACKED_FORMATS[fmt]
    groups = block.get("config_groups") or {}
    weights = [g.get("weights") or {} for g in groups.values()] if isinstance(groups, dict) else []
    for w in weights:
        given = (
            _whole_or_same(w.get("num_bits", bits)),
            _whole_or_same(w.get("group_size", group)),
        )
        if given != (bits, group):
            raise ModelConfigError(
                f"{where}.config_groups: mlx-lm loads {fmt} as {bits}-bit groups of {group}, "
                f"got num_bits {given[0]!r} and group_size {given[1]!r}"
            )
    ignore = block.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(s, str) for s in ignore):
        raise ModelConfigError(f"{where}.ignore must be a list of module names")
    for entry in ignore:
        if entry.startswith(REGEX_PREFIX):
            try:
                re.compile(entry[len(REGEX_PREFIX) :])
            except re.error as e:
                raise ModelConfigError(f"{where}.ignore: {entry!r} is not a regex: {e}") from None
    return Quantization(default=Quant(bits, group, mode), ignored=tuple(ignore))


def _whole_or_same(v: Any) -> Any:
    """4.0 -> 4 (JSON writers differ); anything else as it is, for the checks to name."""
    return int(v) if isinstance(v, float) and v.is_integer() else v
