"""Issue 15's bad files, replayed through `asymtp plan FILE`: exit 2 with one line (no
traceback, no hang), and whole-number floats accepted as the integers they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from planner_cases import LLAMA_70B, QWEN3_235B, config, two_nodes
from service_server import ROOT

TIMEOUT_S = 60  # a hang fails the test instead of stalling the suite


def request(model: dict[str, Any], memory_gb: Any = 385) -> dict[str, Any]:
    return two_nodes(model, memory_gb, time_limit_s=2)


def json_file(body: Any) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        path = tmp / "request.json"
        path.write_text(body if isinstance(body, str) else json.dumps(body))
        return path

    return write


def yaml_file(text: str) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        path = tmp / "request.yaml"
        path.write_text(text)
        return path

    return write


def fifo(tmp: Path) -> Path:
    path = tmp / "request.json"
    os.mkfifo(path)
    return path


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi")
)
DEEP = "[" * 5000 + "]" * 5000

BAD_FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("401-digit memory_gb", json_file(request(config(LLAMA_70B), memory_gb=10**400)), "memory_gb"),
    (
        "401-digit heads",
        json_file(request({**config(LLAMA_70B), "num_attention_heads": 10**400})),
        "heads",
    ),
    (
        "a billion experts",
        json_file(request({**config(QWEN3_235B), "num_experts": 10**9})),
        "num_experts",
    ),
    (
        "an unknown parallelism",
        json_file({**request(config(LLAMA_70B)), "constraints": {"parallelism": "diagonal"}}),
        "parallelism",
    ),
    ("JSON nested 5000 deep", json_file(DEEP), "nested"),
    (
        "model nested 5000 deep",
        json_file(json.dumps(request(config(LLAMA_70B)))[:-1] + f', "x": {DEEP}}}'),
        "",
    ),
    ("YAML nested 5000 deep", yaml_file(DEEP), "nested"),
    ("YAML alias bomb", yaml_file(ALIAS_BOMB), "alias"),
    ("/dev/zero", lambda _: Path("/dev/zero"), "not a regular file"),
    ("a FIFO", fifo, "not a regular file"),
    ("a directory", lambda tmp: tmp, "not a regular file"),
    ("over 1 MiB", json_file(" " * (2 << 20)), "larger than"),
]


def plan(path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "asymtp.cli", "plan", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S)


@pytest.mark.parametrize(("case", "make", "names"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_exit_2_with_one_line(
    tmp_path: Path, case: str, make: Callable[[Path], Path], names: str
) -> None:
    r = plan(make(tmp_path))
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asymtp plan: "), r.stderr[-2000:]
    assert names in lines[0], lines[0]


@pytest.mark.parametrize(
    "quantization", [{"bits": 4.0, "group_size": 64}, {"bits": 4, "group_size": 64.0}]
)
def test_whole_number_floats_are_the_integers_they_are(
    tmp_path: Path, quantization: dict[str, Any]
) -> None:
    path = json_file(request({**config(QWEN3_235B), "quantization": quantization}))(tmp_path)
    r = plan(path)
    assert r.returncode == 0, r.stderr
