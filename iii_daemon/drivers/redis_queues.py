"""Durable queues on Redis Streams: what the ``queue_*`` operations of
``core/shared_queues.py`` do in Redis, each one atomic (a Lua script).

The layout, every key under ``iii:q``:

- a *lane* (one queue, one function; ``LEN:QUEUEFUNCTION``, unambiguous without
  parsing) is a stream ``iii:q:LANE`` read through the consumer group ``iii``, one
  consumer per daemon start; the lanes are listed in ``iii:q-lanes``;
- a message waiting for its time, or dead, is a hash ``iii:qm:ID``, indexed by
  ``iii:q-delayed`` (score: due, ms) or ``iii:q-dead:QUEUE`` (score: failed, ms);
- the attempts of a message a daemon holds for its retry are in ``iii:q-att``;
- counters (delayed, dead and delivered per lane) are in ``iii:q-counts``;
- who consumes a topic (``iii:q-subs:TOPIC``: trigger id -> ``EXPIRY|FUNCTION``) and what
  each daemon serves (``iii:q-serves:CONSUMER``, the live ones in ``iii:q-daemons``) are
  renewed by every daemon each tick and expire;
- a fifo lane is read by one daemon at a time: the holder of ``iii:q-lease:LANE``.

A message added to a lane is announced on ``iii:q-ready`` (the lane), so the daemons
that serve it take it at once; a purge on ``iii:q-purged`` (the queue).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

from iii_daemon.core.effects import SharedOp
from iii_daemon.core.shared_queues import lane_key

READY_CHANNEL = "iii:q-ready"
PURGED_CHANNEL = "iii:q-purged"

#: The message's fields, in the order they are kept (a stream entry, a hash).
FIELDS = ("fn", "trigger", "id", "queue", "data", "attempts", "enq", "err", "route")

_PRELUDE = """
local FIELDS = {'fn', 'trigger', 'id', 'queue', 'data', 'attempts', 'enq', 'err', 'route'}
local function lane_of(queue, fn) return string.len(queue) .. ':' .. queue .. fn end
local function stream(lane) return 'iii:q:' .. lane end
local function tab(flat, from)
  local t = {}
  for i = from or 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
-- A message as the daemon sends it: its fields but data (msgpack), and its data.
local function given(header, data)
  local t = cmsgpack.unpack(header)
  t.data = data
  return t
