"""The wire messages of protocol.md as typed structs, and their NDJSON encoding.

Every message is a msgspec struct tagged by its ``type`` field. Payload fields
(``data``, ``result``, ``metadata``) are kept as :class:`msgspec.Raw` so the daemon
passes them through without decoding or re-encoding them. Unknown fields are ignored;
anything else that does not fit raises :class:`~iii_sdk.errors.ProtocolError`.
"""

from __future__ import annotations

import re
from typing import Any, Final, Union

import msgspec
from msgspec import Raw, Struct

from iii_sdk.errors import ProtocolError

#: The JSON ``null`` as a raw payload; also the "absent" default of payload fields.
NULL: Final = Raw(b"null")



class Message(Struct, tag_field="type", omit_defaults=True, kw_only=True):
    """Base of every wire message; the subclass's tag is its ``type``."""


class ErrorBody(Struct, omit_defaults=True, kw_only=True):
    """An error object: ``{code, message, stacktrace?}``."""

    code: str
    message: str
    stacktrace: str | None = None


def error_body(error: Any, code_if_malformed: str = "invocation_failed") -> ErrorBody:
    """The ``error`` of a message as an :class:`ErrorBody`.

    Messages carry ``error`` untyped, so that a peer's malformed error object costs that
    one answer (it becomes an error with ``code_if_malformed`` that shows what came)
    rather than the whole frame; everything past decoding uses this typed form.
    """
    if isinstance(error, ErrorBody):
        return error
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if isinstance(code, str) and isinstance(message, str):
            stack = error.get("stacktrace")
            return ErrorBody(code=code, message=message,
                             stacktrace=stack if isinstance(stack, str) else None)
    return ErrorBody(code=code_if_malformed, message=f"malformed error: {error!r}"[:1000])


# --- worker -> daemon -------------------------------------------------------------------


class RegisterFunction(Message, tag="registerfunction"):
    id: str
    description: str | None = None
    request_format: Any = None
    response_format: Any = None
    metadata: Any = None
    #: An HTTP-invoked function: ``{url, method?, timeout_ms?, headers?, auth?}``; the
    #: daemon calls the URL itself.
    invocation: Any = None
    #: How its observers are delivered (observe.v1): ``{delivery?: "auto"|"owner",
    #: args_format?: JSON Schema of the observers' args, allow?: false}``.
    observe: Any = None


class UnregisterFunction(Message, tag="unregisterfunction"):
    id: str


class InvokeFunction(Message, tag="invokefunction"):
    """A call. Sent by callers to the daemon and by the daemon to the serving worker."""

    function_id: str
    data: Raw = NULL
    invocation_id: str | None = None
    action: dict[str, Any] | None = None
    timeout_ms: int | None = None
    metadata: Raw = NULL
    traceparent: str | None = None
    baggage: str | None = None
    #: Who the call is made from, as the calling SDK asserts it (``function_id``,
    #: ``invocation_id``, ``parent``); untyped, read leniently (observe.v1).
    caller: Any = None
    #: Observe hops that led to this call; the daemon's loop guard reads it (observe.v1).
    observe_depth: Any = None
    #: On a call the daemon makes to an observer's target: ``{observer_id, activation_id}``.
    activation: dict[str, Any] | None = None


class InvocationResult(Message, tag="invocationresult"):
    """The answer to a call; ``error`` wins over ``result`` when both are present."""

    invocation_id: str
    function_id: str | None = None
    result: Raw = NULL
    #: Untyped on the wire; read it with :func:`error_body`.
    error: Any = None
    traceparent: str | None = None
    baggage: str | None = None


class RegisterTrigger(Message, tag="registertrigger"):
    id: str
    trigger_type: str
    function_id: str
    config: dict[str, Any] = {}
    metadata: Any = None


class UnregisterTrigger(Message, tag="unregistertrigger"):
    id: str
    trigger_type: str | None = None
    function_id: str | None = None
    config: Any = None
    metadata: Any = None


class RegisterTriggerType(Message, tag="registertriggertype"):
    id: str
    description: str = ""
    trigger_request_format: Any = None
    call_request_format: Any = None


