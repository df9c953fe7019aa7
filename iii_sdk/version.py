"""The version of the iii packages (one place; the SDK reports it to the daemon)."""

__version__ = "0.1.0"
