"""Memory bandwidth the way decode uses it: a read-bound MLX reduction over a buffer larger
than the caches (on the GPU on macOS, the CPU elsewhere), best of a few repetitions.

Run as `python -m executor.measure_memory` by the agent, which never imports mlx itself; it
prints one JSON line `{"gbps": ..., "method": ...}`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass

DEFAULT_MB = 256
"""Larger than any Apple Silicon or server last-level cache, small enough to be quick."""
DEFAULT_REPS = 5


@dataclass(frozen=True)
class MemoryFigure:
    gbps: float
    method: str


def measure(mb: int = DEFAULT_MB, reps: int = DEFAULT_REPS) -> MemoryFigure:
    import mlx.core as mx

    device = mx.default_device()
    n = mb * (1 << 20) // 4
    buf = mx.ones((n,), dtype=mx.float32)
    mx.eval(buf)
    mx.eval(mx.sum(buf))  # warm up: compile, fault the pages in
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        mx.eval(mx.sum(buf))
        best = min(best, time.perf_counter() - t0)
    return MemoryFigure(
        gbps=round(n * 4 / best / 1e9, 2),
        method=f"mlx sum over {mb} MB on {device.type.name.lower()}, best of {reps}",
    )


def measure_in_child(python: str, timeout_s: float, mb: int = DEFAULT_MB) -> MemoryFigure:
    """The figure from a child process (the agent stays free of mlx); raises RuntimeError."""
    cmd = [python, "-m", "executor.measure_memory", "--mb", str(mb)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        return MemoryFigure(gbps=float(data["gbps"]), method=str(data["method"]))
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"memory bandwidth: not measured within {timeout_s:g}s") from e
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"memory bandwidth: the measurement failed: {tail[0]}") from e
    except (ValueError, KeyError, IndexError) as e:
        raise RuntimeError(f"memory bandwidth: unreadable measurement output ({e})") from e


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m executor.measure_memory", description=__doc__)
    p.add_argument("--mb", type=int, default=DEFAULT_MB, help="buffer size in MiB")
    p.add_argument("--reps", type=int, default=DEFAULT_REPS)
    args = p.parse_args(argv)
    fig = measure(args.mb, args.reps)
    print(json.dumps({"gbps": fig.gbps, "method": fig.method}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
