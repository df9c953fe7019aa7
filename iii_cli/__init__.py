"""The ``iii`` command line."""
