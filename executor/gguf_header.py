"""The tensor table of a GGUF file: each tensor's name, shape and ggml type.

`mx.load` reads a GGUF's tensors and metadata but not which ggml type each tensor had, and it
silently turns the types it cannot keep packed into float16. The importer needs the types to
say what it kept, what it dequantized and what it refuses, so this reads the header itself
(the key/value section is skipped, the tensor table parsed).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)


class GgmlType(enum.IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30


FLOAT_TYPES = frozenset({GgmlType.F32, GgmlType.F16, GgmlType.BF16})
AFFINE_TYPES = frozenset({GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q8_0})
"""Block types MLX reads packed, as affine quantization with group size 32: exactly."""
DEQUANTIZED_TYPES = frozenset({GgmlType.Q4_K, GgmlType.Q6_K})
"""Block types MLX can read only by expanding them to float16 (no packed equivalent)."""

# Fixed-size values of the key/value section: type id -> byte size.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class GgufError(ValueError):
    """Not a GGUF file this importer can read; the message says why."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    """In ggml's order: the fastest-varying dimension first."""
    type: GgmlType | int
    """An int for a type id this reader does not know."""

    @property
    def type_name(self) -> str:
        return self.type.name if isinstance(self.type, GgmlType) else f"ggml type {self.type}"


def _u32(f: BinaryIO) -> int:
    return int(struct.unpack("<I", _exactly(f, 4))[0])


def _u64(f: BinaryIO) -> int:
    return int(struct.unpack("<Q", _exactly(f, 8))[0])


def _exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GgufError("the file ends inside its header")
    return data


def _string(f: BinaryIO) -> str:
    return _exactly(f, _u64(f)).decode("utf-8", errors="replace")


def _skip_value(f: BinaryIO, kind: int) -> None:
    if kind in _SCALAR_SIZES:
        f.seek(_SCALAR_SIZES[kind], 1)
    elif kind == _STRING:
        f.seek(_u64(f), 1)
    elif kind == _ARRAY:
        inner, count = _u32(f), _u64(f)
        if inner in _SCALAR_SIZES:
            f.seek(_SCALAR_SIZES[inner] * count, 1)
        else:
            for _ in range(count):
                _skip_value(f, inner)
    else:
        raise GgufError(f"unknown metadata value type {kind}")


def read_tensor_table(path: Path) -> list[TensorInfo]:
    try:
        with path.open("rb") as f:
            if f.read(4) != MAGIC:
                raise GgufError(f"{path}: not a GGUF file (no GGUF magic)")
            version = _u32(f)
            if version not in SUPPORTED_VERSIONS:
                raise GgufError(f"{path}: GGUF version {version} (supported: 2, 3)")
            n_tensors, n_kv = _u64(f), _u64(f)
            for _ in range(n_kv):
                _string(f)
                _skip_value(f, _u32(f))
            out = []
            for _ in range(n_tensors):
                name = _string(f)
                dims = tuple(_u64(f) for _ in range(_u32(f)))
                raw = _u32(f)
                _u64(f)  # data offset: mx.load reads the data
                kind: GgmlType | int = GgmlType(raw) if raw in GgmlType._value2member_map_ else raw
                out.append(TensorInfo(name, dims, kind))
            return out
    except OSError as e:
        raise GgufError(f"{path}: {e}") from None
