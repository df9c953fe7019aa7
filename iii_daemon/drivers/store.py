"""The daemon's one store: SQLite in WAL mode (stdlib sqlite3).

Holds what must survive a restart: daemon-owned triggers, state values, stream items
and queued messages. The core never calls it: the daemon reads everything once at
start-up (:meth:`Store.load`) and the store writer (its own thread) applies the core's
writes in batches (:meth:`Store.apply`), one transaction each. WAL with ``synchronous=NORMAL`` keeps
committed data through a killed daemon (power loss may lose the last moments; queues,
which promise more, will use ``FULL`` for their own writes).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from iii_daemon.core.errors import StoreError
from iii_daemon.core.writes import (
    DropMessage,
    DropState,
    DropStreamItem,
    DropTrigger,
    PutMessage,
    PutState,
    PutStreamItem,
    PutTrigger,
    Stored,
    StoredTrigger,
    Write,
)

log = logging.getLogger("iii_daemon")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers (
    id TEXT PRIMARY KEY,
    trigger_type TEXT NOT NULL,
    function_id TEXT NOT NULL,
    config TEXT NOT NULL,
    metadata TEXT
);
CREATE TABLE IF NOT EXISTS state (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS stream_items (
    stream_name TEXT NOT NULL,
    group_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (stream_name, group_id, item_id)
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    function_id TEXT NOT NULL,
    data BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    available_at REAL NOT NULL,
    enqueued_at REAL NOT NULL,
    grp TEXT,
    last_error TEXT,
    dead INTEGER NOT NULL,
    trigger_id TEXT
);
"""



def _stored_trigger(row: tuple[Any, ...]) -> StoredTrigger:
    trigger_id, trigger_type, function_id = (v if isinstance(v, str) else str(v)
                                             for v in row[:3])
    trigger = StoredTrigger(trigger_id, trigger_type, function_id, config=None, metadata=None)
    for name, text in (("config", row[3]), ("metadata", row[4])):
        if text is None and name == "metadata":
            continue
        try:
            setattr(trigger, name, json.loads(text))
        except (TypeError, ValueError, RecursionError) as exc:
            trigger.problem = f"stored {name} is not valid JSON ({exc}): {str(text)[:80]!r}"
    return trigger


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


@dataclass(frozen=True, slots=True)
class _Statement:
    """How a run of writes of one kind goes into SQLite: ``head`` + one ``row`` per
    write joined by commas + ``tail``, with ``params`` of each write in order."""

    head: str
    row: str
    tail: str
    params: Callable[[Any], tuple[Any, ...]]


#: Each kind of write, as one statement for many writes.
_STATEMENTS: dict[type, _Statement] = {
    PutState: _Statement("INSERT OR REPLACE INTO state VALUES ", "(?,?,?)", "",
                         lambda w: (w.scope, w.key, json.dumps(w.value))),
    DropState: _Statement("DELETE FROM state WHERE (scope, key) IN (VALUES ", "(?,?)", ")",
                          lambda w: (w.scope, w.key)),
    PutStreamItem: _Statement("INSERT OR REPLACE INTO stream_items VALUES ", "(?,?,?,?)", "",
                              lambda w: (w.stream_name, w.group_id, w.item_id,
                                         json.dumps(w.value))),
    DropStreamItem: _Statement(
        "DELETE FROM stream_items WHERE (stream_name, group_id, item_id) IN (VALUES ",
        "(?,?,?)", ")", lambda w: (w.stream_name, w.group_id, w.item_id)),
    PutTrigger: _Statement("INSERT OR REPLACE INTO triggers VALUES ", "(?,?,?,?,?)", "",
                           lambda w: (w.id, w.trigger_type, w.function_id,
                                      json.dumps(w.config), _json_or_none(w.metadata))),
    DropTrigger: _Statement("DELETE FROM triggers WHERE id IN (", "?", ")",
                            lambda w: (w.id,)),
    # An update (a retry, a dead letter) keeps the row and its place in the order.
    PutMessage: _Statement(
        "INSERT INTO messages (id, queue, function_id, data, attempts, available_at, "
        "enqueued_at, grp, last_error, dead, trigger_id) VALUES ", "(?,?,?,?,?,?,?,?,?,?,?)",
        " ON CONFLICT(id) DO UPDATE SET attempts = excluded.attempts, "
        "available_at = excluded.available_at, last_error = excluded.last_error, "
        "dead = excluded.dead, function_id = excluded.function_id, "
        "trigger_id = excluded.trigger_id, grp = excluded.grp",
        lambda m: (m.id, m.queue, m.function_id, m.data, m.attempts, m.available_at,
                   m.enqueued_at, m.group, _json_or_none(m.last_error), int(m.dead),
                   m.trigger_id)),
    DropMessage: _Statement("DELETE FROM messages WHERE id IN (", "?", ")",
                            lambda w: (w.id,)),
}

#: Writes per statement (at most 11 parameters each; SQLite allows 32 766).
_WRITES_PER_STATEMENT = 500


