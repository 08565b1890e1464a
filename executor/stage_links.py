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

from typing import Any, cast

import mlx.core as mx

from executor.stages import RankRole, StageLayout

SPLIT = "split"
CHAIN = "chain"
WIRE_DTYPES = (mx.float32, mx.float16, mx.bfloat16)


class StageLinks:
    """Created at load time (the layer patches hold it); `bind` joins it to the group."""

    def __init__(self, role: RankRole) -> None:
        self.role = role
        self.group: Any = None
        self.stage_group: Any = None
        self.method = CHAIN
        self.in_dtype: mx.Dtype = mx.float32
        """The dtype of the hidden state entering this rank's stage (stages after the first)."""
        self.final_dtype: mx.Dtype = mx.float32
        """Rank 0: the dtype of the final normed hidden state it receives."""
        self.tracing = False
        self.traced: dict[str, mx.Dtype] = {}

    def bind(self, group: Any, model: Any) -> str:
        """Use `group` (all ranks) and agree on the hidden state's dtypes; returns where this
        rank is and how its stage all-sum runs, to be logged. Every rank calls it at the same point: where the
        backend splits, the split is collective, and the dtypes pass round the ring."""
        self.group = group
        try:
            sub = group.split(self.role.stage.index, self.role.rank)
        except RuntimeError as e:
            self.method, how = CHAIN, f"stage all-sum along the stage's ranks by send/recv ({e})"
        else:
            self.stage_group, self.method = sub, SPLIT
            how = f"stage all-sum over a split group of {sub.size()} ranks"
        self._agree_dtypes(model)
        stage = self.role.stage
        where = f"rank {self.role.rank}, stage {stage.index} (layers {stage.layers})"
        return f"{where}: {how}"

    # ---- dtypes -------------------------------------------------------------------------
    def _agree_dtypes(self, model: Any) -> None:
        """What dtype each hand-off carries, which depends on the layers before it (e.g. a
        float16 embedding meets float32 norms and the residual stream becomes float32): each
        rank traces its own layers (building the graph only) from the dtype the previous rank
        announces, and announces what it will send on; rank 0 hears last what comes back."""
        role = self.role
        if role.rank != 0:
            received = self._exchange(None, role.left)
            if not role.embeds:
                self.in_dtype = received
        self.tracing = True
        try:
            model(mx.zeros((1, 1), dtype=mx.int32))
        finally:
            self.tracing = False
        sends = self.traced["final"] if role.sends_final else self.traced["output"]
        self._exchange(self.in_dtype if role.passes_input_on else sends, role.right)
        if role.holds_head:
            self.final_dtype = self._exchange(None, role.left)

    def _exchange(self, dtype: mx.Dtype | None, peer: int) -> mx.Dtype:
        """Send `dtype` to `peer`, or (None) receive one from it; evaluated now."""
        if dtype is not None:
            mx.eval(self._send(mx.array([WIRE_DTYPES.index(dtype)]), peer))
            return dtype
        code = mx.distributed.recv((1,), mx.int32, peer, group=self.group)
        return WIRE_DTYPES[cast(int, code.item())]

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
        if stage.size == 1 or self.tracing:
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
        if self.tracing:
            return like
        h = self._recv(like, self.role.left, like)
        return self._then_send(h, self.role.right) if self.role.passes_input_on else h

    def stage_output(self, h: mx.array, norm: Any) -> mx.array:
        """After this rank's last layer: hand the stage's output on; rank n-1 normalises and
        sends it round to rank 0, which returns it normed for the head. Other ranks return a
        hidden state that only carries the dependencies."""
        role = self.role
        if self.tracing:
            self.traced = {"output": h.dtype, "final": norm(h).dtype}
            return h
        if role.sends_output:
            h = self._then_send(h, role.right)
        if role.sends_final:
            h = self._then_send(norm(h), role.right)
        if role.holds_head:
            final = mx.zeros(h.shape, dtype=self.final_dtype)
            return self._recv(final, role.left, h)
        return h


def links_for(layout: StageLayout | None, rank: int) -> StageLinks | None:
    """This rank's pipeline links, or None for a single stage (tensor parallelism only)."""
    return StageLinks(layout.role(rank)) if layout is not None and layout.pipelined else None
