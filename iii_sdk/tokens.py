"""The ``Authorization`` header every WebSocket client of ours sends when ``III_TOKEN``
is set (the worker link, channel ends, watchers, the CLI). Imports only ``os``: the
CLI's fast path uses it."""

from __future__ import annotations

import os


def with_token(headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus ``Authorization: Bearer $III_TOKEN`` when the variable is set
    and not blank; an Authorization header already there (any case) wins."""
    result = dict(headers or {})
    token = os.environ.get("III_TOKEN", "").strip()
    if token and not any(name.lower() == "authorization" for name in result):
        result["Authorization"] = f"Bearer {token}"
    return result
