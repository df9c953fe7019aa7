"""A bridge to another iii engine (``[bridge]``): this daemon attaches to the other
engine's worker listener as a worker named ``service_id``, over the ordinary protocol.

Inside this daemon the bridge is one more connection (:class:`BridgeLink`) that serves
the forwarded names (``forward``; ``bridge.invoke``, ``bridge.invoke_async``; on a bridged
backend, ``state::*`` and ``stream::*``): a call routed to it goes to the other engine
under its remote name, and its answer comes back unchanged. On the other engine the
bridge serves the exposed functions (``expose``), while a worker here serves them:
a call from there is routed here like any call, and nothing else is callable from
there. With state or streams on the bridge, a trigger there tells the bridge of each
change, and this daemon's ``state`` and ``stream`` triggers fire for it.

The link going down never hangs a call: what needs it fails at once with
``bridge_unavailable`` naming the URL; it reconnects with backoff and registers again
what it exposes; the outage is logged once, and its end once. The token (``Authorization:
Bearer``) is never logged or shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgspec import Raw

from iii_daemon.core.router_state import make_error
from iii_sdk import protocol as p
from iii_sdk.client.addresses import without_password
from iii_sdk.error_codes import ErrorCode
from iii_sdk.errors import ProtocolError
from iii_sdk.ws_sender import OrderedSender

if TYPE_CHECKING:
    from iii_daemon.drivers.hub import Hub
    from iii_sdk.bridge_specs import BridgeSpec

log = logging.getLogger("iii_daemon.drivers.bridge")

#: Reconnection backoff: from the first, doubling to the last.
RECONNECT_S = (0.2, 5.0)
#: How often what is exposed there, and the triggers it needs there, are brought in line
#: with what this daemon serves and binds.
SYNC_S = 0.1
#: How long connecting (TCP, TLS, handshake) may take.
OPEN_TIMEOUT_S = 5.0
#: How long a starting daemon waits for the first try to connect before it answers on
#: its socket (a call right after ``iii daemon start`` finds the bridge up; an engine
#: that refuses is known at once, one that does not answer delays the start this much).
START_WAIT_S = 2.0
#: Calls from the other engine to exposed functions in flight at once; past that they
#: are refused (the other engine cannot make this daemon hold without bound).
MAX_CALLS_IN = 10_000
#: Distinct warnings about what the other engine sends that are logged (it cannot fill
#: the log: each is logged once, and past this many, none).
MAX_WARNINGS = 100
#: The daemon functions the bridge serves here, as the upstream engine names them.
INVOKE = "bridge.invoke"
INVOKE_ASYNC = "bridge.invoke_async"
#: What a bridged backend forwards (to the same names there).
STATE_FUNCTIONS = ("state::get", "state::set", "state::delete", "state::update",
                   "state::list", "state::list_groups")
STREAM_FUNCTIONS = ("stream::get", "stream::set", "stream::delete", "stream::update",
                    "stream::list", "stream::list_groups", "stream::list_all", "stream::send")


@dataclass(slots=True)
class _Forwarded:
    """A call made here, on its way to the other engine."""

    invocation_id: str
    function_id: str
    timer: asyncio.TimerHandle


class BridgeLink:
    """The bridge as this daemon's hub sees it: a connection whose output is read here."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.conn_id = 0

    def write(self, data: bytes | bytearray) -> None:
        for line in bytes(data).split(b"\n"):
            if line:
                try:
                    message = p.decode(line)
                except ProtocolError as exc:  # never seen: the hub wrote it
                    self.bridge.warn_once(f"a frame for the bridge did not decode: {exc}")
                    continue
                self.bridge.from_router(message)

    def write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass  # nothing is read: what comes from the other engine is bounded there

    def resume_reading(self) -> None:
        pass

    def close(self, restarting: bool = False) -> None:
        pass  # the daemon stops; Bridge.close ends the link

    def abort(self) -> None:
        pass


