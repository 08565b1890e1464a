"""asymtp: asymmetric tensor parallelism for Apple Silicon clusters with uneven memory."""

from protocol.version import __version__

__all__ = ["__version__"]
