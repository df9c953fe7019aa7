"""``http``: serve a function as an HTTP endpoint, as the upstream engine does.

Config ``{api_path, http_method?, timeout_ms?}``: ``api_path`` with or without a leading
slash, ``:name`` segments are path parameters (``orders/:id``); ``http_method`` defaults
to GET; ``timeout_ms`` (default 30 000) bounds the call. Routes come and go with their
triggers. One route per method and path shape: ``orders/:id`` and ``orders/:oid`` are the
same route, and a second trigger for it is refused.

The type fires nothing by itself: the HTTP listener asks :meth:`HttpType.match` for the
binding of each request, and the router calls its function and answers the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iii_daemon.core.triggers.base import ACTIVE, ERROR, Binding, Clock, require_string

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 3_600_000


def segments(api_path: str) -> list[str]:
    """``/orders/:id/`` -> ``["orders", ":id"]`` (the root is ``[]``)."""
    return [part for part in api_path.strip().strip("/").split("/") if part]


def method_of(config: dict[str, Any]) -> str:
    method = config.get("http_method")
    return method.upper() if isinstance(method, str) else "GET"


@dataclass(slots=True, eq=False)
class _Node:
    static: dict[str, _Node] = field(default_factory=dict)
    #: The child for a ``:name`` segment (names belong to the bindings, not the node).
    param: _Node | None = None
    #: Method -> the binding serving it here.
    methods: dict[str, Binding] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Match:
    binding: Binding
    path_params: dict[str, str]


@dataclass(frozen=True, slots=True)
class WrongMethod:
    """The path exists, not for this method."""

    allowed: tuple[str, ...]


class HttpType:
    id: str = "http"
    description: str = "serves a function as an HTTP endpoint (api_path, http_method)"
    owner: int | None = None
    #: Requests to one route run concurrently; the listener bounds what it accepts.
    max_running: int = 100_000

    def __init__(self) -> None:
        self._root = _Node()

    # --- TriggerType ----------------------------------------------------------------------

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        problem = require_string(config, "api_path")
        if problem:
            return problem
        method = config.get("http_method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            return f"config.http_method must be one of {', '.join(METHODS)}, got {method!r}"
        for part in segments(config["api_path"]):
            if part == ":" or (part.startswith(":") and not part[1:].isidentifier()):
                return f"config.api_path: {part!r} is not a parameter name (':id')"
            if "?" in part or "#" in part:
                return "config.api_path must be a path, without a query or fragment"
        chain = config.get("middleware_function_ids")
        if chain is not None and (not isinstance(chain, list) or not all(
                isinstance(f, str) and f for f in chain)):
            return "config.middleware_function_ids must be a list of function ids"
        timeout = config.get("timeout_ms")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                    or not 0 < timeout <= MAX_TIMEOUT_MS):
            return f"config.timeout_ms must be a whole number from 1 to {MAX_TIMEOUT_MS}"
        return None

    def conflict(self, binding: Binding) -> str | None:
        """Why ``binding`` cannot be bound (another trigger serves its route), or None.
        A binding with the same id (being replaced) is no conflict."""
        node = self._node(binding.config["api_path"], create=False)
        method = method_of(binding.config)
        taken = node.methods.get(method) if node is not None else None
        if taken is None or taken.id == binding.id:
            return None
        return (f"{method} /{'/'.join(segments(taken.config['api_path']))} is already "
                f"served by trigger '{taken.id}' (-> {taken.function_id})")

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        problem = self.conflict(binding)
        if problem:  # only a stored trigger gets here with one: registration refuses it
            binding.error = problem
            return ERROR
        node = self._node(binding.config["api_path"], create=True)
        assert node is not None
        node.methods[method_of(binding.config)] = binding
        return ACTIVE

    def unbind(self, binding: Binding, out: Output) -> None:
        node = self._node(binding.config["api_path"], create=False)
        method = method_of(binding.config)
        if node is not None and node.methods.get(method) is binding:
            del node.methods[method]
        # Empty nodes stay: a few bytes per path ever served, and lookups skip them.

    # --- requests -------------------------------------------------------------------------

    def match(self, method: str, path: str) -> Match | WrongMethod | None:
        """The binding serving ``method path`` with its path parameters; WrongMethod
        when the path is served for other methods only; None when nothing serves it."""
        parts = segments(path)
        found = _find(self._root, parts, 0, [])
        if found is None:
            return None
        node, values = found
        binding = node.methods.get(method.upper())
        if binding is None:
            return WrongMethod(tuple(sorted(node.methods)))
        names = [part[1:] for part in segments(binding.config["api_path"])
                 if part.startswith(":")]
        return Match(binding, dict(zip(names, values, strict=True)))

    def _node(self, api_path: str, create: bool) -> _Node | None:
        node = self._root
        for part in segments(api_path):
            if part.startswith(":"):
                if node.param is None:
                    if not create:
                        return None
                    node.param = _Node()
                node = node.param
            else:
                child = node.static.get(part)
                if child is None:
                    if not create:
                        return None
                    child = node.static[part] = _Node()
                node = child
        return node


def _find(node: _Node, parts: list[str], index: int,
          values: list[str]) -> tuple[_Node, list[str]] | None:
    """The node for ``parts[index:]`` below ``node`` that serves some method, static
    segments before parameters (``orders/new`` wins over ``orders/:id``)."""
    if index == len(parts):
        return (node, values) if node.methods else None
    child = node.static.get(parts[index])
    if child is not None:
        found = _find(child, parts, index + 1, values)
        if found is not None:
            return found
    if node.param is not None:
        return _find(node.param, parts, index + 1, [*values, parts[index]])
    return None
