"""What `asymtp plan` prints: a single-stage plan as it always read, a pipeline's stages (each
rank's stage and layers, one line per stage), and a deployment's agents with their stages."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from planner_cases import LLAMA_70B, config, mesh, node
from service_server import ROOT
from staged_plans import THREE, single_stage_plan, two_stage_plan

from protocol.deployment import AgentRecord, Deployment, DeploymentSpec
from protocol.plan import Plan, plan_json

TIMEOUT_S = 60


def show(path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "asymtp.cli", "plan", "--show", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S)


def saved(tmp_path: Path, plan: Plan) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(plan_json(plan))
    return path


def test_single_stage_table_has_no_stage_noise(tmp_path: Path) -> None:
    r = show(saved(tmp_path, single_stage_plan()))
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[1].split()
    assert header[:3] == ["rank", "node", "share"], header
    assert "stage" not in r.stdout and "layers" not in r.stdout
    assert "slowest rank" in r.stdout and "\nring: studio -> " in r.stdout


def test_two_stage_table_shows_each_ranks_stage_and_a_line_per_stage(tmp_path: Path) -> None:
    plan = two_stage_plan()
    r = show(saved(tmp_path, plan))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "in 2 pipeline stages" in lines[0]
    assert lines[1].split()[:4] == ["rank", "node", "stage", "layers"]
    rows = {line.split()[1]: line.split()[2:4] for line in lines[2:5]}
    assert rows == {"studio": ["0", "0-56"], "max": ["0", "0-56"], "mini": ["1", "56-80"]}
    studio, maxi = plan.ranks[0].share, plan.ranks[1].share
    split = f"{100 * studio / (studio + maxi):.0f}/{100 * maxi / (studio + maxi):.0f}%"
    assert lines[5] == (
        f"stage 0: layers 0-56 (56), ranks 0,1 split {split}; "
        "compute 61.25 ms + all-reduce 4.50 ms + transfer 0.25 ms"
    )
    assert lines[6] == (
        "stage 1: layers 56-80 (24), rank 2 alone; "
        "compute 40.00 ms + all-reduce 0.00 ms + transfer 0.25 ms"
    )
    assert lines[7].startswith("decode ≈ 106.25 ms/token (9.4 tok/s): stages' compute 101.25 ms")
    assert "transfer 0.50 ms" in lines[7]


def test_deployment_table_shows_each_agents_stage_and_layers(tmp_path: Path) -> None:
    plan = two_stage_plan()
    nodes = [*THREE, node("spare", 8, 100)]
    spec = DeploymentSpec.model_validate(
        {
            "topology": {"nodes": nodes, "links": mesh(nodes)},
            "model": config(LLAMA_70B),
            "model_path": "mlx-community/Meta-Llama-3.1-70B-Instruct-bf16",
        }
    )
    now = time.time()
    agents = {
        "studio": AgentRecord(node_id="studio", state="ready", rank=0, seen_at=now),
        "mini": AgentRecord(node_id="mini", state="failed", reason="peer lost", seen_at=now),
    }
    d = Deployment(
        name="two-stage",
        revision=3,
        created_at=now,
        updated_at=now,
        spec=spec,
        plan=plan,
        agents=agents,
    )
    path = tmp_path / "deployment.json"
    path.write_text(d.model_dump_json())
    r = show(path)
    assert r.returncode == 0, r.stderr
    table = r.stdout.splitlines()
    start = table.index("deployment two-stage, revision 3")
    assert [re.split(r"\s{2,}", line) for line in table[start + 1 :]] == [
        ["node", "rank", "stage", "layers", "agent"],
        ["studio", "0", "0", "0-56", "ready"],
        ["max", "1", "0", "0-56", "no report yet"],
        ["mini", "2", "1", "56-80", "failed: peer lost"],
        ["spare", "-", "-", "not used", "no report yet"],
    ]


def test_show_refuses_what_is_not_a_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{"feasible": true}')
    r = show(path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asymtp plan: "), r.stderr
    assert "not a plan" in lines[0] and "plan_id" in lines[0]
