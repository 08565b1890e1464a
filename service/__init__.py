"""The planner as an HTTP service: `POST /plan`, and deployments that executor agents poll.

`asymtp serve` runs it (uvicorn). Planning stays the pure `planner.plan.make_plan`; the only
state is the deployment and agent records in one SQLite file (`store.py`).
"""
