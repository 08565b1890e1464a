"""asymtp: asymmetric tensor parallelism for Apple Silicon clusters with uneven memory."""

from planner.version import __version__

__all__ = ["__version__"]
