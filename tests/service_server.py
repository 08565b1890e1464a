"""The service runner tests use (`asymtp.processes`), under the names tests know it by.

from service_server import running_server         # tests/ is on sys.path under pytest

with running_server(tmp_path / "db.sqlite", token="a-token-of-16-chars") as server:
    httpx.put(f"{server.url}/deployments/demo", json=spec, headers=server.auth)
"""

from asymtp.processes import ROOT, free_port
from asymtp.processes import Service as Server
from asymtp.processes import running_service as running_server

__all__ = ["ROOT", "Server", "free_port", "running_server"]
