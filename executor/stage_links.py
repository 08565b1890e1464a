"""The collectives of one rank in a pipeline: its stage's all-sum and the hand-offs between
stages, over point-to-point `send`/`recv` between ring neighbours (see `executor.stages`).

Ordering. Every collective here is evaluated lazily, and a rank that enters a `recv` before
its own pending `send` deadlocks its peers. MLX runs a graph in reverse breadth-first order
from the outputs, so every ancestor of an array runs before it; a `recv` (which has no inputs)
is therefore tied with `mx.depends(received, before)` to what must run first: its own send, or
the hidden state whose all-sums must finish first.

A stage's all-sum uses `Group.split` where the backend has it (one MLX collective over the
stage's ranks) and otherwise runs along the stage's ranks: partial sums travel from the last
rank to the leader, the total travels back. The ring backend has no split ("[ring] Group split
not supported"); `bind` tries it once and says which one runs.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from executor.stages import RankRole

SPLIT = "split"
CHAIN = "chain"


class StageLinks:
    """Created at load time (the layer patches hold it); `bind` joins it to the group."""

    def __init__(self, role: RankRole) -> None:
        self.role = role
        self.group: Any = None
        self.stage_group: Any = None
        self.method = CHAIN
        self.dtype: mx.Dtype = mx.float32
        """The hidden state's dtype between stages (the embedding's output dtype)."""

    def bind(self, group: Any) -> str:
        """Use `group` (all ranks); returns how the stage all-sum runs, to be logged. Every
        rank calls it at the same point: where the backend splits, the split is collective."""
        self.group = group
        try:
            sub = group.split(self.role.stage.index, self.role.rank)
        except RuntimeError as e:
            self.method = CHAIN
            return f"stage all-sum along the stage's ranks by send/recv ({e})"
        self.stage_group, self.method = sub, SPLIT
        return f"stage all-sum over a split group of {sub.size()} ranks"

    # ---- point to point -----------------------------------------------------------------
    def _send(self, x: mx.array, dst: int) -> mx.array:
        sent: mx.array = mx.distributed.send(x, dst, group=self.group)
        return sent

    def _recv(self, like: mx.array, src: int, after: mx.array) -> mx.array:
        received = mx.distributed.recv_like(like, src, group=self.group)
        out: mx.array = mx.depends(received, after)
        return out

    def _then_send(self, x: mx.array, dst: int) -> mx.array:
        """`x`, once it has also been sent to `dst`."""
        out: mx.array = mx.depends(x, self._send(x, dst))
        return out

    # ---- the stage's all-sum --------------------------------------------------------------
    def all_sum(self, x: mx.array) -> mx.array:
        stage, rank = self.role.stage, self.role.rank
        if stage.size == 1:
            return x
        if self.method == SPLIT:
            total: mx.array = mx.distributed.all_sum(x, group=self.stage_group)
            return total
        acc = x + self._recv(x, rank + 1, x) if rank < stage.last else x
        if rank > stage.first:
            acc = self._recv(x, rank - 1, self._send(acc, rank - 1))
        return self._then_send(acc, rank + 1) if rank < stage.last else acc

    # ---- between stages -------------------------------------------------------------------
    def stage_input(self, like: mx.array) -> mx.array:
        """Stages after the first: the hidden state entering the stage (`like` gives its shape
        and dtype, and what must run before it)."""
        h = self._recv(like, self.role.left, like)
        return self._then_send(h, self.role.right) if self.role.passes_input_on else h

    def stage_output(self, h: mx.array, norm: Any) -> mx.array:
        """After this rank's last layer: hand the stage's output on; rank n-1 normalises and
        sends it round to rank 0, which returns it normed for the head. Other ranks return a
        hidden state that only carries the dependencies."""
        role = self.role
        h = h.astype(self.dtype)
        if role.sends_output:
            h = self._then_send(h, role.right)
        if role.sends_final:
            h = self._then_send(norm(h).astype(self.dtype), role.right)
        if role.holds_head:
            return self._recv(h, role.left, h)
        return h
