"""Typed reads of config.json values; every error names the key at fault."""

from __future__ import annotations

from typing import Any

from protocol.quantization import ModelConfigError

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def get(cfg: dict[str, Any], key: str, default: Any = None, *, required: bool = False) -> Any:
    if key not in cfg or cfg[key] is None:
        if required:
            raise ModelConfigError(f"model.{key} is missing")
        return default
    return cfg[key]


MAX_UNITS = {
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "num_experts": 4096,
    "n_routed_experts": 4096,
    "num_local_experts": 4096,
    "num_experts_per_tok": 4096,
    "linear_num_key_heads": 1024,
    "linear_num_value_heads": 1024,
}
"""Unit counts the planner places one by one: published models have at most 128 heads and
512 experts, so more is a typo (or an attack on the planner's time), refused by name."""


def whole(v: Any, where: str) -> int:
    """An integer, or a float that is one (`4.0`): JSON writers differ."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelConfigError(f"{where} must be an integer, got {v!r}")
    return v


def read_int(cfg: dict[str, Any], key: str, default: int | None = None, *, minimum: int = 1) -> int:
    v = whole(get(cfg, key, default, required=default is None), f"model.{key}")
    if v < minimum:
        raise ModelConfigError(f"model.{key} must be >= {minimum}, got {v}")
    limit = MAX_UNITS.get(key, 10**9)
    if v > limit:
        raise ModelConfigError(f"model.{key} must be <= {limit}, got {v}")
    return v


def read_bool(cfg: dict[str, Any], key: str, default: bool) -> bool:
    v = get(cfg, key, default)
    if not isinstance(v, bool):
        raise ModelConfigError(f"model.{key} must be true or false, got {v!r}")
    return v


def int_list(cfg: dict[str, Any], key: str) -> list[int]:
    v = get(cfg, key, []) or []
    if not isinstance(v, list) or not all(isinstance(i, int) for i in v):
        raise ModelConfigError(f"model.{key} must be a list of layer indices")
    return v


def layer_kinds(cfg: dict[str, Any], layers: int, kinds: tuple[str, str]) -> list[str]:
    """`layer_types`, or alternating `kinds` as mlx-lm assumes when it is absent."""
    v = get(cfg, "layer_types")
    if v is None:
        return [kinds[i % 2] for i in range(layers)]
    if not isinstance(v, list) or len(v) != layers or not all(k in kinds for k in v):
        raise ModelConfigError(
            f"model.layer_types must list {layers} entries, each one of {', '.join(kinds)}"
        )
    return v


def dtype_bytes(cfg: dict[str, Any]) -> int:
    name = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    if not isinstance(name, str) or name not in _DTYPE_BYTES:
        raise ModelConfigError(
            f"model.torch_dtype {name!r} is not one of {', '.join(sorted(_DTYPE_BYTES))}"
        )
    return _DTYPE_BYTES[name]


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    inner = config.get("text_config")
    if isinstance(inner, dict):
        merged = {k: v for k, v in config.items() if k != "text_config"}
        merged.update(inner)
        merged["model_type"] = config.get("model_type", inner.get("model_type"))
        return merged
    return dict(config)


def nesting(value: Any) -> int:
    """How deep objects and arrays nest (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if items is None:
            continue
        deepest = max(deepest, depth)
        if deepest > 32:
            break
        stack.extend((x, depth + 1) for x in items)
    return deepest
