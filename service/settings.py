"""Service settings: `ASYMTP_*` environment variables, overridden by `asymtp serve` flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from planner.request_io import MAX_REQUEST_BYTES
from protocol.signing import DEVELOPMENT_KEY, keep_key_file, read_secret_file

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
    signing_key_file: Path | None = None
    """The HMAC key for assignments (first line). Default: `<db_path>.signing-key`, created on
    the first start with a token; a service without a token signs with the development key."""
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

    body_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """A request body not received in full within this is answered 408."""

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @model_validator(mode="after")
    def _token_from_file(self) -> Settings:
        if self.token is None and self.token_file is not None:
            token = read_secret_file(self.token_file, "token_file")
            object.__setattr__(self, "token", SecretStr(token))
        return self

    @property
    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None

    @property
    def key_path(self) -> Path:
        return self.signing_key_file or self.db_path.with_name(self.db_path.name + ".signing-key")

    def signing_key(self) -> bytes:
        """The service's own key (read, or created on first start); the development key only
        for a token-less service, which listens on loopback alone."""
        if self.signing_key_file is not None:
            return read_secret_file(self.signing_key_file, "signing_key_file").encode()
        if self.token is None:
            return DEVELOPMENT_KEY.encode()
        return keep_key_file(self.key_path).encode()
