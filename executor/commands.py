"""The lockstep protocol's vocabulary: the commands rank 0 sends and the header that carries
them (a fixed number of int32s, so every rank knows how much to receive)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum


class Command(IntEnum):
    GENERATE = 1
    LOGITS = 2
    SHUTDOWN = 3
    GREEDY_BATCH = 4
    PING = 5
    STEP = 6


@dataclass(frozen=True)
class Header:
    command: Command
    payload: int = 0
    """Ints broadcast right after the header."""
    batch: int = 0
    """GREEDY_BATCH: prompts decoded together (the payload is their tokens, in order)."""
    steps: int = 0
    """GENERATE, GREEDY_BATCH: tokens to decode."""
    drops: int = 0
    """STEP: sequences leaving; the payload starts with their ids."""
    evicts: int = 0
    """STEP: prefix-cache entries dropped; their ids follow."""
    admit: int = -1
    """STEP: the id of the sequence joining; its uncached prompt ends the payload."""
    hit: int = -1
    """STEP: the prefix-cache entry the joining sequence starts from (-1: none)."""
    hit_tokens: int = 0
    hit_move: int = 0
    """1: the entry moves into the sequence; 0: the sequence starts from a copy."""
    join: int = 0
    """STEP: 1 when the payload's prompt chunk is the joining sequence's last: it joins the
    batch this step; 0 while more chunks follow in later steps."""

    def ints(self) -> list[int]:
        return [int(getattr(self, f.name)) for f in dataclasses.fields(self)]

    @classmethod
    def parse(cls, values: Sequence[int]) -> Header:
        return cls(Command(values[0]), *values[1:])


HEADER = len(dataclasses.fields(Header))
