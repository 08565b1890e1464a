"""Read a plan request file (JSON or YAML) with the conveniences a user types.

`model` may be a config.json object, a path to a config.json, or a model directory holding
one; relative paths are taken from the request file's folder.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from protocol.schema import PlanRequest

MAX_REQUEST_BYTES = 1 << 20


class RequestError(ValueError):
    """Bad input; the message is one line naming what to fix."""


def describe(error: ValidationError) -> str:
    """One line per problem: `field.path: message`."""
    parts = []
    for e in error.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "request"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors and aliases: a 600-byte alias bomb expands to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def read_bounded(path: Path, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """At most `limit` bytes of a regular file: a FIFO, device or directory is refused without
    blocking on it (opened non-blocking, checked before reading)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise RequestError(f"{path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RequestError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(limit + 1)
        except OSError as e:
            raise RequestError(f"{path}: {e.strerror or e}") from None
    if len(raw) > limit:
        raise RequestError(f"{path}: larger than {limit} bytes")
    return raw


def parse_text(raw: bytes, path: Path) -> Any:
    """JSON, or YAML for a .yaml/.yml file; RequestError (one line) for anything unreadable,
    nested too deep included."""
    is_yaml = path.suffix in (".yaml", ".yml")
    try:
        return yaml.load(raw, Loader=_NoAliasLoader) if is_yaml else json.loads(raw)
    except RecursionError:
        raise RequestError(f"{path}: nested too deeply") from None
    except (yaml.YAMLError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RequestError(f"{path}: not valid {'YAML' if is_yaml else 'JSON'}: {first}") from None


def read_model_config(ref: str, base: Path) -> dict[str, Any]:
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise RequestError(f"model: no config.json at {path}")
    try:
        data = parse_text(read_bounded(path), path.with_suffix(".json"))
    except RequestError as e:
        raise RequestError(f"model: {e}") from None
    if not isinstance(data, dict):
        raise RequestError(f"model: {path} does not hold a JSON object")
    return data


def parse_request(data: Any, base: Path) -> PlanRequest:
    if not isinstance(data, dict):
        raise RequestError("request: the file must hold an object with topology and model")
    if isinstance(data.get("model"), str):
        data = {**data, "model": read_model_config(data["model"], base)}
    try:
        return PlanRequest.model_validate(data)
    except ValidationError as e:
        raise RequestError(describe(e)) from None
    except RecursionError:
        raise RequestError("request: nested too deeply") from None


def load_request(path: Path) -> PlanRequest:
    return parse_request(parse_text(read_bounded(path), path), path.parent)
