"""`asymtp import-gguf FILE OUT_DIR`: a llama.cpp GGUF as an mlx-lm model directory.

Q4_0, Q4_1 and Q8_0 blocks stay packed: MLX reads them as affine quantization with group size
32 (each block's scale and minimum, or its scale and implicit offset, become MLX's scale and
bias), so nothing is rounded. A tensor packed with other bits than the rest (the embedding in
Q8_0 beside Q4_1 layers) gets a per-module entry in the config's `quantization` block, as
`mlx_lm.convert` writes for mixed recipes. K-quant blocks have no packed MLX equivalent: MLX
expands them to float16 and the importer says so; types MLX cannot read are refused by name.
llama.cpp stores llama's q/k projection rows permuted for its rotary layout; they are put back
in Hugging Face order, which mlx-lm's llama expects.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor.gguf_header import (
    AFFINE_TYPES,
    DEQUANTIZED_TYPES,
    FLOAT_TYPES,
    GgufError,
    TensorInfo,
    read_tensor_table,
)

GROUP_SIZE = 32
"""The block size of every GGUF type MLX keeps packed."""
DTYPES = ("float32", "float16", "bfloat16")
ARCH_MODEL_TYPE = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
ROPE_PERMUTED = frozenset({"llama"})
"""Architectures whose GGUF q/k rows llama.cpp's converter permuted."""
_TOP_MODULES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_MODULES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LEAVES = ("weight", "scales", "biases", "bias")

Say = Callable[[str], None]


@dataclass
class ImportReport:
    out: Path
    model_type: str
    tensors: int
    kept: Counter[str] = field(default_factory=Counter)
    """ggml type -> tensors written packed (or as the floats they were)."""
    dequantized: Counter[str] = field(default_factory=Counter)
    quantization: dict[str, Any] | None = None
    eos_token_ids: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        kept = ", ".join(f"{n} {t}" for t, n in sorted(self.kept.items()))
        out = [f"wrote {self.model_type} model to {self.out} ({self.tensors} tensors: {kept})"]
        if self.dequantized:
            out.append(
                "expanded to floats (no exact MLX packing): "
                + ", ".join(f"{n} {t}" for t, n in sorted(self.dequantized.items()))
            )
        if self.quantization:
            overrides = {k: v for k, v in self.quantization.items() if isinstance(v, dict)}
            q = self.quantization
            out.append(
                f"quantization: {q['bits']}-bit, group {q['group_size']}"
                + "".join(f"; {k}: {v['bits']}-bit" for k, v in sorted(overrides.items()))
            )
        out.append(f"end-of-sequence ids: {self.eos_token_ids}")
        return out


