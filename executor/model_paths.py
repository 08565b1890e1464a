"""Where a deployment's model lives on this node, and the name it is served under.

A deployment names its model either by a directory relative to the agent's `--models-dir`
(`my-model`, `converted/llama`), or the way users know it, `ORG/NAME` or `ORG/NAME@REV`,
looked up in the Hugging Face cache layout:

    <root>/models--ORG--NAME/refs/main            -> a commit hash
    <root>/models--ORG--NAME/snapshots/<hash>/    config.json, *.safetensors, ... (symlinks)
    <root>/models--ORG--NAME/blobs/<sha>          the files' contents

`<root>` is `--models-dir`, plus the user's Hugging Face cache when the agent is started with
`--hf-cache`. Nothing is ever downloaded, and nothing outside those roots is read: every file
of the snapshot must resolve (symlinks followed) inside its root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

HF_NAME = re.compile(
    r"^(?P<org>[A-Za-z0-9][A-Za-z0-9._-]{0,95})/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,95})"
    r"(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._-]{0,127}))?$"
)
DEFAULT_REF = "main"


class ModelNotFound(ValueError):
    """No usable model under the name; the message lists every place looked at."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    """The model directory (a snapshot directory for a cache name)."""
    served_name: str
    """What `/v1/models` lists and requests may name."""


def served_name(model_path: str) -> str:
    """`ORG/NAME[@REV]` -> `ORG/NAME`; a plain directory -> its last component."""
    m = HF_NAME.match(model_path)
    if m:
        return f"{m['org']}/{m['name']}"
    return Path(model_path).name


def hf_cache_root() -> Path:
    """The user's Hugging Face hub cache, as huggingface_hub finds it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def _inside(path: Path, root: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


def _plain(models_dir: Path, model_path: str) -> Path | None:
    root = models_dir.resolve()
    path = root / model_path
    if not _inside(path, root):
        raise ModelNotFound(f"model path {model_path!r} leaves the models directory {root}")
    if not (path / "config.json").is_file():
        return None
    if not _inside(path / "config.json", root):
        raise ModelNotFound(f"{path}/config.json links out of the models directory {root}")
    return path.resolve()


def _snapshot(root: Path, org: str, name: str, rev: str | None) -> tuple[Path | None, str]:
    """The snapshot directory for a cache name under `root` (or None) and where it looked."""
    repo = root / f"models--{org}--{name}"
    ref = rev or DEFAULT_REF
    ref_file = repo / "refs" / ref
    commit = ref
    if ref_file.is_file():
        commit = ref_file.read_text().strip()
    snapshot = repo / "snapshots" / commit
    looked = f"{snapshot}" + ("" if commit == ref else f" (refs/{ref})")
    if (
        not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", commit)
        or not (snapshot / "config.json").is_file()
    ):
        return None, looked
    for f in snapshot.iterdir():
        if not _inside(f, root.resolve()):
            raise ModelNotFound(f"{f} links outside {root}: refused")
    return snapshot, looked


def resolve(models_dir: Path, model_path: str, hf_cache: bool = False) -> ResolvedModel:
    """The model directory for a deployment's `model_path`; raises `ModelNotFound`."""
    plain = _plain(models_dir, model_path)
    if plain is not None:
        return ResolvedModel(plain, served_name(model_path))
    looked = [str(models_dir.resolve() / model_path)]
    m = HF_NAME.match(model_path)
    if m:
        roots = [models_dir.resolve()] + ([hf_cache_root().resolve()] if hf_cache else [])
        for root in roots:
            snapshot, where = _snapshot(root, m["org"], m["name"], m["rev"])
            if snapshot is not None:
                return ResolvedModel(snapshot, served_name(model_path))
            looked.append(where)
    raise ModelNotFound(
        f"model {model_path!r} not found (nothing is downloaded); looked at: {'; '.join(looked)}"
    )