class Bridge:
    def __init__(self, hub: Hub, spec: BridgeSpec, token: str | None, max_frame_bytes: int,
                 status: dict[str, Any], state_bridged: bool, streams_bridged: bool) -> None:
        self.hub = hub
        self.spec = spec
        self.url = without_password(spec.url)
        self._token = token
        self._max_frame_bytes = max_frame_bytes
        #: ``engine::status``'s view of the bridge.
        self.status = status
        self._state_bridged = state_bridged
        self._streams_bridged = streams_bridged
        self._forwards = {link.local_function: link for link in spec.forward}
        self._exposed = {link.remote_function: link.local_function for link in spec.expose}
        #: The function there that this daemon's change triggers there call.
        self._changed = f"bridge::{spec.service_id}::changed"
        self.link = BridgeLink(self)
        self._sender: OrderedSender | None = None
        self._ids = itertools.count(1)
        #: Calls made here, by the id they carry there.
        self._out: dict[str, _Forwarded] = {}
        #: Calls from there, by the id they carry here: (their id there, remote name).
        self._in: dict[str, tuple[str, str]] = {}
        #: What is registered there on this connection: exposed names, trigger ids.
        self._registered: set[str] = set()
        self._triggers: set[str] = set()
        self._down_since: float | None = time.time()
        self._was_up = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Set once the first try to connect succeeded or failed.
        self._tried = asyncio.Event()
        self._warned: set[str] = set()

    # --- start and stop -------------------------------------------------------------------

    def start(self) -> None:
        """Attach to the hub, serve the forwarded names here, and connect (in the
        background: a daemon starts whether the other engine is up or not)."""
        hub = self.hub
        hub.attach(self.link, "bridge")
        served = [*self._forwards, INVOKE, INVOKE_ASYNC,
                  *(STATE_FUNCTIONS if self._state_bridged else ()),
                  *(STREAM_FUNCTIONS if self._streams_bridged else ())]
        frames = [p.encode(p.RegisterFunction(id=function_id, description=self._about(
            function_id))) for function_id in served]
        frames.append(p.encode(p.InvokeFunction(
            function_id="engine::workers::register", action={"type": "void"},
            data=p.to_raw({"name": f"bridge to {self.url}", "runtime": "bridge"}))))
        hub.receive(self.link.conn_id, frames)
        self.status.update(url=self.url, service_id=self.spec.service_id, state="connecting",
                           since=time.time(), expose=sorted(self._exposed.values()),
                           forward=sorted(self._forwards))
        loop = hub.loop
        self._tasks = [loop.create_task(self._connect_loop()), loop.create_task(self._sync_loop())]

    async def first_try(self) -> None:
        """Wait (``START_WAIT_S`` at most) for the first try to connect to end."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), START_WAIT_S)

    def _about(self, function_id: str) -> str:
        link = self._forwards.get(function_id)
        remote = link.remote_function if link is not None else function_id
        return f"{remote} on {self.url} (bridge)"

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.hub.detach(self.link.conn_id)

    # --- this daemon -> there ---------------------------------------------------------------

    def warn_once(self, text: str) -> None:
        if text not in self._warned and len(self._warned) < MAX_WARNINGS:
            self._warned.add(text)
            log.warning("bridge to %s: %s", self.url, text[:500])

    def from_router(self, message: p.Message) -> None:
        """What this daemon sends the bridge's connection: calls to forward, answers to
        calls that came from there."""
        if isinstance(message, p.InvokeFunction):
            self._forward(message)
        elif isinstance(message, p.InvocationResult):
            came = self._in.pop(message.invocation_id, None)
            if came is not None and self._sender is not None:
                their_id, remote = came
                self._send(p.InvocationResult(invocation_id=their_id, function_id=remote,
                                              result=message.result, error=message.error))
        elif isinstance(message, p.RegistrationRejected | p.Error):
            self.warn_once(f"this daemon refused the bridge: {message.message}")

    def _forward(self, call: p.InvokeFunction) -> None:
        target, data, timeout_ms = self._target(call)
        if target is None:
            return
        if self._sender is None:
            since = time.strftime("%H:%M:%S", time.localtime(self._down_since or time.time()))
            self._answer(call, error=make_error(
                ErrorCode.BRIDGE_UNAVAILABLE, f"the bridge to {self.url} is down (since "
                                              f"{since})"))
            return
        if call.function_id == INVOKE_ASYNC:
            self._send(p.InvokeFunction(function_id=target, data=data))
            self._answer(call, result=p.NULL)
            return
        their_id = None
        if call.invocation_id is not None:
            their_id = f"b{next(self._ids)}"
            # Every call waiting here ends: at its timeout, else the daemon's call timeout.
            limit = timeout_ms or self.hub.router.call_timeout_ms
            timer = self.hub.loop.call_later(limit / 1000, self._timed_out, their_id, limit)
            self._out[their_id] = _Forwarded(call.invocation_id, call.function_id, timer)
        self._send(p.InvokeFunction(function_id=target, data=data, invocation_id=their_id,
                                    timeout_ms=timeout_ms, metadata=call.metadata,
                                    traceparent=call.traceparent, baggage=call.baggage))

    def _target(self, call: p.InvokeFunction) -> tuple[str | None, Raw, int | None]:
        """The function there, its data and its timeout; None (answered) if the call
        cannot go."""
        timeout_ms = call.timeout_ms
        if call.function_id in (INVOKE, INVOKE_ASYNC):
            args = p.from_raw(call.data)
            target = args.get("function_id") if isinstance(args, dict) else None
            wanted = args.get("timeout_ms") if isinstance(args, dict) else None
            if not isinstance(target, str) or not target:
                self._answer(call, error=make_error(
                    ErrorCode.BAD_REQUEST, f"{call.function_id} needs {{function_id, data, "
                                           f"timeout_ms?}}"))
                return None, p.NULL, None
            if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > 0:
                timeout_ms = wanted
            return target, p.to_raw(args.get("data")), timeout_ms
        link = self._forwards.get(call.function_id)
        if link is not None:
            return link.remote_function, call.data, link.timeout_ms or timeout_ms
        return call.function_id, call.data, timeout_ms  # state::*, stream::*: same name

    def _timed_out(self, their_id: str, timeout_ms: int) -> None:
        forwarded = self._out.pop(their_id, None)
        if forwarded is not None:
            self._to_router(p.InvocationResult(
                invocation_id=forwarded.invocation_id, function_id=forwarded.function_id,
                error=make_error(ErrorCode.TIMEOUT, f"invocation of '{forwarded.function_id}' "
                                                    f"timed out after {timeout_ms} ms")))

    def _answer(self, call: p.InvokeFunction, result: Raw = p.NULL,
                error: p.ErrorBody | None = None) -> None:
        if call.invocation_id is not None:
            self._to_router(p.InvocationResult(invocation_id=call.invocation_id,
                                               function_id=call.function_id, result=result,
                                               error=error))

    def _to_router(self, message: p.Message) -> None:
        """Into this daemon, as the bridge's connection sent it (soon: the hub may be in
        the middle of writing to the bridge)."""
        self.hub.loop.call_soon(self.hub.receive, self.link.conn_id, [p.encode(message)])

    def _send(self, message: p.Message) -> None:
        if self._sender is not None:
            self._sender.push(p.encode(message).decode())

    # --- there -> this daemon ---------------------------------------------------------------

    def _from_remote(self, text: str | bytes) -> None:
        try:
            message = p.decode(text.encode() if isinstance(text, str) else text)
        except ProtocolError as exc:
            self.warn_once(f"a frame from it did not decode ({exc}); ignored")
            return
        if isinstance(message, p.InvocationResult):
            forwarded = self._out.pop(message.invocation_id, None)
            if forwarded is not None:
                forwarded.timer.cancel()
                self.hub.receive(self.link.conn_id, [p.encode(p.InvocationResult(
                    invocation_id=forwarded.invocation_id, function_id=forwarded.function_id,
                    result=message.result, error=message.error))])
        elif isinstance(message, p.InvokeFunction):
            self._called(message)
        elif isinstance(message, p.RegistrationRejected | p.Error):
            self.warn_once(f"it refused a registration: {message.message}")

    def _called(self, call: p.InvokeFunction) -> None:
        """A call from there: a change its triggers report, or an exposed function."""
        if call.function_id == self._changed:
            event = p.from_raw(call.data)
            if isinstance(event, dict):
                self.hub.deliver(self.hub.router.bridged_change(event, time.monotonic()))
                self.hub.flush()
            self._reply(call, p.NULL, None)
            return
        local = self._exposed.get(call.function_id)
        if local is None or call.function_id not in self._registered:
            self._reply(call, p.NULL, make_error(
                ErrorCode.FUNCTION_NOT_FOUND, f"function '{call.function_id}' is not exposed "
                                              f"by this bridge"))
            return
        our_id = None
        if call.invocation_id is not None:
            if len(self._in) >= MAX_CALLS_IN:
                self._reply(call, p.NULL, make_error(
                    ErrorCode.WORKER_BUSY, f"the bridge has {MAX_CALLS_IN} calls in flight"))
                return
            our_id = f"x{next(self._ids)}"
            self._in[our_id] = (call.invocation_id, call.function_id)
        self.hub.receive(self.link.conn_id, [p.encode(p.InvokeFunction(
            function_id=local, data=call.data, invocation_id=our_id, timeout_ms=call.timeout_ms,
            metadata=call.metadata, traceparent=call.traceparent, baggage=call.baggage))])

    def _reply(self, call: p.InvokeFunction, result: Raw, error: p.ErrorBody | None) -> None:
        if call.invocation_id is not None:
            self._send(p.InvocationResult(invocation_id=call.invocation_id,
                                          function_id=call.function_id, result=result,
                                          error=error))

    # --- the connection ---------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        delay = RECONNECT_S[0]
        while True:
            reason = "closed"
            try:
                async with connect(self.spec.url, additional_headers=headers,
                                   max_size=2 * self._max_frame_bytes,
                                   open_timeout=OPEN_TIMEOUT_S, compression=None) as ws:
                    sender = OrderedSender(ws)
                    sending = asyncio.get_running_loop().create_task(sender.run())
                    try:
                        self._up(sender)
                        delay = RECONNECT_S[0]
                        async for text in ws:
                            self._from_remote(text)
                    finally:
                        sending.cancel()
            except asyncio.CancelledError:
                self._down("the daemon is stopping", quiet=True)
                raise
            except Exception as exc:  # refused, unreachable, dropped, a bad handshake
                reason = _reason(exc)
            self._down(reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    def _up(self, sender: OrderedSender) -> None:
        self._sender = sender
        self._registered.clear()
        self._triggers.clear()
        away = time.time() - (self._down_since or time.time())
        if self._was_up:
            log.warning("the bridge to %s is back after %.1f s", self.url, away)
        else:
            log.info("bridged to %s as %s", self.url, self.spec.service_id)
        self._was_up = True
        self._down_since = None
        self.status.update(state="up", since=time.time(), error=None)
        self._tried.set()
        self._send(p.InvokeFunction(function_id="engine::workers::register",
                                    action={"type": "void"}, data=p.to_raw({
                                        "name": self.spec.service_id, "runtime": "iii-bridge"})))
        if self._state_bridged or self._streams_bridged:
            self._send(p.RegisterFunction(id=self._changed, description=(
                f"tells {self.spec.service_id} of state and stream changes")))
        self._sync()

    def _down(self, reason: str, quiet: bool = False) -> None:
        """The link is gone (or never came): every call waiting for it fails now."""
        was_connected = self._sender is not None
        self._sender = None
        self._in.clear()  # their answers have nowhere to go
        waiting, self._out = self._out, {}
        for forwarded in waiting.values():
            forwarded.timer.cancel()
            self.hub.receive(self.link.conn_id, [p.encode(p.InvocationResult(
                invocation_id=forwarded.invocation_id, function_id=forwarded.function_id,
                error=make_error(ErrorCode.BRIDGE_UNAVAILABLE,
                                 f"the bridge to {self.url} went down: {reason}")))])
        if quiet:
            return
        if was_connected:  # an outage: logged once, and its end once (_up)
            self._down_since = time.time()
            log.warning("the bridge to %s is down (%s); calls that need it fail with "
                        "bridge_unavailable until it is back", self.url, reason)
        elif self.status.get("state") == "connecting":  # never up since the start
            log.warning("cannot reach %s for the bridge (%s); trying again", self.url, reason)
        self.status.update(state="down", since=self._down_since, error=reason)
        self._tried.set()

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            if self._sender is not None:
                self._sync()

    def _sync(self) -> None:
        """Expose there what a worker serves here now (and no more), and keep there the
        change triggers this daemon's bindings need."""
        router = self.hub.router
        serving = router.registry.functions
        wanted = {remote for remote, local in self._exposed.items()
                  if local in serving or local in router.builtins}
        for remote in sorted(wanted - self._registered):
            self._send(p.RegisterFunction(id=remote, description=(
                f"{self._exposed[remote]} on {self.spec.service_id} (bridge)")))
        for remote in sorted(self._registered - wanted):
            self._send(p.UnregisterFunction(id=remote))
        self._registered = wanted
        triggers: dict[str, tuple[str, dict[str, Any]]] = {}
        for binding in router.triggers.bindings.values():
            if binding.trigger_type == "state" and self._state_bridged:
                triggers[f"bridge:{self.spec.service_id}:state"] = ("state", {})
            elif binding.trigger_type == "stream" and self._streams_bridged:
                name = binding.config.get("stream_name")
                triggers[f"bridge:{self.spec.service_id}:stream:{name}"] = (
                    "stream", {"stream_name": name})
        for trigger_id in sorted(set(triggers) - self._triggers):
            trigger_type, config = triggers[trigger_id]
            self._send(p.RegisterTrigger(id=trigger_id, trigger_type=trigger_type,
                                         function_id=self._changed, config=config))
        for trigger_id in sorted(self._triggers - set(triggers)):
            self._send(p.UnregisterTrigger(id=trigger_id))
        self._triggers = set(triggers)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {OPEN_TIMEOUT_S:g} s"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
