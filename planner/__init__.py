"""asymtp planner: topology + model config -> an asymmetric tensor-parallel plan.

A pure library (no mlx import). `planner.plan.make_plan` is the entry point.
"""
