"""Colour only for a terminal that wants it (cli.md: NO_COLOR and non-TTY mean none).

Imports nothing but ``os``: the trigger fast path uses it too.
"""

from __future__ import annotations

import os
from typing import TextIO


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


def error_prefix(stream: TextIO) -> str:
    """``iii: `` in red where colour is wanted."""
    return "\x1b[31miii:\x1b[0m " if use_color(stream) else "iii: "
