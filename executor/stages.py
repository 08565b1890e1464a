"""A plan's pipeline stages as the executor sees them, and what one rank does in them.

Ranks with the same `layers` form a stage; ranks are numbered stage by stage, so each stage is
a run of consecutive ranks and the pipeline's cycle 0 → 1 → … → n-1 → 0 is the ring itself.
Every transfer is then between ring neighbours, which is all the ring backend's `send`/`recv`
allow ("[ring] Send only supported to direct neighbors"):

- a stage's input enters at its first rank (from the previous stage's last rank) and is passed
  on rank by rank through the stage;
- a stage's tensor-parallel all-sum runs along the same run of ranks (`executor.stage_links`);
- the last stage's last rank (n-1) sends the final normed hidden state to its right neighbour,
  rank 0, which holds the output head and decides every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.deployment import Peer
from protocol.plan import Plan
from protocol.schema import Range


class StageError(ValueError):
    """Ranks whose `layers` do not form a pipeline the executor can run."""


@dataclass(frozen=True)
class Stage:
    index: int
    first: int
    """The stage's first rank (its leader: the all-sum's total gathers there)."""
    end: int
    """One past the stage's last rank."""
    layers: Range

    @property
    def size(self) -> int:
        return self.end - self.first

    @property
    def last(self) -> int:
        return self.end - 1


@dataclass(frozen=True)
class StageLayout:
    stages: tuple[Stage, ...]

    @classmethod
    def of(cls, layers_by_rank: Sequence[Range]) -> StageLayout:
        """Stages from every rank's layers, in rank order; checks the contract of
        `protocol.plan.Plan` (consecutive ranks per stage, stages tiling the layers in order)."""
        stages: list[Stage] = []
        for rank, layers in enumerate(layers_by_rank):
            layers = (layers[0], layers[1])
            if stages and stages[-1].layers == layers:
                last = stages[-1]
                stages[-1] = Stage(last.index, last.first, rank + 1, layers)
                continue
            start = stages[-1].layers[1] if stages else 0
            if layers[0] != start or layers[1] <= layers[0]:
                raise StageError(
                    f"rank {rank}: layers [{layers[0]}, {layers[1]}) do not follow the previous "
                    f"stage's, which end at layer {start} (stages must tile the layers in rank "
                    "order)"
                )
            stages.append(Stage(len(stages), rank, rank + 1, layers))
        if not stages:
            raise StageError("a plan without ranks has no stages")
        return cls(tuple(stages))

    @classmethod
    def of_plan(cls, plan: Plan) -> StageLayout:
        return cls.of([r.layers for r in sorted(plan.ranks, key=lambda r: r.rank)])

    @classmethod
    def of_peers(cls, peers: Sequence[Peer]) -> StageLayout | None:
        """From an assignment's peers; None when the service did not say (one stage)."""
        ordered = sorted(peers, key=lambda p: p.rank)
        layers = [p.layers for p in ordered]
        if any(x is None for x in layers):
            return None
        return cls.of([x for x in layers if x is not None])

    @property
    def world(self) -> int:
        return self.stages[-1].end

    @property
    def num_layers(self) -> int:
        return self.stages[-1].layers[1]

    @property
    def pipelined(self) -> bool:
        return len(self.stages) > 1

    def stage_of(self, rank: int) -> Stage:
        return next(s for s in self.stages if s.first <= rank < s.end)

    def role(self, rank: int) -> RankRole:
        return RankRole(self, rank)


@dataclass(frozen=True)
class RankRole:
    """One rank's part in the pipeline: whom it receives from and sends to, and when."""

    layout: StageLayout
    rank: int

    @property
    def stage(self) -> Stage:
        return self.layout.stage_of(self.rank)

    @property
    def left(self) -> int:
        return (self.rank - 1) % self.layout.world

    @property
    def right(self) -> int:
        return (self.rank + 1) % self.layout.world

    @property
    def embeds(self) -> bool:
        """Stage 0 embeds the tokens itself; later stages receive their input."""
        return self.stage.index == 0

    @property
    def passes_input_on(self) -> bool:
        """A later stage's input goes on from rank to rank through the stage."""
        return not self.embeds and self.rank != self.stage.last

    @property
    def sends_output(self) -> bool:
        """The last rank of a stage but the last hands the stage's output to the next stage."""
        return self.rank == self.stage.last and self.stage.index < len(self.layout.stages) - 1

    @property
    def sends_final(self) -> bool:
        """Rank n-1 applies the final norm and sends the result round to rank 0."""
        return self.rank == self.layout.world - 1

    @property
    def holds_head(self) -> bool:
        return self.rank == 0

    @property
    def stage_rank(self) -> int:
        """This rank's place in its stage (0: the leader, which keeps row-parallel biases)."""
        return self.rank - self.stage.first
