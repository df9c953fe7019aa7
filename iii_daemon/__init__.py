"""The iii daemon: one process that owns the registry and routes every call."""

__version__ = "0.1.0"
