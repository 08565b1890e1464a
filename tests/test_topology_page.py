"""The topology page (`GET /`) in real headless Chromium, against a real `asymtp serve`.

Debian's `chromium` is driven by Playwright (its Python package only: no downloaded browsers).
`make test` installs chromium first where apt works; without it these tests skip, naming what
is missing. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from planner_cases import LLAMA_70B, QWEN3_235B, config
from service_server import ROOT, Server, running_server

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the Python package playwright is missing: pip install -e .[dev]"
)
expect = sync_api.expect

ARTIFACTS = ROOT / "tests" / "artifacts"
TOKEN = "page-s3cret"
TIMEOUT_MS = 20_000
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine refuses outside connections; Chromium's own background traffic stalls it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

THREE_NODES: dict[str, Any] = {
    "nodes": [
        {"id": "studio-96", "memory_gb": 96, "bandwidth_gbps": 800, "chip": "M3 Ultra"},
        {"id": "mini-64", "memory_gb": 64, "bandwidth_gbps": 273, "chip": "M4 Pro"},
        {"id": "laptop-48", "memory_gb": 48, "bandwidth_gbps": 300, "chip": "M3 Max"},
    ],
    "links": [
        {"a": "studio-96", "b": "mini-64", "kind": "thunderbolt", "bandwidth_gbps": 40},
        {"a": "studio-96", "b": "laptop-48", "kind": "thunderbolt", "bandwidth_gbps": 40},
        {"a": "mini-64", "b": "laptop-48", "kind": "ethernet"},
    ],
}
TOO_SMALL: dict[str, Any] = {
    "nodes": [
        {"id": "mini-a", "memory_gb": 32, "bandwidth_gbps": 273},
        {"id": "mini-b", "memory_gb": 16, "bandwidth_gbps": 120},
    ],
    "links": [{"a": "mini-a", "b": "mini-b", "kind": "ethernet"}],
}
# Two Macs without RDMA over Thunderbolt 4 (TCP): where a pipeline beats tensor parallelism.
TB4_PAIR: dict[str, Any] = {
    "nodes": [
        {"id": "ultra-192", "memory_gb": 192, "bandwidth_gbps": 800, "chip": "M2 Ultra"},
        {"id": "max-128", "memory_gb": 128, "bandwidth_gbps": 546, "chip": "M4 Max"},
    ],
    "links": [{"a": "ultra-192", "b": "max-128", "kind": "thunderbolt", "bandwidth_gbps": 40}],
}
SEED_PRESET = "Qwen3-235B 4-bit on M5 Max 128 GB + 48 GB laptop"


def chromium_path() -> str:
    for candidate in (os.environ.get("ASYMTP_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.skip(
        "Chromium is not installed: the topology page test needs Debian's `chromium` package "
        "(`make test` runs `apt-get install chromium` where apt and root are available; "
        "or set ASYMTP_CHROMIUM to a Chromium binary)"
    )


# -- what the page should show, computed from the plan the service gives ---------------------
def span_count(r: list[int] | None) -> int:
    return 0 if r is None else r[1] - r[0]


def share_text(rank: dict[str, Any], model: dict[str, Any]) -> str:
    """The page's node headline, "57% · 36 q-heads · 74 experts" (app.js `shareText`)."""
    parts = [f"{math.floor(rank['share'] * 100 + 0.5)}%", f"{span_count(rank['q_heads'])} q-heads"]
    if rank.get("experts") is not None and model["experts"] > 0:
        parts.append(f"{span_count(rank['experts'])} experts")
    elif span_count(rank["ffn"]) > 0 or model["ffn_dim"] > 0:
        parts.append(f"{span_count(rank['ffn'])} FFN cols")
    return " · ".join(parts)


