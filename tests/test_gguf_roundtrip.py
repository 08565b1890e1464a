"""A model written as llama.cpp writes a GGUF (its tensor names; llama's q/k rows permuted for
the interleaved rotary layout) and imported back computes the same logits as the original:
the names, the config and the un-permutation are right, for llama and qwen3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from executor.gguf_import import _LAYER_MODULES, _TOP_MODULES, import_gguf

GGUF_MODULES = {mlx: gguf for gguf, mlx in _TOP_MODULES.items()}


def _gguf_name(name: str) -> tuple[str, str]:
    """(GGUF tensor name, GGUF module kind) of an mlx-lm parameter name."""
    module, _, leaf = name.rpartition(".")
    if module in GGUF_MODULES:
        return f"{GGUF_MODULES[module]}.{leaf}", GGUF_MODULES[module]
    _, _, index, rest = module.split(".", 3)
    kind = next(k for k, v in _LAYER_MODULES.items() if v == rest)
    return f"blk.{index}.{kind}.{leaf}", kind


def _permute(w: Any, heads: int) -> Any:
    """llama.cpp's converter: each head's rotary halves interleaved, row by row."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _tokenizer_metadata(model_dir: Path) -> dict[str, Any]:
    import mlx.core as mx

    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab: dict[str, int] = tok["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = {t["content"] for t in tok["added_tokens"] if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    eos = json.loads((model_dir / "config.json").read_text())["eos_token_id"]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": mx.array([3 if t in special else 1 for t in tokens], mx.int32),
        "tokenizer.ggml.eos_token_id": mx.array(eos, mx.uint32),
        "tokenizer.chat_template": json.loads((model_dir / "tokenizer_config.json").read_text())[
            "chat_template"
        ],
    }


def write_gguf(model_dir: Path, path: Path) -> None:
    import mlx.core as mx

    cfg = json.loads((model_dir / "config.json").read_text())
    arch = cfg["model_type"]
    weights = mx.load(str(model_dir / "model.safetensors"))
    assert isinstance(weights, dict)
    heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}
    tensors = {}
    for name, w in weights.items():
        gguf, kind = _gguf_name(name)
        tensors[gguf] = _permute(w, heads[kind]) if arch == "llama" and kind in heads else w

    def u32(v: int) -> Any:
        return mx.array(v, mx.uint32)

    meta: dict[str, Any] = {
        "general.architecture": arch,
        f"{arch}.embedding_length": u32(cfg["hidden_size"]),
        f"{arch}.block_count": u32(cfg["num_hidden_layers"]),
        f"{arch}.feed_forward_length": u32(cfg["intermediate_size"]),
        f"{arch}.attention.head_count": u32(cfg["num_attention_heads"]),
        f"{arch}.attention.head_count_kv": u32(cfg["num_key_value_heads"]),
        f"{arch}.attention.key_length": u32(cfg["head_dim"]),
        f"{arch}.attention.layer_norm_rms_epsilon": mx.array(cfg["rms_norm_eps"], mx.float32),
        f"{arch}.rope.freq_base": mx.array(cfg["rope_theta"], mx.float32),
        f"{arch}.context_length": u32(cfg["max_position_embeddings"]),
        **_tokenizer_metadata(model_dir),
    }
    mx.save_gguf(str(path), tensors, meta)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_a_gguf_imports_back_to_the_same_model(tmp_path: Path, family: str) -> None:
    import mlx.core as mx

    from executor.loader import eos_token_ids, load_shard
    from executor.tiny_models import build_model

    original = build_model(tmp_path / "original", family, seed=11)
    write_gguf(original, tmp_path / "model.gguf")
    report = import_gguf(tmp_path / "model.gguf", tmp_path / "imported", say=lambda _m: None)
    assert report.model_type == family and report.quantization is None
    prompt = mx.array([[7, 42, 99, 3, 250, 11]])
    want = load_shard(original)[0](prompt)
    got = load_shard(tmp_path / "imported")[0](prompt)
    assert mx.allclose(got, want, rtol=1e-5, atol=1e-5).item()
    assert eos_token_ids(tmp_path / "imported") == eos_token_ids(original)
