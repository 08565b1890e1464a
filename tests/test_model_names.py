"""Models named as users name them: `ORG/NAME[@REV]` in the Hugging Face cache layout
(snapshots symlinked into blobs, a multi-file checkpoint with its index), found under the
agent's models directory only, served under that name; a missing one fails saying where the
agent looked."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest

from executor.model_paths import ModelNotFound, resolve, served_name

REV = "0123456789abcdef0123456789abcdef01234567"


def hf_cache_copy(model_dir: Path, root: Path, org: str, name: str, rev: str = REV) -> Path:
    """`model_dir` as the Hugging Face cache holds it: weights split over two files with an
    index, every file a symlink from the snapshot into `blobs/`, `refs/main` naming `rev`."""
    import mlx.core as mx

    repo = root / f"models--{org}--{name}"
    snapshot, blobs = repo / "snapshots" / rev, repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    weights = mx.load(str(model_dir / "model.safetensors"))
    assert isinstance(weights, dict)
    names = sorted(weights)
    halves = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    staging = root / "staging"
    staging.mkdir(exist_ok=True)
    files: dict[str, bytes] = {}
    for file, keys in halves.items():
        mx.save_safetensors(str(staging / file), {k: weights[k] for k in keys})
        files[file] = (staging / file).read_bytes()
    index = {"metadata": {}, "weight_map": {k: f for f, keys in halves.items() for k in keys}}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    for f in model_dir.iterdir():
        if f.suffix != ".safetensors":
            files[f.name] = f.read_bytes()
    for file, data in files.items():
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file)
    return snapshot


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from executor.tiny_models import build_model

    return build_model(tmp_path_factory.mktemp("tiny") / "tiny", "llama", seed=5)


def test_names_resolve_in_the_cache_layout_under_the_models_dir(tiny: Path, tmp_path: Path) -> None:
    snapshot = hf_cache_copy(tiny, tmp_path, "acme", "tiny-llama")
    for name in ("acme/tiny-llama", f"acme/tiny-llama@{REV}", "acme/tiny-llama@main"):
        found = resolve(tmp_path, name)
        assert found.path == snapshot.resolve() and found.served_name == "acme/tiny-llama"
    assert served_name("plain-dir") == "plain-dir"


def test_a_missing_name_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as e:
        resolve(tmp_path, "acme/absent@v2")
    message = str(e.value)
    assert "models--acme--absent" in message and str(tmp_path.resolve()) in message
    assert "nothing is downloaded" in message


def test_names_never_leave_the_models_dir(tiny: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    models = tmp_path / "models"
    snapshot = hf_cache_copy(tiny, outside, "acme", "escape")
    repo = models / "models--acme--escape" / "snapshots" / REV
    repo.mkdir(parents=True)
    for f in snapshot.iterdir():
        os.symlink(f.resolve(), repo / f.name)  # every file a link to another tree
    with pytest.raises(ModelNotFound, match="outside"):
        resolve(models, f"acme/escape@{REV}")
    with pytest.raises(ModelNotFound, match="leaves the models directory"):
        resolve(models, "../outside")


def test_a_multi_file_checkpoint_loads_as_the_single_file_one(tiny: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    from executor.loader import load_shard

    snapshot = hf_cache_copy(tiny, tmp_path, "acme", "tiny-llama")
    prompt = mx.array([[5, 9, 17, 3]])
    a = load_shard(tiny)[0](prompt)
    b = load_shard(snapshot)[0](prompt)
    assert mx.array_equal(a, b).item()


@pytest.mark.slow
def test_a_deployment_names_its_model_org_name(tiny: Path, tmp_path: Path) -> None:
    import httpx

    from asymtp.local_cluster import LocalCluster, all_ready, free_port, free_port_block

    models = tmp_path / "models"
    models.mkdir()
    hf_cache_copy(tiny, models, "acme", "tiny-llama")
    config = json.loads((tiny / "config.json").read_text())

    def lone(node: str, model_path: str) -> dict[str, object]:
        return {
            "topology": {"nodes": [{"id": node, "memory_gb": 1.0, "bandwidth_gbps": 400}]},
            "model": config,
            "constraints": {"context_tokens": 64, "overhead_bytes": 100_000},
            "model_path": model_path,
            "ring_port": free_port_block(1),
            "serve_port": free_port(),
        }

    with LocalCluster(tmp_path / "work", models) as cluster:
        cluster.start_planner()
        cluster.deploy("named", lone("hf-named", f"acme/tiny-llama@{REV}"))
        cluster.deploy("absent", lone("hf-absent", "acme/not-here"))
        cluster.start_agent("hf-named", "named", 1.0)
        cluster.start_agent("hf-absent", "absent", 1.0)
        ready = cluster.wait_for("named", all_ready, 180, what="the named model serving")
        url = ready.agents["hf-named"].serving
        listed = httpx.get(f"{url}/v1/models", timeout=30).json()
        assert [m["id"] for m in listed["data"]] == ["acme/tiny-llama"]
        r = httpx.post(
            f"{url}/v1/completions",
            json={"model": "acme/tiny-llama", "prompt": "the ring", "max_tokens": 4},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        failed = cluster.wait_for(
            "absent",
            lambda d: (a := d.agents.get("hf-absent")) is not None and a.state == "failed",
            90,
            what="the missing model reported",
        )
        reason = failed.agents["hf-absent"].reason or ""
        print(reason)
        assert "models--acme--not-here" in reason and str(models.resolve()) in reason
    # Stopped agents leave no temporary directories behind.
    left = [
        p
        for n in ("hf-named", "hf-absent")
        for p in Path(tempfile.gettempdir()).glob(f"asymtp-{n}-*")
    ]
    assert not left, left