def stage_head(stage: dict[str, Any], ranks: list[dict[str, Any]]) -> str:
    """The start of a stage's line on the page (app.js `stageText`), up to its times:
    "stage 0 · layers 0–47 (47) · ranks 0, 1 split 59/41%" or "… · rank 2 alone"."""
    start, end = stage["layers"]
    members = [r for r in ranks if r["rank"] in stage["ranks"]]
    total = sum(r["share"] for r in members)
    names = ", ".join(str(r) for r in stage["ranks"])
    if len(members) > 1 and total > 0:
        split = "/".join(str(math.floor(100 * r["share"] / total + 0.5)) for r in members)
        who = f"ranks {names} split {split}%"
    else:
        who = f"rank {names} alone"
    return f"stage {stage['stage']} · layers {start}–{end} ({end - start}) · {who} · "


def post_plan(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    res = httpx.post(f"{server.url}/plan", json=body, timeout=60)
    assert res.status_code == 200, res.text
    plan: dict[str, Any] = res.json()
    return plan


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("page") / "planner.sqlite"
    with running_server(db, token=TOKEN) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))

    def console(message: Any) -> None:
        # A refused request (401, 422) is logged as "Failed to load resource": expected here.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(f"console: {message.text}")

    pg.on("console", console)
    pg.goto(f"{server.url}/")
    expect(pg.locator("#preset option")).not_to_have_count(1)  # the script ran: presets added
    yield pg
    context.close()
    assert not errors, errors