def _write_run(db: sqlite3.Connection, statement: _Statement, run: list[Any]) -> None:
    """Writes of one kind in as few statements as fit: one step into SQLite each, so the
    writer thread gives up and takes back the GIL once per statement, not once per
    write (executemany would, and wait for the event loop's thread every time)."""
    for first in range(0, len(run), _WRITES_PER_STATEMENT):
        chunk = run[first:first + _WRITES_PER_STATEMENT]
        params: list[Any] = []
        for write in chunk:
            params += statement.params(write)
        db.execute(statement.head + ",".join([statement.row] * len(chunk)) + statement.tail,
                   params)


def _stored_message(row: tuple[Any, ...]) -> PutMessage:
    """A message row; one whose last error is unreadable keeps the rest."""
    try:
        last_error = None if row[8] is None else json.loads(row[8])
    except (TypeError, ValueError, RecursionError):
        last_error = {"code": "unknown", "message": str(row[8])[:200]}
    data = row[3] if isinstance(row[3], bytes) else str(row[3]).encode()
    return PutMessage(id=str(row[0]), queue=str(row[1]), function_id=str(row[2]), data=data,
                      attempts=int(row[4]), available_at=float(row[5]),
                      enqueued_at=float(row[6]), group=row[7], last_error=last_error,
                      dead=bool(row[9]), trigger_id=row[10])


def _checked_json(text: Any) -> str | bytes:
    """A stored value's JSON text, as the core keeps it, once it decodes.

    Raises:
        msgspec.DecodeError, TypeError: not JSON (the row is left out, and logged).
    """
    if not isinstance(text, str | bytes):
        raise TypeError(f"a value of type {type(text).__name__}, not JSON text")
    msgspec.json.decode(text)
    return text


def _make_private(path: Path) -> None:
    """Files an older daemon created with the default umask become 0600."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):  # missing, or a link we leave alone
            os.chmod(path.with_name(path.name + suffix), 0o600, follow_symlinks=False)


class Store:
    def __init__(self, path: Path | None = None) -> None:
        """Open (creating) the database at ``path``; ``None`` keeps it in memory (tests)."""
        if path is not None:
            _make_private(path)
        try:
            self._db = sqlite3.connect(":memory:" if path is None else str(path),
                                       isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._durable = False
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def apply(self, writes: Iterable[Write], durable: bool = False) -> None:
        """Apply ``writes`` in one transaction: all of them, or none. ``durable``: the
        commit is on disk (fsync) before this returns, not only safe from a killed
        daemon.

        Raises:
            StoreError: the disk is full, the file is read-only, ...: nothing was written.
        """
        db = self._db
        try:
            if durable != self._durable:
                db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            db.execute("BEGIN")
            try:
                # Runs of writes of one kind go in one statement (see _write_run).
                for kind, run in itertools.groupby(writes, type):
                    _write_run(db, _STATEMENTS[kind], list(run))
                db.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself after some errors (a full disk, for one);
                # a ROLLBACK then would fail and hide the reason.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"store write failed: {exc}") from None

    @staticmethod
    def _load_state(rows: Iterable[Any], state: list[tuple[str, str, str | bytes]]) -> None:
        scopes: dict[str, str] = {}  # one string per scope, not one per key
        for scope, key, text in rows:
            try:
                state.append((scopes.setdefault(str(scope), str(scope)), str(key),
                              _checked_json(text)))
            except (TypeError, ValueError, RecursionError, msgspec.DecodeError) as exc:
                log.warning("state %r/%r in the store cannot be read and is left out: %s",
                            scope, key, exc)

    def load(self) -> Stored:
        """Everything the store holds, for the core to start from. Rows that cannot be
        read are kept on disk: triggers say why in ``problem``, state rows are logged."""
        state: list[tuple[str, str, str | bytes]] = []
        streams: list[tuple[tuple[str, str], str, str | bytes]] = []
        try:
            # Row by row, not fetchall: a million keys must not be held twice.
            rows = self._db.execute("SELECT scope, key, value FROM state")
            self._load_state(rows, state)
            items = self._db.execute(
                "SELECT stream_name, group_id, item_id, value FROM stream_items").fetchall()
            triggers = self.load_triggers()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store: {exc}") from None
        messages: list[PutMessage] = []
        try:
            for row in self._db.execute(
                    "SELECT id, queue, function_id, data, attempts, available_at, "
                    "enqueued_at, grp, last_error, dead, trigger_id FROM messages "
                    "ORDER BY seq"):
                try:
                    messages.append(_stored_message(row))
                except (TypeError, ValueError) as exc:
                    log.warning("queued message %r in the store cannot be read and is "
                                "left out: %s", row[0], exc)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store: {exc}") from None
        for stream_name, group_id, item_id, text in items:
            try:
                streams.append(((str(stream_name), str(group_id)), str(item_id),
                                _checked_json(text)))
            except (TypeError, ValueError, RecursionError, msgspec.DecodeError) as exc:
                log.warning("stream item %r/%r/%r in the store cannot be read and is left "
                            "out: %s", stream_name, group_id, item_id, exc)
        return Stored(triggers=triggers, state=state, streams=streams, messages=messages)

    def load_triggers(self) -> list[StoredTrigger]:
        """Every stored trigger; a row that cannot be read says why in ``problem``.

        Raises:
            sqlite3.Error: the table cannot be read at all.
        """
        rows = self._db.execute(
            "SELECT id, trigger_type, function_id, config, metadata FROM triggers ORDER BY id")
        return [_stored_trigger(row) for row in rows]
