"""The shared backend on Redis (redis-py's asyncio client), for daemons on several hosts.

What it carries out for the core (``SharedOp`` effects): ``publish`` a message to every
daemon (``PUBLISH iii:pub:TOPIC``); ``once``, the claim that lets one daemon of the
cluster fire a binding for an event (``SET key NX PX``); and the state and stream
operations, each change made by a script that also tells every daemon of it
(``iii:changes``); and the durable queues' operations (``drivers/redis_queues.py``).
It listens for all of it (``PSUBSCRIBE iii:pub:*``, ``SUBSCRIBE iii:changes
iii:q-ready iii:q-purged``) and hands what comes to the core. The operations of one loop
turn go out in one pipeline, one pipeline at a time, so Redis runs them in order.

Redis going away never hangs a call: once it is known to be unreachable, shared
operations fail at once with ``backend_unavailable`` (the one that finds out waits at
most ``OP_TIMEOUT_S``); the outage is logged once, and its end once; a probe and the
listener reconnect with backoff. The URL is shown without its password everywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from iii_daemon.core.effects import SharedOp
from iii_daemon.core.errors import CallError, StartupError
from iii_daemon.core.unsettled import MISSING
from iii_daemon.drivers import redis_queues
from iii_daemon.drivers.links import Carrier
from iii_daemon.functions.update_ops import apply_ops, parse_ops
from iii_sdk.client.addresses import without_password

log = logging.getLogger("iii_daemon.drivers.shared_redis")

CHANNEL_PREFIX = "iii:pub:"
#: Where every daemon hears of changes to state and stream items (made by any of them).
CHANGES_CHANNEL = "iii:changes"
#: How often an update is tried again when another daemon changed the value meanwhile.
UPDATE_TRIES = 100
#: How long one operation may take before it counts as failed (and Redis as away).
OP_TIMEOUT_S = 2.0
#: The listener's reconnection backoff: from the first, doubling to the last.
RECONNECT_S = (0.2, 5.0)

# A value lives in a hash a scope: ``iii:state:SCOPE``, ``iii:stream:["NAME","GROUP"]``;
# the scopes that hold values in ``iii:state-scopes`` / ``iii:stream-scopes``. Each
# change and the event that tells of it happen in one script: atomic, and the events
# come in the order of the changes. Values travel as JSON text, made and read by
# msgspec; the scripts only paste them into the event.
#
# KEYS: the scope's hash, the scopes set, the channel. ARGV: key, new value, the scope
# as a member of the set, the change's id, scope and key as JSON, the value expected
# (SWAP_SCRIPT; '': none), the space ("state" or "stream").
_EVENT = """
local function event(kind, old, new)
  redis.call('PUBLISH', KEYS[3], '{"id":"' .. ARGV[4] .. '","space":"' .. ARGV[8] ..
    '","scope":' .. ARGV[5] .. ',"key":' .. ARGV[6] .. ',"kind":"' .. kind ..
    '","old":' .. (old or 'null') .. ',"new":' .. (new or 'null') .. '}')
end
"""
#: Set; returns the old value (nil: none).
SET_SCRIPT = _EVENT + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
event(old and 'updated' or 'created', old, ARGV[2])
return old
"""
#: Set only if the value is still ARGV[7]; returns 1 if it did.
SWAP_SCRIPT = _EVENT + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if (old or '') ~= ARGV[7] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
event(old and 'updated' or 'created', old, ARGV[2])
return 1
"""
#: Delete; returns the old value (nil: none, and nothing changed).
DELETE_SCRIPT = _EVENT + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return nil end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
event('deleted', old, nil)
return old
"""


#: The state scripts sent by their SHA1 (EVALSHA); the queues' are ``redis_queues.SHAS``.
SET_SHA = hashlib.sha1(SET_SCRIPT.encode()).hexdigest()
DELETE_SHA = hashlib.sha1(DELETE_SCRIPT.encode()).hexdigest()
#: Every script sent by its SHA1: loaded at start, and again when Redis forgot them.
_SCRIPTS = (SET_SCRIPT, DELETE_SCRIPT, *redis_queues.SCRIPTS.values())


class Change(msgspec.Struct):
    """A change to a state value or stream item, as the scripts tell every daemon."""

    id: str
    space: str
    scope: Any
    key: str
    kind: str
    old: Any = None
    new: Any = None


class Published(msgspec.Struct):
    id: str
    topic: str
    data: msgspec.Raw = msgspec.Raw(b"null")


