"""asymtp's contract: what the planner, the service and the agents exchange.

Plan requests and plans (`schema`), deployments and assignments (`deployment`), their
signatures (`signing`) and the model description both sides read (`model_spec`). Imports
nothing algorithmic: pydantic and the standard library only.
"""
