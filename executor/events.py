"""What a rank process tells its agent, one JSON line on stdout per event, as a tagged union.

    {"event": "progress", "done": 3, "total": 8}   layers loaded so far
    {"event": "loaded"}                              the slice is in memory
    {"event": "joining", "attempt": 2}               forming the group
    {"event": "ready", "url": "http://…"}            serving (rank 0) or following
    {"event": "failed", "reason": "peer 1 lost: …"}  the process ends after this

`Refused` is not a line: it is the agent's own update when an assignment fails its checks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Progress:
    kind: ClassVar[str] = "progress"
    done: int
    total: int


@dataclass(frozen=True)
class Loaded:
    kind: ClassVar[str] = "loaded"


@dataclass(frozen=True)
class Joining:
    kind: ClassVar[str] = "joining"
    attempt: int = 1


@dataclass(frozen=True)
class Ready:
    kind: ClassVar[str] = "ready"
    url: str | None = None


@dataclass(frozen=True)
class Failed:
    kind: ClassVar[str] = "failed"
    reason: str


RankEvent = Progress | Loaded | Joining | Ready | Failed
KINDS: dict[str, type[RankEvent]] = {c.kind: c for c in (Progress, Loaded, Joining, Ready, Failed)}


@dataclass(frozen=True)
class Refused:
    """An assignment the agent would not run (bad signature, not this node's); the current
    rank, if any, keeps running."""

    reason: str


def emit(event: RankEvent) -> None:
    print(json.dumps({"event": event.kind, **asdict(event)}), flush=True)


def parse(line: str) -> RankEvent | None:
    """The event on one line of a rank's stdout; None for anything else it printed."""
    try:
        obj = json.loads(line)
        kind = KINDS[obj.pop("event")]
        return kind(**obj)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
