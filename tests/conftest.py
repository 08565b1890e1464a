"""Fixtures shared by the test modules: real services on loopback ports, a client for them,
a tiny model on disk. (Service processes come from `asymtp.processes`.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asymtp.processes import Service, running_service

SERVICE_TOKEN = "a-test-token-of-32-characters-ok"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A token-less service (loopback only, development signing key), one per test module."""
    db = tmp_path_factory.mktemp("service") / "planner.sqlite"
    with running_service(db) as s:
        yield s


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with a token (and so its own signing key, in `key_path`)."""
    db = tmp_path_factory.mktemp("token-service") / "planner.sqlite"
    with running_service(db, token=SERVICE_TOKEN) as s:
        yield s


@pytest.fixture
def client(server: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny float32 qwen3 model under a models directory of its own (`tiny_model.parent`)."""
    from executor.tiny_models import build_model

    models = tmp_path_factory.mktemp("models")
    return build_model(models / "tiny-qwen3", "qwen3", "none", "float32", 0)
