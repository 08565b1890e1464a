"""`python -m tests.slow_solves [asymtp serve flags]`: the real service, whose every solve first
sleeps `SLOW_SOLVE_S` seconds in its worker thread. A solve slow by construction, not by this
machine's speed, for tests of what happens while solves run (single worker process only)."""

from __future__ import annotations

import os
import sys
import time

import service.plans
from protocol.plan import Plan
from protocol.schema import PlanRequest
from service.__main__ import main

_solve = service.plans.make_plan


def _slow_solve(request: PlanRequest) -> Plan:
    time.sleep(float(os.environ.get("SLOW_SOLVE_S", "2")))  # releases the GIL, as CP-SAT does
    return _solve(request)


service.plans.make_plan = _slow_solve

if __name__ == "__main__":
    sys.exit(main())
