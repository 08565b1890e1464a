"""Service settings: `ASYMTP_*` environment variables, overridden by `asymtp serve` flags."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from planner.request_io import MAX_REQUEST_BYTES

DEFAULT_PORT = 8420


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASYMTP_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    token: SecretStr | None = None
    """Bearer token for the deployment endpoints; required to listen beyond loopback."""
    token_file: Path | None = None
    """Read the token from this file (first line) when `token` is not set."""
    signing_key: SecretStr | None = None
    """HMAC key for assignments; defaults to the token (`protocol.signing.signing_key`)."""
    db_path: Path = Path("asymtp.sqlite")
    max_solver_seconds: Annotated[float, Field(gt=0, le=120)] = 30.0
    """A request may ask for a shorter `constraints.time_limit_s`, not a longer one."""
    max_wait_s: Annotated[float, Field(ge=0, le=600)] = 60.0
    """Long-poll cap: `?wait=N` is clamped to this."""
    poll_interval_s: Annotated[float, Field(gt=0, le=5)] = 0.15
    """How often a waiting long-poll re-reads the database (changes made by other processes)."""
    solver_threads: Annotated[int, Field(ge=1, le=256)] = max(os.cpu_count() or 1, 1)
    """Plans solved at once per worker process (CP-SAT releases the GIL while it searches)."""
    max_pending_solves: Annotated[int, Field(ge=1, le=100_000)] = 64
    """Solves queued beyond this are answered 429."""
    plan_cache_size: Annotated[int, Field(ge=0, le=100_000)] = 256
    max_body_bytes: Annotated[int, Field(ge=1024, le=MAX_REQUEST_BYTES)] = MAX_REQUEST_BYTES
    max_agents: Annotated[int, Field(ge=1, le=10_000_000)] = 65_536
    """Agent records kept over all deployment names (a status from a new node beyond it: 409)."""
    graceful_shutdown_s: Annotated[float, Field(ge=0, le=600)] = 3.0
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("token", "signing_key", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @model_validator(mode="after")
    def _token_from_file(self) -> Settings:
        if self.token is None and self.token_file is not None:
            try:
                lines = self.token_file.read_text().splitlines()
            except OSError as e:
                raise ValueError(f"token_file {self.token_file}: {e.strerror or e}") from None
            first = lines[0].strip() if lines else ""
            if not first:
                raise ValueError(f"token_file {self.token_file} is empty")
            object.__setattr__(self, "token", SecretStr(first))
        return self

    @property
    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None

    @property
    def signing_key_value(self) -> str | None:
        return self.signing_key.get_secret_value() if self.signing_key is not None else None


def is_loopback(host: str) -> bool:
    """True only for addresses that other machines cannot reach (names other than localhost
    could resolve anywhere, so they count as non-loopback)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