class UnregisterTriggerType(Message, tag="unregistertriggertype"):
    id: str


class TriggerRegistrationResult(Message, tag="triggerregistrationresult"):
    id: str
    trigger_type: str
    function_id: str
    error: Any = None


class RegisterActionType(Message, tag="registeractiontype"):
    """(extension) This connection provides the TriggerAction ``id``."""

    id: str
    function_id: str
    description: str | None = None


class Watch(Message, tag="watch"):
    """(extension) Stream daemon events to this connection: ``filter`` is
    ``{function?, kinds?, errors?}``; ``replay`` recent events come first (default 100)."""

    filter: Any = None
    replay: int | None = None


class Ping(Message, tag="ping"):
    pass


class ObserveSource(Struct, omit_defaults=True, kw_only=True):
    """``observe.source``: the observed function and what of its calls reaches the target."""

    function_id: str
    namespace: str | None = None
    args: Any = None
    filters: Any = None
    capture: Any = None
    on: Any = None
    deliver: Any = None


class ObserveTarget(Struct, omit_defaults=True, kw_only=True):
    function_id: str
    namespace: str | None = None


class Observe(Message, tag="observe"):
    """Create an observer owned by this connection, or replay one (same id): every
    finished call of ``source.function_id`` that passes its filters calls ``target``."""

    id: str
    source: ObserveSource
    target: ObserveTarget
    metadata: Any = None
    max_fires: Any = None
    expires_in_ms: Any = None
    max_in_flight: Any = None


class Unobserve(Message, tag="unobserve"):
    id: str


class Reattach(Message, tag="reattach"):
    """First frame of a reconnecting worker: retire what its previous connection owns."""

    previous_worker_id: str
    reattach_token: str | None = None


class ObserverAck(Message, tag="observerack"):
    """(observe.v1) The owner of a function accepts an observer of it (``revision`` of
    its ``observeradded`` or ``functionregistered``), or refuses it with ``error``."""

    function_id: str
    id: str
    revision: int = 0
    namespace: str | None = None
    error: Any = None


class InvocationsObserved(Message, tag="invocationsobserved"):
    """(observe.v1) What an owner hands its observers: calls of its functions it ran
    in-process (local dispatch) and ``obs.emit`` events, each naming the observers it
    ``matched``; the daemon activates their targets."""

    items: list[Any] = []


class LocalInvocationStats(Message, tag="localinvocationstats"):
    """(observe.v1) Counts of the calls a worker ran in-process since its last report."""

    window_ms: int = 0
    functions: list[Any] = []
    dropped_reports: list[Any] = []


# --- daemon -> worker -------------------------------------------------------------------


class WorkerRegistered(Message, tag="workerregistered"):
    worker_id: str
    reattach_token: str
    #: What the daemon supports (``observe.v1``).
    features: list[str] | None = None


class ObserveResult(Message, tag="observeresult"):
    """The answer to ``observe`` (and to its replays): the observer's state now."""

    id: str
    state: str
    error: ErrorBody | None = None
    warnings: list[str] | None = None


class ObserverStateChanged(Message, tag="observerstatechanged"):
    """An observer's state changed (to its owner): ``fires`` so far, ``reason`` why."""

    id: str
    state: str
    reason: ErrorBody | None = None
    fires: int = 0


class ObserverInfo(Struct, omit_defaults=False, kw_only=True):
    """An observer as the owner of its source function sees it (never its metadata,
    policy or worker)."""

    id: str
    args: Any
    filters: Any
    target: str
    capture: list[str]
    on: str


class FunctionRegistered(Message, tag="functionregistered"):
    """(observe.v1) A function of this connection is registered: the observers it has
    now, and whether its owner may call it in-process (local dispatch)."""

    id: str
    #: Always sent: every function lives in this daemon's one namespace.
    namespace: str
    revision: int = 0
    local_dispatch: bool = False
    observers: list[ObserverInfo] = []


class ObserverAdded(Message, tag="observeradded"):
    """(observe.v1) An observer of one of this connection's functions; its owner
    answers ``observerack``."""

    function_id: str
    namespace: str
    revision: int
    observer: ObserverInfo


