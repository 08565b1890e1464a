"""Plans for a chosen pipeline layout: layer counts per stage and each stage's shares.

`--stages "5:0.6,0.4/3:1"` reads as: stage 0 runs 5 layers on two ranks sharing its units
60/40, stage 1 runs the next 3 layers on one rank. The parity check and the benchmarks ask
for layouts, not clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.splits import plan_for_split
from protocol.plan import Plan


class LayoutError(ValueError):
    """A `--stages` text that does not describe a layout."""


@dataclass(frozen=True)
class StageSpec:
    layers: int
    shares: list[float]


def parse_stages(text: str) -> list[StageSpec]:
    """'5:0.6,0.4/3:1' -> [StageSpec(5, [0.6, 0.4]), StageSpec(3, [1.0])]."""
    out = []
    for part in text.split("/"):
        count, sep, shares = part.partition(":")
        try:
            layers = int(count)
            fractions = [float(x) for x in shares.split(",")] if sep else [1.0]
        except ValueError:
            raise LayoutError(
                f"--stages: {part!r} is not LAYERS:SHARE,SHARE… (e.g. 5:0.6,0.4)"
            ) from None
        if layers <= 0 or not fractions or any(f <= 0 for f in fractions):
            raise LayoutError(f"--stages: {part!r} needs a positive layer count and shares")
        out.append(StageSpec(layers, fractions))
    return out


def plan_for_stages(config: dict[str, Any], stages: list[StageSpec]) -> Plan:
    """A plan with these stages: each stage's split is the planner's for its shares (the same
    split as a one-stage plan of those ranks), its ranks numbered stage by stage."""
    num_layers = int(config.get("num_hidden_layers") or config["text_config"]["num_hidden_layers"])
    if sum(s.layers for s in stages) != num_layers:
        raise LayoutError(
            f"--stages: the stages hold {sum(s.layers for s in stages)} layers, the model has "
            f"{num_layers}"
        )
    ranks, start = [], 0
    for index, stage in enumerate(stages):
        total = sum(stage.shares)
        split = plan_for_split(config, [f / total for f in stage.shares])
        for r in split.ranks:
            ranks.append(
                r.model_copy(
                    update={
                        "rank": len(ranks),
                        "node_id": f"node-{len(ranks)}",
                        "stage": index,
                        "layers": (start, start + stage.layers),
                    }
                )
            )
        start += stage.layers
    base = plan_for_split(config, [1.0])
    plan_id = "stages-" + "-".join(f"{s.layers}x{len(s.shares)}" for s in stages)
    return base.model_copy(
        update={"ranks": ranks, "plan_id": plan_id, "ring": [r.node_id for r in ranks]}
    )