class RedisShared:
    """The connection to Redis and what runs over it."""

    def __init__(self, hub: Carrier, url: str, password: str | None,
                 state: dict[str, Any]) -> None:
        self.hub = hub
        self.url = url
        self.describe = without_password(url)
        self._password = password
        #: ``engine::status``'s view of the backend (kind, url, state, since).
        self.state = state
        self._client: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._down_since: float | None = None
        self._swap: Any = None
        #: Operations of this loop turn, sent together at its end.
        self._batch: list[SharedOp] = []
        #: A pipeline is on its way to Redis (the next waits for it).
        self._sending = False

    # --- start and stop -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and check Redis answers; then listen.

        Raises:
            StartupError: Redis cannot be reached (one line, no password in it).
        """
        import redis.asyncio as redis

        try:
            self._client = redis.Redis.from_url(
                self.url, password=self._password, socket_connect_timeout=OP_TIMEOUT_S,
                socket_timeout=OP_TIMEOUT_S)
            await asyncio.wait_for(self._client.ping(), OP_TIMEOUT_S + 1)
        except Exception as exc:
            if self._client is not None:
                await self._client.aclose()
            raise StartupError(f"cannot reach Redis at {self.describe}: {_reason(exc)}"
                               ) from None
        # Awaited on its own, outside the pipelines (set and delete go in them, by SHA).
        self._swap = self._client.register_script(SWAP_SCRIPT)
        await self._load_scripts()
        await self._warn_without_aof()
        self.state.update(state="up", since=time.time())
        ready = asyncio.get_running_loop().create_future()
        self._listener = asyncio.get_running_loop().create_task(self._listen(ready))
        await asyncio.wait_for(ready, OP_TIMEOUT_S + 1)
        log.info("sharing pub/sub, state and streams through Redis at %s", self.describe)

    async def _warn_without_aof(self) -> None:
        """What a receipt means depends on Redis's own durability: say so once."""
        try:
            appendonly = (await self._client.config_get("appendonly")).get("appendonly")
        except Exception:  # CONFIG may be renamed or refused: nothing to say
            return
        if appendonly == "no":
            log.warning("Redis at %s runs without AOF (appendonly no): what it acknowledged "
                        "may be lost if it crashes; see the README (Several hosts)",
                        self.describe)

    async def close(self) -> None:
        """Give back what this daemon holds (other daemons take it at once), then
        disconnect."""
        given_back = [op for _, op in self.hub.router.shared_queues_released(time.monotonic())
                      if isinstance(op, SharedOp)]
        if given_back and self._down_since is None:
            try:  # nobody waits for the answers: the daemon is stopping
                await asyncio.wait_for(self._run_pipeline(given_back, [], last=False),
                                       OP_TIMEOUT_S)
            except Exception as exc:  # they come back after the visibility timeout
                log.warning("could not give %d held messages back to Redis: %s",
                            len(given_back), _reason(exc))
        if self._listener is not None:
            self._listener.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()

    # --- what the core asks -----------------------------------------------------------------

    def carry(self, op: SharedOp) -> None:
        """Run ``op``: the operations of one loop turn go to Redis together, in one
        pipeline (one round trip for many calls), one pipeline at a time so that Redis
        runs them in the order the core asked (a subscription before the enqueue that
        counts on it); what comes meanwhile goes with the next. An update, which reads
        before it writes, runs on its own."""
        if self._down_since is not None:  # known to be away: at once
            # Soon, not now: the hub is in the middle of delivering.
            asyncio.get_running_loop().call_soon(self._done, self._unreachable([op]))
            return
        if op.kind.endswith("_update"):
            self._start(self._run_update(op))
            return
        if not self._batch and not self._sending:
            asyncio.get_running_loop().call_soon(self._send_batch)
        self._batch.append(op)

    def _start(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _unreachable(self, ops: list[SharedOp]) -> list[tuple[SharedOp, Any, str | None]]:
        since = time.strftime("%H:%M:%S", time.localtime(self._down_since))
        return [(op, None, f"unreachable since {since}") for op in ops]

    def _send_batch(self) -> None:
        if self._sending or not self._batch:
            return
        batch, self._batch = self._batch, []
        if self._down_since is not None:  # found away while these waited: fail at once
            self._done(self._unreachable(batch))
            return
        self._sending = True
        self._start(self._run_batch_then_next(batch))

    async def _run_batch_then_next(self, batch: list[SharedOp]) -> None:
        try:
            await self._run_batch(batch)
        finally:
            self._sending = False
            self._send_batch()  # what came meanwhile

    async def _run_batch(self, batch: list[SharedOp]) -> None:
        outcomes: list[tuple[SharedOp, Any, str | None]] = []
        try:
            for attempt in (1, 2):
                batch = await self._run_pipeline(batch, outcomes, last=attempt == 2)
                if not batch:
                    break
                # Redis forgot our scripts (restarted, or SCRIPT FLUSH): they did not
                # run; load them and send those operations again.
                await self._load_scripts()
        except Exception as exc:
            self._went_down(exc)
            outcomes += [(op, None, _reason(exc)) for op in batch]
        finally:
            self._done(outcomes)  # every call gets its answer, whatever went wrong

    async def _run_pipeline(self, batch: list[SharedOp],
                            outcomes: list[tuple[SharedOp, Any, str | None]],
                            last: bool) -> list[SharedOp]:
        """Send ``batch`` in one pipeline, adding each outcome to ``outcomes``; return
        the operations that met a Redis without our scripts (unless ``last``)."""
        from redis.exceptions import NoScriptError

        pipe = self._client.pipeline(transaction=False)
        finishers = []
        for op in batch:
            try:
                finishers.append((op, self._queue(pipe, op)))
            except Exception as exc:  # a request we cannot make: that call fails alone
                outcomes.append((op, None, _reason(exc)))
        batch = [op for op, _ in finishers]  # what is left to answer, should this fail
        announced = redis_queues.announce(pipe, batch)
        replies = await asyncio.wait_for(pipe.execute(raise_on_error=False), OP_TIMEOUT_S)
        replies = replies[:len(replies) - announced]
        if len(replies) != len(finishers):  # never seen; but no call may go unanswered
            replies = [RuntimeError("Redis's replies do not match the requests")] * \
                len(finishers)
        again = []
        for (op, finish), reply in zip(finishers, replies, strict=True):
            if isinstance(reply, NoScriptError) and not last:
                again.append(op)
                continue
            try:
                if isinstance(reply, Exception):
                    raise reply
                outcomes.append((op, finish(reply), None))
            except Exception as exc:  # Redis refused it, or its reply makes no sense
                outcomes.append((op, None, _reason(exc)))
        return again

    async def _load_scripts(self) -> None:
        pipe = self._client.pipeline(transaction=False)  # one round trip for all
        for text in _SCRIPTS:
            pipe.script_load(text)
        await pipe.execute()

    async def _run_update(self, op: SharedOp) -> None:
        result: Any = None
        error: str | None = None
        try:
            result = await asyncio.wait_for(self._update(op.kind, op.args), OP_TIMEOUT_S)
        except Exception as exc:
            error = _reason(exc)
            self._went_down(exc)
        self._done([(op, result, error)])

    def _done(self, outcomes: list[tuple[SharedOp, Any, str | None]]) -> None:
        now = time.monotonic()
        for op, result, error in outcomes:
            self.hub.deliver(self.hub.router.shared_done(op.op_id, result, error, now))
        self.hub.flush()

    def _queue(self, pipe: Any, op: SharedOp) -> Callable[[Any], Any]:
        """Add ``op``'s command to ``pipe``; return what makes its result of the reply."""
        args = op.args
        if op.kind.startswith("queue_"):
            return redis_queues.command(pipe, op.kind, args)
        if op.kind == "publish":
            message = msgspec.json.encode({"id": args["id"], "topic": args["topic"],
                                           "data": args["data"]})
            pipe.publish(CHANNEL_PREFIX + args["topic"], message)
            return int
        if op.kind == "once":
            pipe.set(args["key"], 1, nx=True, px=args["ttl_ms"])
            return bool
        space, what = op.kind.split("_", 1)
        if space not in ("state", "stream"):
            raise ValueError(f"unknown shared operation {op.kind!r}")
        scopes = f"iii:{space}-scopes"
        if what == "groups":  # every scope holding values, as stored
            pipe.smembers(scopes)
            return lambda members: sorted(
                _value(m) if space == "stream" else m.decode() for m in members)
        where, _ = _place(space, args["scope"])
        if what == "list":
            pipe.hgetall(where)
            return lambda found: [_value(found[k]) for k in sorted(found)]
        key = args["key"]
        if what == "get":
            pipe.hget(where, key)
            return _old
        keys, about = _change(space, args["scope"], key)
        # By their hash: a Redis that forgot them (restarted) answers NOSCRIPT, and the
        # batch loads them and sends those operations again.
        if what == "set":
            pipe.evalsha(SET_SHA, len(keys), *keys, key, _json(args["value"]),
                         *about)
            return _old
        if what == "delete":
            pipe.evalsha(DELETE_SHA, len(keys), *keys, key, "", *about)
            return _old
        raise ValueError(f"unknown operation {op.kind!r}")

    async def _update(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """Read, run the ops (the same code as the embedded store), write if nobody
        wrote meanwhile; else again."""
        space = kind.split("_", 1)[0]
        where, _ = _place(space, args["scope"])
        key = args["key"]
        keys, about = _change(space, args["scope"], key)
        parsed = parse_ops(args["ops"])
        for _ in range(UPDATE_TRIES):
            raw = await self._client.hget(where, key)
            old = _old(raw)
            try:
                new, errors = apply_ops(old, parsed)
            except CallError as exc:
                return {"refused": [exc.code, exc.message]}
            swapped = await self._swap(
                keys=keys, args=[key, _json(new), *about[:4], raw or b"", space])
            if swapped:
                return {"old": old, "new": new, "errors": errors}
        raise RuntimeError(f"{where} {key!r}: changed by others {UPDATE_TRIES} times in a "
                           f"row")

    # --- what every daemon publishes ---------------------------------------------------------

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        delay = RECONNECT_S[0]
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                await pubsub.subscribe(CHANGES_CHANNEL, redis_queues.READY_CHANNEL,
                                       redis_queues.PURGED_CHANNEL)
                self._came_back()
                if not ready.done():
                    ready.set_result(None)
                delay = RECONNECT_S[0]
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        self._received(message["data"])
                    elif message.get("type") == "message":
                        self._heard(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._went_down(exc)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # the connection is gone already
                    log.debug("closing a dead subscription failed", exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    def _received(self, data: bytes) -> None:
        try:
            message = msgspec.json.decode(data, type=Published)
        except msgspec.DecodeError:
            log.warning("ignored a message on Redis that is not ours: %r", data[:200])
            return
        self.hub.deliver(self.hub.router.shared_published(
            message.id, message.topic, msgspec.json.decode(message.data), time.monotonic()))
        self.hub.flush()

    def _heard(self, channel: bytes, data: bytes) -> None:
        if channel == CHANGES_CHANNEL.encode():
            self._changed(data)
            return
        router, now = self.hub.router, time.monotonic()
        text = data.decode(errors="replace")
        if channel == redis_queues.READY_CHANNEL.encode():
            self.hub.deliver(router.shared_queue_announced(text, now))
        else:
            self.hub.deliver(router.shared_queue_purged(text, now))
        self.hub.flush()

    def _changed(self, data: bytes) -> None:
        try:
            change = msgspec.json.decode(data, type=Change)
        except msgspec.DecodeError:
            log.warning("ignored a change on Redis that is not ours: %r", data[:200])
            return
        self.hub.deliver(self.hub.router.shared_changed(
            change.id, change.space, change.scope, change.key, change.kind,
            change.old, change.new, time.monotonic()))
        self.hub.flush()

    # --- health ------------------------------------------------------------------------------

    def _went_down(self, exc: BaseException) -> None:
        """Redis is away, if ``exc`` says so (not for a refused command); a probe
        watches for its return."""
        if self._down_since is not None or not _is_outage(exc):
            return
        self._down_since = time.time()
        self._start(self._probe())
        self.state.update(state="down", since=self._down_since, error=_reason(exc))
        log.warning("Redis at %s is unreachable (%s): shared operations fail with "
                    "backend_unavailable until it is back", self.describe, _reason(exc))

    async def _probe(self) -> None:
        """Ping, with backoff, until Redis answers again."""
        delay = RECONNECT_S[0]
        while self._down_since is not None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])
            try:
                await asyncio.wait_for(self._client.ping(), OP_TIMEOUT_S)
            except Exception:  # still away
                continue
            self._came_back()

    def _came_back(self) -> None:
        if self._down_since is None:
            return
        away = time.time() - self._down_since
        self._down_since = None
        self.state.update(state="up", since=time.time(), error=None)
        log.warning("Redis at %s is back after %.1f s", self.describe, away)


def _place(space: str, scope: Any) -> tuple[str, str]:
    """The hash of a scope, and the scope as a member of the space's set of scopes."""
    member = _json(scope).decode() if space == "stream" else str(scope)
    return f"iii:{space}:{member}", member


def _change(space: str, scope: Any, key: str) -> tuple[list[str], list[Any]]:
    """KEYS, and ARGV after key and value, of the scripts that change a value."""
    where, member = _place(space, scope)
    return ([where, f"iii:{space}-scopes", CHANGES_CHANNEL],
            [member, uuid.uuid4().hex, _json(scope), _json(key), "", space])


def _old(raw: bytes | None) -> Any:
    return MISSING if raw is None else _value(raw)


def _json(value: Any) -> bytes:
    return msgspec.json.encode(value)


def _value(raw: bytes) -> Any:
    return msgspec.json.decode(raw)


def _is_outage(exc: BaseException) -> bool:
    """A lost or refused connection, or no answer in time: Redis is away."""
    from redis.exceptions import ConnectionError as LostConnection
    from redis.exceptions import TimeoutError as NoAnswer

    return isinstance(exc, LostConnection | NoAnswer | TimeoutError | OSError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {OP_TIMEOUT_S:g} s"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
