"""Rank 0's HTTP API (OpenAI chat/completions, Anthropic messages), written against
`executor.engine_api.Engine`: it knows nothing of MLX or of the other ranks."""

from executor.api.app import create_app
from executor.api.serving import Serving

__all__ = ["Serving", "create_app"]
