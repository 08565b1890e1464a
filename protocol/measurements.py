"""What agents measure and detect about their machine and links (part of `NodeFacts`).

Units follow `protocol.schema`: memory bandwidth in gigabytes per second, network bandwidth in
gigabits per second, times in microseconds. Every field is optional in `NodeFacts`, so reports
from agents that do not measure stay valid.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

InterfaceKind = Literal["thunderbolt", "ethernet", "wifi", "loopback", "other"]


class FigureSource(StrEnum):
    """Where a node's or a link's figures come from; a plan lists them (`Plan.sources`)."""

    MEASURED = "measured"
    ASSUMED = "assumed"
    """A default: the chip table for a node, the kind's figures for a link."""
    USER = "user"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkMeasurement(_Frozen):
    """One peer address measured from this node: ping-pong round trips and a bulk transfer."""

    peer: Annotated[str, Field(max_length=64)]
    address: Annotated[str, Field(max_length=64)]
    interface: Annotated[str, Field(max_length=64)] = ""
    """This node's interface whose subnet holds `address`."""
    kind: InterfaceKind = "other"
    rtt_median_us: Annotated[float, Field(ge=0, le=1e8)]
    rtt_p99_us: Annotated[float, Field(ge=0, le=1e8)]
    bandwidth_gbps: Annotated[float, Field(gt=0, le=100_000)]
    """Network Gb/s of the bulk transfer (to the peer)."""
    bytes_sent: Annotated[int, Field(ge=0)] = 0


class ThunderboltPort(_Frozen):
    """One Thunderbolt receptacle (`system_profiler SPThunderboltDataType`)."""

    receptacle: Annotated[str, Field(max_length=16)]
    domain_uuid: Annotated[str | None, Field(max_length=64)] = None
    speed_gbps: Annotated[float | None, Field(gt=0, le=1000)] = None
    """The receptacle's link speed ("Up to 80 Gb/s": Thunderbolt 5, 40: Thunderbolt 4)."""
    peer_uuid: Annotated[str | None, Field(max_length=64)] = None
    """The domain of the Mac at the other end of the cable; None when nothing is connected."""
    peer_name: Annotated[str | None, Field(max_length=128)] = None
    via: Annotated[str | None, Field(max_length=128)] = None
    """The hub or dock between this port and the peer Mac, if any."""

    @property
    def generation(self) -> int | None:
        if self.speed_gbps is None:
            return None
        return 5 if self.speed_gbps >= 80 else 4 if self.speed_gbps >= 40 else 3


class Measurements(_Frozen):
    measured_at: float
    """Unix time the measurement finished."""
    took_s: Annotated[float, Field(ge=0)]
    memory_bandwidth_gbps: Annotated[float | None, Field(gt=0, le=100_000)] = None
    """GB/s of a read-bound MLX reduction over a buffer larger than the caches."""
    memory_method: Annotated[str, Field(max_length=128)] = ""
    links: Annotated[list[LinkMeasurement], Field(max_length=1024)] = []
    notes: Annotated[list[Annotated[str, Field(max_length=512)]], Field(max_length=64)] = []
    """Peers or figures that could not be measured, and why."""