class ObserverRemoved(Message, tag="observerremoved"):
    function_id: str
    namespace: str
    revision: int
    id: str


class RegistrationRejected(Message, tag="registrationrejected"):
    code: str
    function_id: str
    owner_worker_id: str | None
    message: str


class Event(Message, tag="event"):
    """(extension) A daemon event sent to watchers."""

    event: str
    data: Any = None


class Error(Message, tag="error"):
    """(extension) A problem with a frame that is not a call; the connection stays open.

    ``request_type`` / ``request_id`` name the registration it refuses, when it does
    (so an SDK can mark that handle as refused)."""

    code: str
    message: str
    request_type: str | None = None
    request_id: str | None = None


class Pong(Message, tag="pong"):
    pass


AnyMessage = Union[  # noqa: UP007 - msgspec needs a real Union object here
    RegisterFunction,
    UnregisterFunction,
    InvokeFunction,
    InvocationResult,
    RegisterTrigger,
    UnregisterTrigger,
    RegisterTriggerType,
    UnregisterTriggerType,
    TriggerRegistrationResult,
    RegisterActionType,
    Watch,
    Ping,
    Reattach,
    Observe,
    Unobserve,
    ObserverAck,
    InvocationsObserved,
    LocalInvocationStats,
    WorkerRegistered,
    ObserveResult,
    ObserverStateChanged,
    FunctionRegistered,
    ObserverAdded,
    ObserverRemoved,
    RegistrationRejected,
    Event,
    Error,
    Pong,
]

_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyMessage)
_encoder = msgspec.json.Encoder()


def decode(frame: bytes | bytearray | memoryview) -> Message:
    """Decode one frame (without its newline).

    Raises:
        ProtocolError: the frame is not UTF-8 JSON, not an object, nested too deeply,
            has an unknown ``type``, misses a required field or has a field of the wrong
            JSON type.
    """
    # Payloads pass through undecoded (Raw), so msgspec would not look at their bytes:
    # check UTF-8 here, where the frame enters, before it can reach a WebSocket peer.
    if not (frame.isascii() if not isinstance(frame, memoryview) else bytes(frame).isascii()):
        try:
            bytes(frame).decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"frame is not valid UTF-8 (byte {exc.start})") from None
    try:
        message: Message = _decoder.decode(frame)
    except msgspec.DecodeError as exc:
        raise ProtocolError(str(exc)) from None
    except RecursionError:  # msgspec bounds nesting by the interpreter's recursion limit
        raise ProtocolError("frame is nested too deeply") from None
    return message


def encode(message: Message) -> bytes:
    """One frame, newline included."""
    buf = bytearray()
    _encoder.encode_into(message, buf)
    buf.append(10)
    return bytes(buf)


def encode_into(message: Message, buf: bytearray) -> None:
    """Append one frame, newline included, to ``buf`` (the daemon's batched writes)."""
    _encoder.encode_into(message, buf, -1)
    buf.append(10)


def to_raw(value: Any) -> Raw:
    """A Python value as a raw JSON payload.

    Raises:
        TypeError: the value cannot be encoded as JSON.
    """
    if value is None:
        return NULL
    try:
        return Raw(_encoder.encode(value))
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"not JSON serialisable: {exc}") from None


def from_raw(raw: Raw) -> Any:
    """A raw JSON payload as a Python value."""
    return msgspec.json.decode(raw)


def loads_object(frame: bytes | bytearray | memoryview) -> dict[str, Any] | None:
    """The frame as a plain JSON object, or None; used to salvage a bad call's id."""
    text = bytes(frame).decode(errors="replace")  # invalid UTF-8 may be why it is here
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    except RecursionError:
        # Too deep to parse: find the routing fields by their text (best effort; they
        # are the sender's own ids either way), so a call still gets its answer.
        found = {key: match.group(1) for key in _SALVAGED
                 if (match := re.search(f'"{key}"\\s*:\\s*"([^"\\\\]*)"', text))}
        return found or None
    return value if isinstance(value, dict) else None


_SALVAGED = ("type", "invocation_id", "function_id")
