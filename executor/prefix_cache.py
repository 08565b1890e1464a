"""Rank 0's index of the prefix cache: which entry a new prompt starts from, and what to evict.

Every rank holds the entries themselves (`Batch.entries`, named by the id of the sequence that
left them); only rank 0 knows their tokens and decides hits and evictions, which it broadcasts,
so all ranks agree. The bound is in tokens, the same on every rank (bytes differ by rank, as
their shares do); `bytes` reports rank 0's.

mlx-lm's `LRUPromptCache` could not serve here: it evicts by each process's own byte count (the
ranks would disagree), hands out copies with no name a follower could be told, and keeps the
caches itself where the ranks must.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Hit:
    entry: int
    tokens: int
    move: bool
    """The hit covers the whole entry: the entry moves into the sequence (no copy)."""


@dataclass
class PrefixStats:
    hits: int = 0
    misses: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the cache over all hits."""
    entries: int = 0
    tokens: int = 0
    bytes: int = 0


def _shared(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixIndex:
    def __init__(self, enabled: bool, trimmable: bool) -> None:
        self.enabled = enabled
        self.trimmable = trimmable
        """The model's caches can be cut back to a shorter prefix (not recurrent layers')."""
        self.entries: OrderedDict[int, tuple[list[int], int]] = OrderedDict()
        """id → (tokens its cache holds, its bytes on rank 0), least recently used first."""
        self.stats = PrefixStats()

    @property
    def tokens(self) -> int:
        return sum(len(t) for t, _ in self.entries.values())

    def add(self, entry: int, tokens: list[int]) -> None:
        self.entries[entry] = (tokens, 0)
        self._count()

    def weigh(self, entry: int, nbytes: int) -> None:
        """Rank 0's bytes of an entry, known once its step has run."""
        if entry in self.entries:
            self.entries[entry] = (self.entries[entry][0], nbytes)
            self._count()

    def lookup(self, prompt: list[int]) -> Hit | None:
        """The entry sharing the longest prefix with `prompt` (leaving at least one prompt
        token to compute), taken out of the index when it moves."""
        if not self.enabled:
            return None
        best: Hit | None = None
        for entry, (tokens, _) in self.entries.items():
            n = min(_shared(tokens, prompt), len(prompt) - 1)
            if n < len(tokens) and not self.trimmable:
                continue  # this cache cannot be cut back to the shared part
            if n > 0 and (best is None or n > best.tokens):
                best = Hit(entry, n, move=n == len(tokens))
        if best is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self.stats.cached_tokens += best.tokens
        if best.move:
            del self.entries[best.entry]
        else:
            self.entries.move_to_end(best.entry)
        self._count()
        return best

    def evict(self, budget_tokens: int) -> list[int]:
        """Least recently used entries to drop so that the rest hold at most `budget_tokens`."""
        out = []
        total = self.tokens
        while self.entries and total > budget_tokens:
            entry, (tokens, _) = self.entries.popitem(last=False)
            total -= len(tokens)
            out.append(entry)
        self._count()
        return out

    def _count(self) -> None:
        self.stats.entries = len(self.entries)
        self.stats.tokens = self.tokens
        self.stats.bytes = sum(b for _, b in self.entries.values())
