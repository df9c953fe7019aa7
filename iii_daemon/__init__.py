"""The iii daemon: one process that owns the registry and routes every call."""

from iii_sdk.version import __version__ as __version__
