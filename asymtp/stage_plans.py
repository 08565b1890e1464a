"""Plans for a chosen pipeline layout: layer counts per stage and each stage's shares, from the
planner (`plan_for_layout`).

`--stages "5:0.6,0.4/3:1"` reads as: stage 0 runs 5 layers on two ranks sharing its units
60/40, stage 1 runs the next 3 layers on one rank. The parity check and the benchmarks ask
for layouts, not clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.layouts import StageLayout, plan_for_layout
from planner.splits import split_request
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
    """The planner's plan for these stages (`planner.layouts.plan_for_layout`): one node per
    rank with ample memory and a memory bandwidth in proportion to its share within its stage
    (`planner.splits.split_request`), each stage split optimally over its nodes."""
    num_layers = int(config.get("num_hidden_layers") or config["text_config"]["num_hidden_layers"])
    if sum(s.layers for s in stages) != num_layers:
        raise LayoutError(
            f"--stages: the stages hold {sum(s.layers for s in stages)} layers, the model has "
            f"{num_layers}"
        )
    fractions: list[float] = []
    layout: list[StageLayout] = []
    for stage in stages:
        ids = tuple(f"node-{len(fractions) + i}" for i in range(len(stage.shares)))
        fractions += [share / sum(stage.shares) for share in stage.shares]
        layout.append(StageLayout(nodes=ids, layers=stage.layers))
    request = split_request(config, fractions)
    plan = plan_for_layout(request, layout)
    if not plan.feasible:
        raise LayoutError("; ".join(plan.reasons))
    return plan
