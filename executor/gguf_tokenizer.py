"""A GGUF's tokenizer (`tokenizer.ggml.*`) as Hugging Face files: `tokenizer.json` (a
`tokenizers` byte-level BPE), `tokenizer_config.json` (chat template, special tokens) and
`generation_config.json` (end-of-sequence ids, which mlx-lm reads from there)."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

from executor.gguf_header import GgufError

# llama.cpp's `tokenizer.ggml.token_type` values that matter here.
CONTROL, USER_DEFINED = 3, 4

# Pre-tokenizer splits of the `tokenizer.ggml.pre` names this importer knows, as the models'
# own tokenizer.json files define them (a regex split before byte-level BPE, or digits).
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class PreTokenizer(enum.Enum):
    GPT2 = "gpt-2"
    DEFAULT = "default"
    SMOLLM = "smollm"
    QWEN2 = "qwen2"
    LLAMA3 = "llama-bpe"


def _pre_tokenizer(kind: PreTokenizer) -> Any:
    from tokenizers import Regex, pre_tokenizers

    if kind in (PreTokenizer.GPT2, PreTokenizer.DEFAULT):
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    if kind is PreTokenizer.SMOLLM:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
    pattern = _QWEN2_SPLIT if kind is PreTokenizer.QWEN2 else _LLAMA3_SPLIT
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _int(meta: dict[str, Any], key: str) -> int | None:
    v = meta.get(key)
    return None if v is None else int(v.item() if hasattr(v, "item") else v)


def _flag(meta: dict[str, Any], key: str) -> bool:
    v = meta.get(key)
    return bool(v.item() if hasattr(v, "item") else v) if v is not None else False


def eos_ids(meta: dict[str, Any]) -> list[int]:
    """End-of-sequence and end-of-turn ids, as a chat model needs them to stop."""
    ids = [_int(meta, "tokenizer.ggml.eos_token_id"), _int(meta, "tokenizer.ggml.eot_token_id")]
    return sorted({i for i in ids if i is not None})


def write_tokenizer_files(meta: dict[str, Any], out: Path) -> list[int]:
    """Write the three files; returns the end-of-sequence ids written."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise GgufError(f"tokenizer model {model!r} is not supported (only byte-level BPE, 'gpt2')")
    pre_name = str(meta.get("tokenizer.ggml.pre", "default"))
    try:
        pre = PreTokenizer(pre_name)
    except ValueError:
        known = ", ".join(p.value for p in PreTokenizer)
        raise GgufError(f"pre-tokenizer {pre_name!r} is not supported (known: {known})") from None
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types = meta.get("tokenizer.ggml.token_type")
    kinds = [int(t) for t in types.tolist()] if types is not None else [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens(
        [
            AddedToken(t, special=k == CONTROL, normalized=False)
            for t, k in zip(tokens, kinds)
            if k in (CONTROL, USER_DEFINED)
        ]
    )
    bos = _int(meta, "tokenizer.ggml.bos_token_id")
    add_bos = _flag(meta, "tokenizer.ggml.add_bos_token") and bos is not None
    if add_bos:
        assert bos is not None
        name = tokens[bos]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{name} $A", pair=f"{name} $A {name} $B", special_tokens=[(name, bos)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(out / "tokenizer.json"))

    eos = eos_ids(meta)
    if not eos:
        raise GgufError("the GGUF names no end-of-sequence token (tokenizer.ggml.eos_token_id)")
    named = {
        f"{role}_token": tokens[i] if i is not None else None
        for role in ("bos", "unk", "pad")
        for i in [_int(meta, f"tokenizer.ggml.{role}_token_id")]
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **named,
        "eos_token": tokens[_int(meta, "tokenizer.ggml.eos_token_id") or eos[0]],
        "add_bos_token": add_bos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": _int(meta, f"{meta['general.architecture']}.context_length") or 4096,
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = str(meta["tokenizer.chat_template"])
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    generation = {"bos_token_id": bos, "eos_token_id": eos if len(eos) > 1 else eos[0]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return eos
