"""What the core hands its driver: messages for connections, and commands. Kept apart
from the router so that trigger types and daemon functions can name it without
importing the router (no import circle)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iii_daemon.core.writes import Write
    from iii_sdk import protocol as p
    from iii_sdk.worker_specs import WorkerSpec


@dataclass(frozen=True, slots=True)
class Close:
    """Driver command: close this connection (after writing what came before)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Emit:
    """Driver command: an event happened (an invocation finished, a trigger fired or
    was skipped, a worker joined or left, ...). The driver sends it to every watcher
    that wants it, or (``to``) to that one watcher only (a replay), as an ``event``
    frame; what does not fit a watcher's buffer is dropped and counted. ``event`` is a
    dict, or an ``event_log.Finished`` made into one (``.event()``) when it is sent."""

    event: Any
    to: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The event as the watcher gets it."""
        made: dict[str, Any] = self.event if type(self.event) is dict else self.event.event()
        return made


@dataclass(frozen=True, slots=True)
class HttpReply:
    """Driver command: answer HTTP request ``request_id``. Either the daemon's own
    ``status`` with a JSON ``body`` (404, 422, 500, ...), or (``status`` None) the
    function's ``result`` for the listener to turn into a response, unless the function
    wrote one to the request's response channel."""

    request_id: int
    status: int | None = None
    body: Any = None
    result: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HttpCall:
    """Driver command: call an HTTP-invoked function (``http_functions.Invocation``)
    with ``payload`` (JSON), then hand the outcome to ``Router.http_answered`` with
    ``invocation_id``."""

    invocation_id: str
    invocation: Any
    payload: bytes
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Spawn:
    """Driver command: start ``spec`` in a process group of its own, then tell the core
    (``Router.process_spawned`` or ``process_failed``); managed workers,
    ``core/supervision.py``."""

    spec: WorkerSpec


@dataclass(frozen=True, slots=True)
class Kill:
    """Driver command: send ``signal`` (``TERM`` or ``KILL``) to the process group of
    ``pid`` (the worker ``name`` started)."""

    name: str
    pid: int
    signal: str


@dataclass(frozen=True, slots=True)
class LogNote:
    """Driver command: a line in the worker's log between its own output (a start, an
    exit and what follows)."""

    name: str
    text: str


@dataclass(slots=True)
class Authenticated:
    """Driver command: a listener's auth function decided about a connection
    (``Router.authenticate(request_id, ...)``): what it is granted (an RBAC worker's
    grants, a stream client's context), or why it is refused."""

    request_id: int
    verdict: Any
    refusal: str | None


@dataclass(frozen=True, slots=True)
class StreamPush:
    """Driver command: send each frame (JSON text) to its stream-socket client, in
    order (core/stream_joining.py): ``(client id, frame)`` pairs, one command for a
    change however many clients it reaches."""

    frames: list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class SharedOp:
    """Driver command: run ``kind`` (``publish``, ``once``) with ``args`` on the shared
    backend, then hand the outcome to ``Router.shared_done(op_id, ...)``
    (``core/shared.py``)."""

    op_id: int
    kind: str
    args: dict[str, Any]


#: What the core runs once a :class:`Persist` landed: ``then(failure, out)``, where
#: ``failure`` is None when the writes committed, else why they did not.
AfterCommit = Callable[["str | None", "Output"], None]


@dataclass(slots=True, eq=False)
class Persist:
    """Driver command: commit ``writes`` (in one transaction, maybe together with others
    queued at the same time), then hand this effect back to the core
    (``Router.persisted``), which answers the call that made the change only then.
    Everything put out after it waits as well, so answers leave in the order they were
    made and nobody hears of a change before it is on disk."""

    writes: tuple[Write, ...]
    then: AfterCommit
    #: Set by the store writer before ``done``: None when committed, else why not.
    failure: str | None = None
    done: bool = False


#: The connection id of :class:`Emit` and :class:`Persist` effects: they belong to no
#: connection.
EVENTS = 0

#: ``(connection id, message or command)`` pairs, in the order they must happen.
Output = list[tuple[int, "p.Message | Close | Emit | Persist | HttpReply | HttpCall | Spawn | Kill "
                         "| LogNote | SharedOp | Authenticated | StreamPush"]]
