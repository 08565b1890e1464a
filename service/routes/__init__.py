"""One `APIRouter` per resource: planning, deployments, agents (assignments and status),
service health and metrics."""
