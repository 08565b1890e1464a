"""CP-SAT settings shared by every model the planner builds: one deterministic worker."""

from __future__ import annotations

from ortools.sat.python import cp_model

SEED = 20261124
WORKERS = 1  # one worker keeps the search deterministic for a given request
GAP_PS = 999
"""A plan within this of the proven bound is optimal: under a nanosecond a token, below what
a plan reports (ms to 6 decimals) and below the fluid bound's own rounding."""


class CpModel(cp_model.CpModel):
    """A CP-SAT model without the deprecated camelCase aliases OR-Tools attaches to every new
    model (about a millisecond each; several models are built per plan)."""

    def _add_pre_pep8_methods(self) -> None:
        pass


def new_solver(seconds: float, deterministic: float | None = None) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = WORKERS
    solver.parameters.random_seed = SEED
    solver.parameters.max_time_in_seconds = max(seconds, 0.001)
    # A deterministic-time budget keeps results reproducible whatever the machine load.
    solver.parameters.max_deterministic_time = seconds if deterministic is None else deterministic
    solver.parameters.cp_model_probing_level = 0
    solver.parameters.linearization_level = 2
    solver.parameters.absolute_gap_limit = GAP_PS
    return solver


def checked_solve(solver: cp_model.CpSolver, model: cp_model.CpModel) -> str:
    """Solve: OPTIMAL, FEASIBLE, INFEASIBLE or UNKNOWN. A malformed model is a bug in the
    planner: say so loudly instead of 'no plan'."""
    status = solver.solve(model)
    if status == cp_model.MODEL_INVALID:
        raise RuntimeError(f"invalid CP-SAT model: {model.validate()}")
    return solver.status_name(status)
