"""asymtp: asymmetric tensor parallelism for Apple Silicon clusters with uneven memory."""

__version__ = "0.1.0"
