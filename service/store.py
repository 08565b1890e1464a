"""The service's only state: deployments and agent records in one SQLite file (WAL).

Each thread keeps its own connection; writers take `BEGIN IMMEDIATE`, so several service
processes over one file serialise their writes and all read the same rows. A deployment's
revision counts its publications and never repeats for a name, even across a DELETE (the
`revisions` table outlives the deployment), so an agent's ETag cannot match a later plan.
Agent records are keyed by (deployment name, node id) and exist without a deployment: agents
report their facts before anyone has deployed anything.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.responses import DeploymentSummary

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    plan_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    spec TEXT NOT NULL,
    plan TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (name TEXT PRIMARY KEY, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS agents (
    deployment TEXT NOT NULL,
    node_id TEXT NOT NULL,
    seen_at REAL NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (deployment, node_id)
);
"""


class StoreError(RuntimeError):
    """The database file cannot be opened or is not ours."""


class TooManyAgents(Exception):
    """A status from a new node when the store already holds `max_agents` records."""


@dataclass(frozen=True)
class StoredDeployment:
    name: str
    revision: int
    plan_id: str
    created_at: float
    updated_at: float
    spec: str
    """DeploymentSpec JSON."""
    plan: str
    """Plan JSON (`plan_json`)."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._init()

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=True
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._connect()
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _init(self) -> None:
        try:
            if self.path.parent != Path() and not self.path.parent.is_dir():
                raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
            conn = self._connect()
            try:
                deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
                while True:  # switching to WAL needs a moment alone with the file
                    try:
                        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                        break
                    except sqlite3.OperationalError as e:
                        if "locked" not in str(e) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: cannot use WAL journal mode (got {mode})")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                    )
                elif row[0] != str(SCHEMA_VERSION):
                    conn.execute("ROLLBACK")
                    raise StoreError(
                        f"{self.path}: database schema {row[0]}, this service uses {SCHEMA_VERSION}"
                    )
                conn.execute("COMMIT")
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from None

    # -- deployments ---------------------------------------------------------------------
    def publish(self, name: str, spec: str, plan: str, plan_id: str) -> StoredDeployment:
        """Store a new revision of `name` (created if absent)."""
        conn = self._conn()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT revision FROM revisions WHERE name = ?", (name,)).fetchone()
            revision = (row[0] if row else 0) + 1
            old = conn.execute(
                "SELECT created_at FROM deployments WHERE name = ?", (name,)
            ).fetchone()
            created = old[0] if old else now
            conn.execute(
                "INSERT INTO revisions (name, revision) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET revision = excluded.revision",
                (name, revision),
            )
            conn.execute(
                "INSERT INTO deployments (name, revision, plan_id, created_at, updated_at, spec, plan)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " revision = excluded.revision, plan_id = excluded.plan_id,"
                " updated_at = excluded.updated_at, spec = excluded.spec, plan = excluded.plan",
                (name, revision, plan_id, created, now, spec, plan),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return StoredDeployment(name, revision, plan_id, created, now, spec, plan)

    def get(self, name: str) -> StoredDeployment | None:
        row = (
            self._conn()
            .execute(
                "SELECT name, revision, plan_id, created_at, updated_at, spec, plan"
                " FROM deployments WHERE name = ?",
                (name,),
            )
            .fetchone()
        )
        return StoredDeployment(*row) if row else None

    def revisions(self, names: list[str]) -> dict[str, int]:
        """Current revision of each deployment that exists among `names` (one cheap query)."""
        if not names:
            return {}
        marks = ",".join("?" * len(names))
        rows = (
            self._conn()
            .execute(f"SELECT name, revision FROM deployments WHERE name IN ({marks})", names)
            .fetchall()
        )
        return {name: revision for name, revision in rows}

    def delete(self, name: str) -> bool:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            gone = conn.execute("DELETE FROM deployments WHERE name = ?", (name,)).rowcount
            conn.execute("DELETE FROM agents WHERE deployment = ?", (name,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return gone > 0

    def summaries(self) -> list[DeploymentSummary]:
        rows = (
            self._conn()
            .execute(
                "SELECT d.name, d.revision, d.plan_id, d.updated_at,"
                " (SELECT COUNT(*) FROM agents a WHERE a.deployment = d.name)"
                " FROM deployments d ORDER BY d.name"
            )
            .fetchall()
        )
        fields = DeploymentSummary.model_fields
        return [DeploymentSummary(**dict(zip(fields, row))) for row in rows]

    # -- agents --------------------------------------------------------------------------
    def put_agent(
        self, name: str, node_id: str, state: str, record: str, seen_at: float, max_agents: int
    ) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = conn.execute(
                "SELECT 1 FROM agents WHERE deployment = ? AND node_id = ?", (name, node_id)
            ).fetchone()
            if known is None:
                (count,) = conn.execute("SELECT COUNT(*) FROM agents").fetchone()
                if count >= max_agents:
                    raise TooManyAgents(f"the service already holds {count} agent records")
            conn.execute(
                "INSERT INTO agents (deployment, node_id, seen_at, state, record)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(deployment, node_id) DO UPDATE SET"
                " seen_at = excluded.seen_at, state = excluded.state, record = excluded.record",
                (name, node_id, seen_at, state, record),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def agents(self, name: str) -> list[str]:
        """Agent record JSON for `name`, by node id."""
        rows = (
            self._conn()
            .execute("SELECT record FROM agents WHERE deployment = ? ORDER BY node_id", (name,))
            .fetchall()
        )
        return [r[0] for r in rows]

    def counts(self) -> tuple[int, dict[str, int]]:
        """(deployments, agent records by state) for /metrics."""
        conn = self._conn()
        (deployments,) = conn.execute("SELECT COUNT(*) FROM deployments").fetchone()
        by_state = dict(
            conn.execute("SELECT state, COUNT(*) FROM agents GROUP BY state").fetchall()
        )
        return deployments, by_state