end
local function flat(t)
  local f = {}
  for _, k in ipairs(FIELDS) do f[#f + 1] = k; f[#f + 1] = t[k] or '' end
  return f
end
-- quiet: the caller announces the lane itself (once for many messages).
local function add(lane, t, quiet)
  local key = stream(lane)
  if redis.call('EXISTS', key) == 0 then
    redis.call('XGROUP', 'CREATE', key, 'iii', '0', 'MKSTREAM')
  end
  redis.call('SADD', 'iii:q-lanes', lane)
  local id = redis.call('XADD', key, '*', unpack(flat(t)))
  if not quiet then redis.call('PUBLISH', 'iii:q-ready', lane) end
  return id
end
-- A topic message: one copy per function a live subscription names, else it waits
-- under the topic (function '') for the first consumer.
local function route(t, now)
  local subs_key = 'iii:q-subs:' .. t.queue
  local subs = redis.call('HGETALL', subs_key)
  local seen, copies = {}, 0
  for i = 1, #subs, 2 do
    local expiry, fn = string.match(subs[i + 1], '^(%d+)|(.*)$')
    if expiry == nil or tonumber(expiry) < now then
      redis.call('HDEL', subs_key, subs[i])
    elseif not seen[fn] then
      seen[fn] = true
      copies = copies + 1
      local copy = {}
      for k, v in pairs(t) do copy[k] = v end
      copy.fn, copy.trigger = fn, subs[i]
      if copies > 1 then copy.id = t.id .. '.' .. copies end
      add(lane_of(t.queue, fn), copy)
    end
  end
  if copies == 0 then
    t.fn, t.trigger = '', ''
    add(lane_of(t.queue, ''), t)
    copies = 1
  end
  return copies
end
-- Messages that waited under a topic for a consumer go to fn's lane (limit at most).
local function adopt(topic, trigger, fn, limit)
  local waiting = stream(lane_of(topic, ''))
  if redis.call('EXISTS', waiting) == 0 then return 0 end
  local moved = 0
  for _, entry in ipairs(redis.call('XRANGE', waiting, '-', '+', 'COUNT', limit)) do
    local t = tab(entry[2])
    t.fn, t.trigger = fn, trigger
    add(lane_of(topic, fn), t)
    redis.call('XDEL', waiting, entry[1])
    moved = moved + 1
  end
  return moved
end
local function count(what, lane, by)
  redis.call('HINCRBY', 'iii:q-counts', what .. ':' .. lane, by)
end
-- The functions some live daemon serves (each keeps its set, renewed every tick).
local function serving(now)
  redis.call('ZREMRANGEBYSCORE', 'iii:q-daemons', '-inf', now)
  local keys = {}
  for _, c in ipairs(redis.call('ZRANGE', 'iii:q-daemons', 0, -1)) do
    keys[#keys + 1] = 'iii:q-serves:' .. c
  end
  if #keys == 0 then return {} end
  return redis.call('SUNION', unpack(keys))
end
local function served(fn, now)
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', 'iii:q-daemons', now, '+inf')) do
    if redis.call('SISMEMBER', 'iii:q-serves:' .. c, fn) == 1 then return 1 end
  end
  return 0
end
local function gone(lane, entries)
  local key = stream(lane)
  local n = redis.call('XACK', key, 'iii', unpack(entries))
  redis.call('XDEL', key, unpack(entries))
  for _, entry in ipairs(entries) do redis.call('HDEL', 'iii:q-att', lane .. ' ' .. entry) end
  return n
end
"""

#: ARGV: due (ms), now (ms), the message (header, data). A message for now goes to its
#: lane (or, a topic message, to its subscribers' lanes); one for later waits in
#: ``iii:q-delayed``.
#: Returns 1 if a live daemon serves the message's function (a topic message: 1). A
#: message for now of one function is not announced here: :func:`announce` does, once
#: a lane for all those of a pipeline.
PUT = _PRELUDE + """
local due, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = given(ARGV[3], ARGV[4])
if due > now then
  redis.call('HSET', 'iii:qm:' .. t.id, unpack(flat(t)))
  redis.call('ZADD', 'iii:q-delayed', due, t.id)
  count('delayed', lane_of(t.queue, t.fn), 1)
  redis.call('SADD', 'iii:q-lanes', lane_of(t.queue, t.fn))
elseif t.route == '1' then
  route(t, now)
else
  add(lane_of(t.queue, t.fn), t, true)  -- announced by the pipeline that carries it
end
if t.route == '1' then return 1 end
return served(t.fn, now)
"""

#: ARGV: lane, consumer, count, min idle (ms), lease (ms; 0: not fifo), cursor.
#: Entries idle past the visibility timeout (their daemon died) first, then new ones;
#: a fifo lane only for the holder of its lease, and no new ones while others hold
#: some (the order of a group). Returns {next cursor, {{entry, fields, attempts}...}}.
TAKE = _PRELUDE + """
local lane, me, want, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
local key = stream(lane)
if redis.call('EXISTS', key) == 0 then return {ARGV[6], {}} end
local others = false
if lease > 0 then
  local lease_key = 'iii:q-lease:' .. lane
  local holder = redis.call('GET', lease_key)
  if holder and holder ~= me then return {ARGV[6], {}} end
  redis.call('SET', lease_key, me, 'PX', lease)
  local summary = redis.call('XPENDING', key, 'iii')
  for _, row in ipairs(summary[4] or {}) do
    if row[1] ~= me and tonumber(row[2]) > 0 then others = true end
  end
end
local out = {}
local claimed = redis.call('XAUTOCLAIM', key, 'iii', me, ARGV[4], ARGV[6], 'COUNT', want)
for _, entry in ipairs(claimed[2]) do
  if entry and entry[2] then
    out[#out + 1] = {entry[1], entry[2], redis.call('HGET', 'iii:q-att', lane .. ' ' .. entry[1])}
  end
end
if not others and #out < want then
  local read = redis.call('XREADGROUP', 'GROUP', 'iii', me, 'COUNT', want - #out,
                          'STREAMS', key, '>')
  if read then
    for _, entry in ipairs(read[1][2]) do out[#out + 1] = {entry[1], entry[2], false} end
  end
end
return {claimed[1], out}
"""

#: ARGV: lane, '1' if dropped (a purge) else '0', the entries: done with them.
ACK = _PRELUDE + """
local n = gone(ARGV[1], {unpack(ARGV, 3)})
if ARGV[2] == '0' and n > 0 then count('delivered', ARGV[1], n) end
return n
"""

#: ARGV: lane, entry, failed at (ms), the message (header, data): a dead letter now.
DEAD = _PRELUDE + """
local t = given(ARGV[4], ARGV[5])
redis.call('HSET', 'iii:qm:' .. t.id, unpack(flat(t)))
redis.call('ZADD', 'iii:q-dead:' .. t.queue, ARGV[3], t.id)
count('dead', ARGV[1], 1)
gone(ARGV[1], {ARGV[2]})
return 1
"""

#: ARGV: lane, entry, the message (header, data): a held message goes back to its lane
#: for any daemon.
GIVE_BACK = _PRELUDE + """
local t = given(ARGV[3], ARGV[4])
gone(ARGV[1], {ARGV[2]})
add(ARGV[1], t)
return 1
"""

#: ARGV: topic, trigger id, function, expiry (ms): subscribe, and take over what waited
#: under the topic for a consumer (10 000 now; each tick moves more). Returns how many
#: were taken over.
ADOPT = _PRELUDE + """
redis.call('HSET', 'iii:q-subs:' .. ARGV[1], ARGV[2], ARGV[4] .. '|' .. ARGV[3])
return adopt(ARGV[1], ARGV[2], ARGV[3], 10000)
"""

#: ARGV[1]: JSON {c: consumer, now, hold: [[lane, [entries], lease ms]], subs: [[topic,
#: trigger, function]], functions?: [what it serves, when that changed], ttl}. Delayed
#: messages whose time came go to their lanes; the entries this daemon holds stay its
#: own (idle 0: nobody claims them) and its fifo leases stay; its subscriptions and the
#: functions it serves are renewed. Returns JSON {lanes, lost: {lane: [entries no
#: longer its own]}, queued, dead, serving: [functions some daemon serves], known:
#: whether the backend still has this daemon's functions}.
TICK = _PRELUDE + """
local a = cjson.decode(ARGV[1])
local now = a.now
for _, id in ipairs(redis.call('ZRANGEBYSCORE', 'iii:q-delayed', '-inf', now,
                               'LIMIT', 0, 1000)) do
  local t = tab(redis.call('HGETALL', 'iii:qm:' .. id))
  redis.call('ZREM', 'iii:q-delayed', id)
  redis.call('DEL', 'iii:qm:' .. id)
  if t.queue then
    count('delayed', lane_of(t.queue, t.fn), -1)
    if t.route == '1' then route(t, now) else add(lane_of(t.queue, t.fn), t) end
  end
end
local lost = {}
for _, held in ipairs(a.hold) do
  local lane, entries, lease = held[1], held[2], held[3]
  local key = stream(lane)
  if lease > 0 then
    local lease_key = 'iii:q-lease:' .. lane
    local holder = redis.call('GET', lease_key)
    if holder == a.c or not holder then redis.call('SET', lease_key, a.c, 'PX', lease) end
  end
  local mine, others = {}, {}
  for _, entry in ipairs(entries) do
    local found = redis.pcall('XPENDING', key, 'iii', entry, entry, 1, a.c)
    if type(found) == 'table' and found[1] then mine[#mine + 1] = entry
    else others[#others + 1] = entry end
  end
  if #mine > 0 then redis.call('XCLAIM', key, 'iii', a.c, 0, unpack(mine), 'JUSTID') end
  if #others > 0 then lost[lane] = others end
end
for _, sub in ipairs(a.subs) do
  redis.call('HSET', 'iii:q-subs:' .. sub[1], sub[2], (now + a.ttl) .. '|' .. sub[3])
  adopt(sub[1], sub[2], sub[3], 1000)  -- what waited (a delayed topic message, a backlog)
end
local mine = 'iii:q-serves:' .. a.c
if a.functions then
  redis.call('DEL', mine)
  if #a.functions > 0 then redis.call('SADD', mine, unpack(a.functions)) end
end
local known = redis.call('PEXPIRE', mine, a.ttl) == 1 or (a.functions and #a.functions == 0)
redis.call('ZADD', 'iii:q-daemons', now + a.ttl, a.c)
local lanes = redis.call('SMEMBERS', 'iii:q-lanes')
local queued = redis.call('ZCARD', 'iii:q-delayed')
for _, lane in ipairs(lanes) do queued = queued + redis.call('XLEN', stream(lane)) end
local dead, counts = 0, redis.call('HGETALL', 'iii:q-counts')
for i = 1, #counts, 2 do
  if string.sub(counts[i], 1, 5) == 'dead:' then dead = dead + tonumber(counts[i + 1]) end
end
return cjson.encode({lanes = lanes, lost = lost, queued = queued + dead, dead = dead,
                     serving = serving(now), known = known})
"""

#: ARGV: now (ms). Returns JSON {rows: [[lane, ready, held, delayed, dead, delivered]],
#: serving: [functions some live daemon serves]}.
LIST = _PRELUDE + """
local now = tonumber(ARGV[1])
local counts = tab(redis.call('HGETALL', 'iii:q-counts'))
local rows = {}
for _, lane in ipairs(redis.call('SMEMBERS', 'iii:q-lanes')) do
  local key = stream(lane)
  local ready, held = 0, 0
  if redis.call('EXISTS', key) == 1 then
    local length = redis.call('XLEN', key)
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local g = tab(group)
      if g.name == 'iii' then held = g.pending end
    end
    ready = length - held
  end
  rows[#rows + 1] = {lane, ready, held, tonumber(counts['delayed:' .. lane] or 0),
                     tonumber(counts['dead:' .. lane] or 0),
                     tonumber(counts['delivered:' .. lane] or 0)}
end
return cjson.encode({rows = rows, serving = serving(now)})
"""

#: ARGV: queue. Returns the dead letters' fields and failed-at times, oldest first.
DEAD_LETTERS = _PRELUDE + """
local out = {}
local found = redis.call('ZRANGE', 'iii:q-dead:' .. ARGV[1], 0, -1, 'WITHSCORES')
for i = 1, #found, 2 do
  out[#out + 1] = {redis.call('HGETALL', 'iii:qm:' .. found[i]), found[i + 1]}
end
return out
"""

#: ARGV: queue, message id ('': the oldest), limit (0: all). Dead letters go back to
#: their lanes, attempts reset. Returns {redriven, dead letters left}.
REDRIVE = _PRELUDE + """
local dead_key = 'iii:q-dead:' .. ARGV[1]
local limit = tonumber(ARGV[3])
local ids
if ARGV[2] ~= '' then
  ids = redis.call('ZSCORE', dead_key, ARGV[2]) and {ARGV[2]} or {}
else
  ids = redis.call('ZRANGE', dead_key, 0, limit > 0 and limit - 1 or -1)
end
for _, id in ipairs(ids) do
  local t = tab(redis.call('HGETALL', 'iii:qm:' .. id))
  redis.call('DEL', 'iii:qm:' .. id)
  redis.call('ZREM', dead_key, id)
  if t.queue then
    count('dead', lane_of(t.queue, t.fn), -1)
    t.attempts, t.err = '0', ''
    add(lane_of(t.queue, t.fn), t)
  end
end
return {#ids, redis.call('ZCARD', dead_key)}
"""

#: ARGV: queue, limit (0: all). Drops dead letters, then messages no daemon took yet,
#: then delayed ones; once none is left here, tells every daemon to drop those it holds
#: (not in flight). Returns {purged, left}.
PURGE = _PRELUDE + """
local queue, limit = ARGV[1], tonumber(ARGV[2])
local left = limit > 0 and limit or 1e15
local purged = 0
local dead_key = 'iii:q-dead:' .. queue
for _, id in ipairs(redis.call('ZRANGE', dead_key, 0, math.min(left, 1e9) - 1)) do
  local fn = redis.call('HGET', 'iii:qm:' .. id, 'fn') or ''
  redis.call('DEL', 'iii:qm:' .. id)
  redis.call('ZREM', dead_key, id)
  count('dead', lane_of(queue, fn), -1)
  purged, left = purged + 1, left - 1
end
local prefix = lane_of(queue, '')
local lanes = {}
for _, lane in ipairs(redis.call('SMEMBERS', 'iii:q-lanes')) do
  if string.sub(lane, 1, #prefix) == prefix then lanes[#lanes + 1] = lane end
end
for _, lane in ipairs(lanes) do
  local key = stream(lane)
  if left > 0 and redis.call('EXISTS', key) == 1 then
    local last = '0-0'
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local g = tab(group)
      if g.name == 'iii' then last = g['last-delivered-id'] end
    end
    local ids = {}
    for _, entry in ipairs(redis.call('XRANGE', key, '(' .. last, '+', 'COUNT',
                                      math.min(left, 100000))) do
      ids[#ids + 1] = entry[1]
    end
    for i = 1, #ids, 1000 do
      redis.call('XDEL', key, unpack(ids, i, math.min(i + 999, #ids)))
    end
    purged, left = purged + #ids, left - #ids
  end
end
if left > 0 then
  for _, id in ipairs(redis.call('ZRANGE', 'iii:q-delayed', 0, -1)) do
    if left <= 0 then break end
    local t = tab(redis.call('HGETALL', 'iii:qm:' .. id))
    if t.queue == queue then
      redis.call('ZREM', 'iii:q-delayed', id)
      redis.call('DEL', 'iii:qm:' .. id)
      count('delayed', lane_of(queue, t.fn), -1)
      purged, left = purged + 1, left - 1
    end
  end
end
local remaining = redis.call('ZCARD', dead_key)
for _, lane in ipairs(lanes) do
  remaining = remaining + redis.call('XLEN', stream(lane)) +
    tonumber(redis.call('HGET', 'iii:q-counts', 'delayed:' .. lane) or 0)
end
if left > 0 then redis.call('PUBLISH', 'iii:q-purged', queue) end
return {purged, remaining}
"""

SCRIPTS = {"queue_put": PUT, "queue_take": TAKE, "queue_ack": ACK, "queue_dead": DEAD,
           "queue_give_back": GIVE_BACK, "queue_adopt": ADOPT, "queue_tick": TICK,
           "queue_list": LIST, "queue_dlq": DEAD_LETTERS, "queue_redrive": REDRIVE,
           "queue_purge": PURGE}

#: Each script's SHA1, as Redis names it (EVALSHA: the script's text crosses once).
SHAS = {kind: hashlib.sha1(text.encode()).hexdigest() for kind, text in SCRIPTS.items()}


def given(message: dict[str, Any]) -> tuple[bytes, bytes]:
    """A message as the scripts take it: its fields but data in one msgpack map (all
    text: Redis's msgpack knows no binary), and its data. Two arguments instead of
    eighteen: packing each argument is most of what a pipeline costs redis-py."""
    header = {name: message[name] for name in FIELDS if name != "data"}
    header["err"] = header["err"].decode() if isinstance(header["err"], bytes) \
        else header["err"]
    return msgspec.msgpack.encode(header), message["data"]


def parse_fields(flat: list[bytes]) -> dict[str, bytes]:
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def announce(pipe: Any, ops: list[SharedOp]) -> int:
    """After the messages of a pipeline, one announcement a lane that got any for now
    (each daemon that hears one takes from the lane; one is enough); return how many
    commands that added."""
    lanes = {lane_key(m["queue"], m["fn"]) for op in ops if op.kind == "queue_put"
             for m in (op.args["message"],)
             if not m["route"] and op.args["due_ms"] <= op.args["now_ms"]}
    for lane in lanes:
        pipe.publish(READY_CHANNEL, lane)
    return len(lanes)


def command(pipe: Any, kind: str, args: dict[str, Any]) -> Callable[[Any], Any]:
    """Add the script that carries out ``kind`` to ``pipe``; return what makes its
    result of the reply."""
    if kind == "queue_attempt":  # one hash field: no script needed
        pipe.hset("iii:q-att", f"{args['lane']} {args['entry']}",
                  f"{args['attempts']}|".encode() + args["error"])
        return _same
    sha = SHAS.get(kind)
    if sha is None:
        raise ValueError(f"unknown queue operation {kind!r}")
    argv: list[Any]
    finish: Callable[[Any], Any] = _same
    if kind == "queue_put":
        argv = [args["due_ms"], args["now_ms"], *given(args["message"])]
        finish = int
    elif kind == "queue_take":
        argv = [args["lane"], args["consumer"], args["count"], args["min_idle_ms"],
                args["lease_ms"], args["cursor"]]
        finish = _taken
    elif kind == "queue_ack":
        argv = [args["lane"], "1" if args.get("dropped") else "0", *args["entries"]]
    elif kind == "queue_dead":
        argv = [args["lane"], args["entry"], args["failed_ms"], *given(args["message"])]
    elif kind == "queue_give_back":
        argv = [args["lane"], args["entry"], *given(args["message"])]
    elif kind == "queue_adopt":
        argv = [args["topic"], args["trigger"], args["function_id"], args["expiry_ms"]]
        finish = int
    elif kind == "queue_tick":
        argv = [msgspec.json.encode(args)]
        finish = msgspec.json.decode
    elif kind == "queue_list":
        argv = [args["now_ms"]]
        finish = msgspec.json.decode
    elif kind == "queue_dlq":
        argv = [args["queue"]]
        finish = _dead_letters
    elif kind == "queue_redrive":
        argv = [args["queue"], args.get("id") or "", args.get("limit") or 0]
        finish = _pair
    else:  # queue_purge
        argv = [args["queue"], args.get("limit") or 0]
        finish = _pair
    pipe.evalsha(sha, 0, *argv)
    return finish


def _same(reply: Any) -> Any:
    return reply


def _pair(reply: list[Any]) -> tuple[int, int]:
    return int(reply[0]), int(reply[1])


def _taken(reply: list[Any]) -> dict[str, Any]:
    cursor, entries = reply
    return {"cursor": cursor.decode(), "entries": [
        (entry.decode(), parse_fields(flat), attempts)
        for entry, flat, attempts in entries]}


def _dead_letters(reply: list[Any]) -> list[tuple[dict[str, bytes], float]]:
    return [(parse_fields(flat), float(failed)) for flat, failed in reply]
