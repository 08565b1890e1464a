"""Read a plan request file (JSON or YAML) with the conveniences a user types.

`model` may be a config.json object, a path to a config.json, or a model directory holding
one; relative paths are taken from the request file's folder.
"""

from __future__ import annotations

import json
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


def read_model_config(ref: str, base: Path) -> dict[str, Any]:
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.is_dir():
        path = path / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RequestError(f"model: no config.json at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(f"model: cannot read {path}: {e}") from None
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


def load_request(path: Path) -> PlanRequest:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RequestError(f"{path}: {e.strerror or e}") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError(f"{path}: larger than {MAX_REQUEST_BYTES} bytes")
    try:
        data = yaml.safe_load(raw) if path.suffix in (".yaml", ".yml") else json.loads(raw)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RequestError(
            f"{path}: not valid {'YAML' if path.suffix != '.json' else 'JSON'}: {first}"
        ) from None
    return parse_request(data, path.parent)
