"""Who is connected and what each connection serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iii_daemon.core.rbac import Grants


@dataclass(slots=True, eq=False)
class Connection:
    """One client link, whatever its transport. Everything it registers is owned by it."""

    id: int
    worker_id: str
    reattach_token: str
    transport: str
    connected_at: str
    connected_at_ms: int = 0
    #: What the worker said about itself through ``engine::workers::register``.
    info: dict[str, Any] = field(default_factory=dict)
    #: ``caller`` of its top-level calls (worker id and name), made once; None: not yet.
    caller_stamp: dict[str, Any] | None = None
    functions: set[str] = field(default_factory=set)
    action_types: set[str] = field(default_factory=set)
    #: Daemon invocation ids routed to this connection and not yet answered.
    serving: set[str] = field(default_factory=set)
    #: Daemon invocation ids this connection waits on.
    calling: set[str] = field(default_factory=set)
    #: The managed worker whose process made this connection, if one did.
    managed: str | None = None
    #: What it may do, when it came in through an RBAC listener (core/rbac.py); None:
    #: anything (the Unix socket, the main WebSocket listener).
    grants: Grants | None = None
    #: It declared ``observe.v1`` (``engine::workers::register`` features): it gets
    #: ``functionregistered`` and the observers of its functions, and acks them.
    observe_v1: bool = False
    #: It declared ``local-dispatch.v1``: it may run its own functions in-process.
    local_dispatch: bool = False

    @property
    def is_worker(self) -> bool:
        """A connection that registered something or introduced itself (the CLI does neither)."""
        return bool(self.info or self.functions or self.action_types)


@dataclass(slots=True, eq=False)
class FunctionEntry:
    id: str
    owner: int
    description: str | None = None
    request_format: Any = None
    response_format: Any = None
    metadata: Any = None
    #: An HTTP-invoked function's ``http_functions.Invocation`` (the daemon calls it).
    invocation: Any = None
    #: How its observers are delivered (``core/observer_owners.Descriptor``); None:
    #: by the daemon, with no args (auto).
    observe: Any = None
    #: Bumped with each change of its observer set told to its owner (observe.v1).
    revision: int = 0


@dataclass(slots=True, eq=False)
class ActionType:
    id: str
    owner: int
    function_id: str
    description: str | None = None


class Registry:
    """Connections, the functions they serve and the actions they provide."""

    def __init__(self) -> None:
        self.connections: dict[int, Connection] = {}
        self.by_worker_id: dict[str, Connection] = {}
        self.functions: dict[str, FunctionEntry] = {}
        self.actions: dict[str, ActionType] = {}

    def add_connection(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self.by_worker_id[conn.worker_id] = conn

    def remove_connection(self, conn_id: int) -> Connection | None:
        """Forget the connection and everything it owns; return it, or None if unknown."""
        conn = self.connections.pop(conn_id, None)
        if conn is None:
            return None
        del self.by_worker_id[conn.worker_id]
        for function_id in conn.functions:
            del self.functions[function_id]
        for action_id in conn.action_types:
            del self.actions[action_id]
        return conn

    def add_function(self, entry: FunctionEntry) -> None:
        self.functions[entry.id] = entry
        self.connections[entry.owner].functions.add(entry.id)

    def remove_function(self, conn: Connection, function_id: str) -> bool:
        entry = self.functions.get(function_id)
        if entry is None or entry.owner != conn.id:
            return False
        del self.functions[function_id]
        conn.functions.discard(function_id)
        return True

    def add_action(self, action: ActionType) -> None:
        self.actions[action.id] = action
        self.connections[action.owner].action_types.add(action.id)