def screenshot(pg: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"topology-{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def plan_through_form(pg: Any, topology: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """Paste a topology and a config.json, press Plan: the body the page posted."""
    pg.fill("#topology", json.dumps(topology, indent=2))
    pg.fill("#model", json.dumps(model, indent=2))
    with pg.expect_request(lambda r: r.url.endswith("/plan") and r.method == "POST") as req:
        pg.click("#plan-button")
    body: dict[str, Any] = req.value.post_data_json
    assert body["topology"] == topology
    assert body["model"] == model
    return body


# -- tests -----------------------------------------------------------------------------------
def test_page_is_served(server: Server, page: Any) -> None:
    res = httpx.get(f"{server.url}/")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in res.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css", f"/examples/configs/{QWEN3_235B}.json"):
        assert httpx.get(f"{server.url}{asset}").status_code == 200, asset
    assert "/" not in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    expect(page).to_have_title("asymtp · cluster plan")
    expect(page.locator("#preset")).to_contain_text(SEED_PRESET)


def test_three_node_plan_shows_each_nodes_share(server: Server, page: Any) -> None:
    model = config(LLAMA_70B)
    body = plan_through_form(page, THREE_NODES, model)
    plan = post_plan(server, body)
    assert plan["feasible"] and len(plan["ranks"]) == 3, plan  # a plan that uses every node
    boxes = page.locator(".nodes .node")
    expect(boxes).to_have_count(3)
    for rank in plan["ranks"]:
        box = page.locator(f'.node[data-node="{rank["node_id"]}"]')
        expect(box.locator(".share")).to_have_text(share_text(rank, plan["model"]))
        expect(box.locator(".badge")).to_have_text(f"rank {rank['rank']}")
        expect(box.locator(".bar .seg")).to_have_count(5)
    # Boxes in ring order, sized by memory: the 96 GB box is the widest, 48 GB the narrowest.
    assert boxes.evaluate_all("els => els.map(e => e.dataset.node)") == plan["ring"]
    widths = {
        n["id"]: page.locator(f'.node[data-node="{n["id"]}"]').bounding_box()["width"]
        for n in THREE_NODES["nodes"]
    }
    assert widths["studio-96"] > widths["mini-64"] > widths["laptop-48"]
    # Links labelled by kind and bandwidth, drawn and listed.
    expect(page.locator("svg.links path")).to_have_count(3)
    expect(page.locator(".link-list")).to_contain_text("ethernet · 10 Gb/s (default)")
    expect(page.locator("svg.links")).to_contain_text("thunderbolt · 40 Gb/s")
    # One stage: no stage list, no layer lines, badges as ever.
    expect(page.locator("#stages")).to_have_count(0)
    expect(page.locator(".node .layers")).to_have_count(0)
    screenshot(page, "3-node")


def test_pipeline_plan_shows_its_stages(server: Server, page: Any) -> None:
    """A pipeline forced on a TCP pair: a line per stage (its layers, ranks, split and times),
    each node's stage and layers, boxes in pipeline order."""
    page.select_option("#parallelism", "pipeline")
    page.uncheck("#allow-unused")
    body = plan_through_form(page, TB4_PAIR, config(QWEN3_235B))
    assert body["constraints"]["parallelism"] == "pipeline"
    plan = post_plan(server, body)
    stages = plan["estimates"]["stages"]
    assert plan["feasible"] and len(stages) == 2, plan
    expect(page.locator(".headline")).to_contain_text("· 2 stages ·")
    lines = page.locator("#stages .stage")
    expect(lines).to_have_count(2)
    for i, stage in enumerate(stages):
        expect(lines.nth(i)).to_contain_text(stage_head(stage, plan["ranks"]))
        expect(lines.nth(i)).to_contain_text(" transfer")
    expect(page.locator("#stages")).to_contain_text("of activation transfers per token")
    for rank in plan["ranks"]:
        box = page.locator(f'.node[data-node="{rank["node_id"]}"]')
        expect(box.locator(".badge")).to_have_text(f"rank {rank['rank']} · stage {rank['stage']}")
        start, end = rank["layers"]
        expect(box.locator(".layers")).to_have_text(f"layers {start}–{end} ({end - start})")
    order = page.locator(".nodes .node").evaluate_all("els => els.map(e => e.dataset.node)")
    assert order == [r["node_id"] for r in sorted(plan["ranks"], key=lambda r: r["rank"])]
    screenshot(page, "pipeline")


def test_seed_preset_explains_why_an_equal_split_fails(server: Server, page: Any) -> None:
    value = page.locator("#preset option", has_text=SEED_PRESET).get_attribute("value")
    page.select_option("#preset", value=value)
    expect(page.locator("#model")).not_to_have_value("")
    assert json.loads(page.input_value("#model")) == config(QWEN3_235B)
    with page.expect_request(lambda r: r.url.endswith("/plan")) as req:
        page.click("#plan-button")
    body: dict[str, Any] = req.value.post_data_json
    plan = post_plan(server, body)
    equal = post_plan(server, {**body, "constraints": {**body["constraints"], "sharding": "equal"}})
    assert plan["feasible"] and not equal["feasible"] and equal["reasons"]
    for rank in plan["ranks"]:
        expect(page.locator(f'.node[data-node="{rank["node_id"]}"] .share')).to_have_text(
            share_text(rank, plan["model"])
        )
    verdict = page.locator("#equal-split")
    expect(verdict).to_contain_text("Why an equal split fails")
    for reason in equal["reasons"]:
        expect(verdict).to_contain_text(reason)
    screenshot(page, "seed-equal-split")


def test_infeasible_plan_shows_its_reasons(server: Server, page: Any) -> None:
    body = plan_through_form(page, TOO_SMALL, config(LLAMA_70B))
    plan = post_plan(server, body)
    assert not plan["feasible"] and plan["reasons"]
    reasons = page.locator("#reasons")
    expect(reasons).to_contain_text("Does not fit")
    for reason in plan["reasons"]:
        expect(reasons).to_contain_text(reason)
    expect(page.locator(".nodes .node.unused")).to_have_count(2)
    screenshot(page, "infeasible")


def test_bad_input_names_the_field(page: Any) -> None:
    bad = {"nodes": [*TOO_SMALL["nodes"], TOO_SMALL["nodes"][0]], "links": TOO_SMALL["links"]}
    plan_through_form(page, bad, config(LLAMA_70B))
    expect(page.locator(".alert.error")).to_contain_text("duplicate node id 'mini-a'")
    page.fill("#topology", "{not json")
    page.click("#plan-button")
    expect(page.locator(".alert.error")).to_contain_text("Topology is not JSON")


def test_deployment_view_shows_agents_live(server: Server, page: Any) -> None:
    name = "page-demo"
    spec = {
        "topology": THREE_NODES,
        "model": config(LLAMA_70B),
        "model_path": "mlx-community/Meta-Llama-3.1-70B-Instruct-bf16",
    }
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as client:
        res = client.put(f"/deployments/{name}", json=spec)
        assert res.status_code == 200, res.text
        plan = res.json()["plan"]
        studio, mini, laptop = (n["id"] for n in THREE_NODES["nodes"])
        status = f"/deployments/{name}/status"
        loading = {"state": "loading", "progress": 0.4, "rank": 0}
        assert client.post(f"{status}/{studio}", json=loading).status_code == 200
        hostile = '<img src=x onerror="document.title=1">no memory'
        failed = {"state": "failed", "reason": hostile, "restarts": 2, "last_failure": "OOM"}
        assert client.post(f"{status}/{mini}", json=failed).status_code == 200

        page.fill("#deployment-name", name)
        page.fill("#token", TOKEN)
        page.click("#watch-button")
        expect(page.locator(".deployment-title")).to_have_text(f"{name} · revision 1")
        box = {n: page.locator(f'.node[data-node="{n}"]') for n in (studio, mini, laptop)}
        expect(box[studio].locator(".state")).to_have_text("loading")
        expect(box[studio].locator(".progress-text")).to_have_text("40%")
        expect(box[mini].locator(".state")).to_have_text("failed")
        expect(box[mini].locator(".reason")).to_have_text(hostile)  # as text, not markup
        assert box[mini].locator("img").count() == 0
        expect(box[mini]).to_contain_text("restarted 2×")
        expect(box[mini]).to_contain_text("last failure: OOM")
        expect(box[laptop].locator(".agent")).to_have_text("no report yet")
        for rank in plan["ranks"]:
            expect(box[rank["node_id"]].locator(".share")).to_have_text(
                share_text(rank, plan["model"])
            )
        assert page.evaluate("sessionStorage.getItem('asymtp.token')") == TOKEN
        screenshot(page, "deployment-loading")

        # The page refreshes by itself: a later report shows up without a click.
        ready = {"state": "ready", "rank": 0, "serving": "http://10.0.0.11:8000/v1"}
        assert client.post(f"{status}/{studio}", json=ready).status_code == 200
        expect(box[studio].locator(".state")).to_have_text("ready")
        expect(box[studio].locator(".serving a")).to_have_attribute("href", ready["serving"])
        screenshot(page, "deployment-ready")

        # The address names the deployment and the tab keeps the token: a reload watches again.
        assert page.url.endswith(f"#deployment={name}")
        page.reload()
        expect(page.locator(".deployment-title")).to_have_text(f"{name} · revision 1")
        expect(box[studio].locator(".state")).to_have_text("ready")


def test_pipeline_deployment_shows_each_agents_stage(server: Server, page: Any) -> None:
    name = "page-pipeline"
    spec = {
        "topology": TB4_PAIR,
        "model": config(QWEN3_235B),
        "model_path": "mlx-community/Qwen3-235B-A22B-4bit",
        "constraints": {"parallelism": "pipeline", "allow_unused_nodes": False},
    }
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as client:
        res = client.put(f"/deployments/{name}", json=spec)
        assert res.status_code == 200, res.text
        plan = res.json()["plan"]
        assert len(plan["estimates"]["stages"]) == 2, plan
        for rank in plan["ranks"]:
            report = {"state": "loading", "progress": 0.5, "rank": rank["rank"]}
            res = client.post(f"/deployments/{name}/status/{rank['node_id']}", json=report)
            assert res.status_code == 200, res.text
    page.fill("#deployment-name", name)
    page.fill("#token", TOKEN)
    page.click("#watch-button")
    expect(page.locator(".deployment-title")).to_have_text(f"{name} · revision 1")
    expect(page.locator("#stages .stage")).to_have_count(2)
    for rank in plan["ranks"]:
        box = page.locator(f'.node[data-node="{rank["node_id"]}"]')
        expect(box.locator(".badge")).to_have_text(f"rank {rank['rank']} · stage {rank['stage']}")
        start, end = rank["layers"]
        expect(box.locator(".layers")).to_have_text(f"layers {start}–{end} ({end - start})")
        expect(box.locator(".agent .seen").last).to_have_text(f" · rank {rank['rank']}")
    screenshot(page, "deployment-pipeline")


def test_deployment_view_without_the_token_says_so(page: Any) -> None:
    page.evaluate("sessionStorage.clear()")
    page.fill("#deployment-name", "page-demo")
    page.fill("#token", "")
    page.click("#watch-button")
    expect(page.locator(".alert.error")).to_contain_text("Not allowed (401)")


def test_measured_figures_and_the_doctor_panel(server: Server, page: Any) -> None:
    """Measured figures show beside nodes and links ("assumed" where defaults stand in), and
    the doctor panel lists each finding with its fix and what the TCP ring costs."""
    from mac_samples import RDMA_CTL_DISABLED, mesh

    name = "page-measured"
    ids = ["studio", "mini", "laptop"]
    nodes = [
        {"id": i, "memory_gb": 96, "bandwidth_gbps": bw, "source": src}
        for i, bw, src in (
            ("studio", 712.5, "measured"),
            ("mini", 800, "assumed"),
            ("laptop", 300, None),
        )
    ]
    links = [
        {
            "a": "studio",
            "b": "mini",
            "kind": "thunderbolt",
            "bandwidth_gbps": 55.2,
            "latency_us": 210.5,
            "source": "measured",
        },
        {"a": "mini", "b": "laptop", "kind": "thunderbolt"},
    ]
    spec = {
        "topology": {
            "nodes": [{k: v for k, v in n.items() if v is not None} for n in nodes],
            "links": links,
        },
        "model": config(LLAMA_70B),
        "model_path": "mlx-community/Meta-Llama-3.1-70B-Instruct-bf16",
    }
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as client:
        res = client.put(f"/deployments/{name}", json=spec)
        assert res.status_code == 200, res.text
        assert res.json()["plan"]["sources"]["link:mini-laptop"] == "assumed"
        for f in mesh(ids, mini={"rdma_ctl": RDMA_CTL_DISABLED}):
            body = {"state": "idle", "facts": json.loads(f.model_dump_json())}
            assert (
                client.post(f"/deployments/{name}/status/{f.node_id}", json=body).status_code == 200
            )

    page.fill("#deployment-name", name)
    page.fill("#token", TOKEN)
    page.click("#watch-button")
    box = {n: page.locator(f'.node[data-node="{n}"] .meta').first for n in ids}
    expect(box["studio"]).to_contain_text("712.5 GB/s measured")
    expect(box["mini"]).to_contain_text("800 GB/s assumed")
    expect(box["laptop"]).to_contain_text("300 GB/s given")
    agent = page.locator('.node[data-node="studio"] .agent .measured')
    expect(agent).to_contain_text("memory 700 GB/s · 2 link(s) in 1 s")
    expect(page.locator(".link-list")).to_contain_text(
        "studio ⇄ mini thunderbolt · 55.2 Gb/s · 210.5 µs · measured"
    )
    expect(page.locator(".link-list")).to_contain_text(
        "mini ⇄ laptop thunderbolt · 40 Gb/s (default) · assumed"
    )
    doctor = page.locator("#doctor")
    expect(doctor.locator(".finding-problem")).to_contain_text("mini: RDMA is disabled")
    expect(doctor.locator(".finding-problem .fix")).to_contain_text("rdma_ctl enable")
    expect(doctor.locator(".verdict")).to_contain_text(
        "RDMA cannot work: the plan will use the TCP ring"
    )
    expect(doctor.locator(".verdict")).to_contain_text("tok/s")
    screenshot(page, "measured-doctor")
