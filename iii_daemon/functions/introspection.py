"""The ``engine::*`` listings, in the shapes the upstream engine answers with (tools
written for it read them unchanged), our own fields kept as extra keys.

- ``engine::functions::list {include_internal?}`` -> ``{functions: [...]}``; the daemon's
  own ``engine::*`` functions only with ``include_internal``.
- ``engine::workers::list`` -> ``{workers: [...]}``.
- ``engine::triggers::list {trigger_type?, worker?, search?}`` -> ``{triggers: [...]}``:
  trigger types, the built-in ones always.
- ``engine::registered-triggers::list {trigger_type?, function_id?, worker?, search?,
  include_internal?}`` -> ``{registered_triggers: [...]}``.

``worker`` is a worker's name or id; ``search`` is a case-insensitive substring of
the ids, descriptions and config summaries shown. What is the daemon's own has
``worker_name`` ``"daemon"``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from iii_daemon.core.builtin import field
from iii_daemon.core.triggers.http import segments

if TYPE_CHECKING:
    from iii_daemon.core.builtin import CallContext, Services
    from iii_daemon.core.registry import Connection

INTERNAL_PREFIX = "engine::"
DAEMON = "daemon"
SUMMARY_CHARS = 80


def _options(ctx: CallContext, *names: str) -> dict[str, Any]:
    """The optional string filters of a listing (and ``include_internal``)."""
    data = ctx.data if ctx.data is not None else {}
    chosen = {name: field(data, name, str, optional=True) for name in names}
    chosen["include_internal"] = field(data, "include_internal", bool, optional=True)
    return chosen


def _name_of(conn: Connection | None) -> str | None:
    if conn is None:
        return None
    name = conn.info.get("name")
    return name if isinstance(name, str) else None


def _is_worker(wanted: str | None, name: str | None, worker_id: str | None) -> bool:
    return wanted is None or wanted in (name, worker_id)


def _matches(wanted: str | None, *values: Any) -> bool:
    if wanted is None:
        return True
    needle = wanted.lower()
    return any(isinstance(v, str) and needle in v.lower() for v in values)


def list_functions(services: Services, ctx: CallContext) -> Any:
    include_internal = _options(ctx)["include_internal"]
    functions: list[dict[str, Any]] = [
        {"function_id": b.id, "description": b.description, "request_format": None,
         "response_format": None, "metadata": None, "worker_name": DAEMON,
         "worker_id": None}
        for b in services.builtins.values()
        if include_internal or not b.id.startswith(INTERNAL_PREFIX)
    ]
    connections = services.registry.connections
    for entry in services.registry.functions.values():
        owner = connections[entry.owner]
        row = {
            "function_id": entry.id,
            "description": entry.description,
            "request_format": entry.request_format,
            "response_format": entry.response_format,
            "metadata": entry.metadata,
            "worker_name": _name_of(owner) or owner.worker_id,
            "worker_id": owner.worker_id,
        }
        if entry.invocation is not None:  # an HTTP-invoked function: where it is called
            row["invocation"] = {"url": entry.invocation.url,
                                 "method": entry.invocation.method}
        functions.append(row)
    grants = ctx.conn.grants if ctx.conn is not None else None
    if grants is not None:  # an RBAC worker sees what it may call, nothing more
        own = ctx.conn.functions if ctx.conn is not None else set()
        functions = [f for f in functions if grants.refusal(
            f["function_id"], f["metadata"], f["function_id"] in own) is None]
    functions.sort(key=lambda f: f["function_id"])
    return {"functions": functions}


def list_workers(services: Services, ctx: CallContext) -> Any:
    workers = []
    for worker in services.registry.connections.values():
        if not worker.is_worker:
            continue
        info = worker.info
        functions = sorted(worker.functions)
        workers.append({
            "id": worker.worker_id,
            "name": info.get("name"),
            "status": "connected",
            "function_count": len(functions),
            "functions": functions,
            "connected_at_ms": worker.connected_at_ms,
            "active_invocations": len(worker.serving),
            "runtime": info.get("runtime"),
            "version": info.get("version"),
            "pid": info.get("pid"),
            "os": info.get("os"),
            "transport": worker.transport,
            "connected_at": worker.connected_at,
            "managed": worker.managed,
            "managed_status": None if worker.managed is None or services.supervisor is None
            else _managed_status(services, worker.managed),
        })
    return {"workers": workers}


def _managed_status(services: Services, name: str) -> str | None:
    assert services.supervisor is not None
    managed = services.supervisor.workers.get(name)
    if managed is None:
        return None
    return str(services.supervisor.row(managed, services.clock().now)["status"])


def _worker_of(services: Services, worker_id: str | None) -> tuple[str | None, str | None]:
    """``(worker_name, worker_id)`` of an owner or provider (``"daemon"``: ours)."""
    if worker_id in (None, DAEMON):
        return (DAEMON if worker_id == DAEMON else None), worker_id
    conn = services.registry.by_worker_id.get(worker_id)
    return _name_of(conn) or worker_id, worker_id


def list_trigger_types(services: Services, ctx: CallContext) -> Any:
    wanted = _options(ctx, "trigger_type", "worker", "search")
    rows = []
    for row in services.triggers.describe_types():
        name, worker_id = _worker_of(services, row["provider"])
        if wanted["trigger_type"] not in (None, row["id"]) or \
                not _is_worker(wanted["worker"], name, worker_id) or \
                not _matches(wanted["search"], row["id"], row["description"]):
            continue
        rows.append({"id": row["id"], "worker_name": name, "description": row["description"],
                     "provider": row["provider"], "trigger_count": row["triggers"]})
    return {"triggers": rows}


def config_summary(trigger_type: str, config: Any) -> str:
    """A binding's config in a few words: what people look for first in each type."""
    if not isinstance(config, dict):
        return ""
    if trigger_type == "cron" and isinstance(config.get("expression"), str):
        return str(config["expression"])
    if trigger_type == "http" and isinstance(config.get("api_path"), str):
        method = str(config.get("http_method") or "GET").upper()
        return f"{method} /{'/'.join(segments(config['api_path']))}"
    parts = {"state": ("scope", "key"), "stream": ("stream_name", "group_id", "item_id"),
             "subscribe": ("topic",), "queue": ("topic",)}.get(trigger_type)
    if parts:
        shown = [str(config[p]) for p in parts if config.get(p) is not None]
        if shown:
            return "/".join(shown)
    text = json.dumps({k: v for k, v in config.items() if k != "condition_function_id"},
                      separators=(",", ":"), default=str)
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS - 1] + "…"


def list_registered_triggers(services: Services, ctx: CallContext) -> Any:
    wanted = _options(ctx, "trigger_type", "function_id", "worker", "search")
    triggers = services.triggers
    http = services.info.get("listeners", {}).get("http", {})
    rows = []
    for binding in sorted(triggers.bindings.values(), key=lambda b: b.id):
        row = triggers.describe(binding)
        if not wanted["include_internal"] and row["function_id"].startswith(INTERNAL_PREFIX):
            continue
        name, _ = _worker_of(services, row["owner"])
        row["worker_name"] = name
        row["config_summary"] = config_summary(row["trigger_type"], row["config"])
        if wanted["trigger_type"] not in (None, row["trigger_type"]) or \
                wanted["function_id"] not in (None, row["function_id"]) or \
                not _is_worker(wanted["worker"], name, row["owner"]) or \
                not _matches(wanted["search"], row["id"], row["function_id"],
                             row["trigger_type"], row["config_summary"]):
            continue
        api_path = row["config"].get("api_path") if row["trigger_type"] == "http" else None
        if http.get("state") == "on" and isinstance(api_path, str):
            row["url"] = f"{http['url']}/{'/'.join(segments(api_path))}"  # where it answers
        rows.append(row)
    return {"registered_triggers": rows}