def _meta_value(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    v = meta.get(key, default)
    return v.item() if hasattr(v, "item") else v


def mlx_name(gguf_name: str) -> str:
    """`blk.3.attn_q.scales` -> `model.layers.3.self_attn.q_proj.scales`."""
    module, _, leaf = gguf_name.rpartition(".")
    if leaf not in _LEAVES:
        raise GgufError(f"tensor {gguf_name}: unknown parameter kind {leaf!r}")
    if module in _TOP_MODULES:
        return f"{_TOP_MODULES[module]}.{leaf}"
    parts = module.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_MODULES:
        return f"model.layers.{parts[1]}.{_LAYER_MODULES[parts[2]]}.{leaf}"
    raise GgufError(f"tensor {gguf_name}: no mlx-lm counterpart known to this importer")


def model_config(meta: dict[str, Any], names: set[str]) -> dict[str, Any]:
    arch = str(meta.get("general.architecture"))
    if arch not in ARCH_MODEL_TYPE:
        raise GgufError(
            f"architecture {arch!r} is not supported (supported: {', '.join(ARCH_MODEL_TYPE)})"
        )

    def get(key: str, default: Any = None) -> Any:
        v = _meta_value(meta, f"{arch}.{key}", default)
        if v is None:
            raise GgufError(f"the GGUF lacks {arch}.{key}")
        return v

    scaling = _meta_value(meta, f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise GgufError(f"rope scaling {scaling!r} is not supported by this importer")
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    return {
        "model_type": ARCH_MODEL_TYPE[arch],
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("attention.key_length", hidden // heads)),
        # float32 in the file: written as the short decimal it was (1e-05, not 9.99…e-06)
        "rms_norm_eps": float(f"{get('attention.layer_norm_rms_epsilon'):.6g}"),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length")),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": "output.weight" not in names,
    }


def unpermute_rows(a: Any, heads: int) -> Any:
    """Undo llama.cpp's q/k row permutation (per head, rows [0, 2, 4, … 1, 3, 5, …] order
    back to halves); packed weights, scales and biases are permuted alike, by row."""
    rows = a.shape[0]
    return a.reshape(heads, rows // heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _check_types(table: list[TensorInfo]) -> None:
    readable = FLOAT_TYPES | AFFINE_TYPES | DEQUANTIZED_TYPES
    refused = [t for t in table if t.type not in readable]
    if refused:
        kinds = sorted({t.type_name for t in refused})
        raise GgufError(
            f"tensor type(s) {', '.join(kinds)} cannot be imported (e.g. {refused[0].name}); "
            "supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0 (kept packed), Q4_K, Q6_K (expanded)"
        )


def _packed_bits(weight: Any, scales: Any) -> int:
    in_features = scales.shape[-1] * GROUP_SIZE
    return int(weight.shape[-1] * 32 // in_features)


def convert_tensors(
    arrays: dict[str, Any],
    config: dict[str, Any],
    permuted: bool,
    dtype: str | None,
    dequantize: bool,
    say: Say,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """mlx-lm named tensors, and the `quantization` block (None when nothing stays packed)."""
    import mlx.core as mx

    target = getattr(mx, dtype) if dtype else None
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    out: dict[str, Any] = {}
    bits: dict[str, int] = {}
    names = sorted(n for n in arrays if not n.endswith((".scales", ".biases")))
    for done, name in enumerate(names, start=1):
        module = name.rpartition(".")[0]
        a = arrays[name]
        packed = f"{module}.scales" in arrays
        parts = {"weight": a}
        if packed:
            s, b = arrays[f"{module}.scales"], arrays[f"{module}.biases"]
            if dequantize:
                parts = {"weight": mx.dequantize(a, s, b, GROUP_SIZE, _packed_bits(a, s))}
            else:
                parts = {"weight": a, "scales": s, "biases": b}
                bits[mlx_name(name).rpartition(".")[0]] = _packed_bits(a, s)
        kind = module.rpartition(".")[2]
        for leaf, value in parts.items():
            if permuted and kind in heads:
                value = unpermute_rows(value, heads[kind])
            if target is not None and value.dtype != mx.uint32:
                value = value.astype(target)
            out[mlx_name(f"{module}.{leaf}" if leaf != "weight" else name)] = value
        if done % 25 == 0 or done == len(names):
            say(f"  converting tensors {done}/{len(names)}")
    return out, _quantization_block(bits)


def _quantization_block(bits: dict[str, int]) -> dict[str, Any] | None:
    if not bits:
        return None
    counts = Counter(bits.values())
    main = max(counts, key=lambda b: (counts[b], b))
    block: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": main}
    for module, b in sorted(bits.items()):
        if b != main:
            block[module] = {"group_size": GROUP_SIZE, "bits": b}
    return block


def import_gguf(
    path: Path, out: Path, dtype: str | None = None, dequantize: bool = False, say: Say = print
) -> ImportReport:
    import mlx.core as mx

    from executor.gguf_tokenizer import write_tokenizer_files

    table = read_tensor_table(path)
    _check_types(table)
    say(f"reading {path.name}: {len(table)} tensors")
    try:
        loaded = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError) as e:
        raise GgufError(f"{path}: MLX cannot read it ({e})") from None
    assert isinstance(loaded, tuple)
    arrays: dict[str, Any] = loaded[0]
    meta: dict[str, Any] = loaded[1]
    config = model_config(meta, {t.name for t in table})
    arch = str(meta["general.architecture"])
    tensors, quant = convert_tensors(arrays, config, arch in ROPE_PERMUTED, dtype, dequantize, say)
    out.mkdir(parents=True, exist_ok=True)
    eos = write_tokenizer_files(meta, out)
    say(f"  writing {out / 'model.safetensors'}")
    mx.save_safetensors(str(out / "model.safetensors"), tensors, metadata={"format": "mlx"})
    floats = {str(v.dtype).rpartition(".")[2] for v in tensors.values() if v.dtype != mx.uint32}
    config.update(
        torch_dtype=dtype or ("float16" if "float16" in floats else "float32"),
        eos_token_id=eos if len(eos) > 1 else eos[0],
        bos_token_id=_meta_value(meta, "tokenizer.ggml.bos_token_id"),
    )
    if quant:
        config["quantization"] = quant
    (out / "config.json").write_text(json.dumps(config, indent=2))
    report = ImportReport(out, config["model_type"], len(tensors), quantization=quant)
    report.eos_token_ids = eos
    for t in table:
        expanded = t.type in DEQUANTIZED_TYPES or (dequantize and t.type in AFFINE_TYPES)
        (report.dequantized if expanded else report.kept)[t.type_name] += 1
    return report


# ---- CLI ---------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a GGUF file (llama, qwen2 or qwen3 architecture)")
    p.add_argument("out", type=Path, help="directory to write the mlx-lm model to")
    p.add_argument(
        "--dtype", choices=DTYPES, help="cast float tensors and quantization scales to this"
    )
    p.add_argument(
        "--dequantize", action="store_true", help="expand packed blocks to floats (--dtype)"
    )


def run(args: argparse.Namespace) -> int:
    from executor.cli import EXIT_OK, bad_input

    if not args.file.is_file():
        return bad_input(f"{args.file}: no such file")
    try:
        report = import_gguf(args.file, args.out, args.dtype, args.dequantize, say=_say)
    except GgufError as e:
        return bad_input(str(e))
    for line in report.lines():
        print(line)
    return EXIT_OK


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
