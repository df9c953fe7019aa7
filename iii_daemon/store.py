"""The daemon's one store: SQLite in WAL mode (stdlib sqlite3).

Holds what must survive a restart: daemon-owned triggers and state values. The core
never calls it: the daemon reads everything once at start-up (:meth:`Store.load`) and
the store writer (its own thread) applies the core's writes in batches
(:meth:`Store.apply`), one transaction each. WAL with ``synchronous=NORMAL`` keeps
committed data through a killed daemon (power loss may lose the last moments; queues,
which promise more, will use ``FULL`` for their own writes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from iii_daemon.errors import StoreError
from iii_daemon.writes import (
    DropMessage,
    DropState,
    DropTrigger,
    PutMessage,
    PutState,
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


def _put_message(db: sqlite3.Connection, m: PutMessage) -> None:
    # An update keeps the row (and its place in the order): the upsert leaves seq alone.
    db.execute(
        "INSERT INTO messages (id, queue, function_id, data, attempts, available_at, "
        "enqueued_at, grp, last_error, dead, trigger_id) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(id) DO UPDATE SET attempts = excluded.attempts, "
        "available_at = excluded.available_at, last_error = excluded.last_error, "
        "dead = excluded.dead",
        (m.id, m.queue, m.function_id, m.data, m.attempts, m.available_at, m.enqueued_at,
         m.group, None if m.last_error is None else json.dumps(m.last_error), int(m.dead),
         m.trigger_id))


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
                for write in writes:
                    if isinstance(write, PutState):
                        db.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)",
                                   (write.scope, write.key, json.dumps(write.value)))
                    elif isinstance(write, DropState):
                        db.execute("DELETE FROM state WHERE scope = ? AND key = ?",
                                   (write.scope, write.key))
                    elif isinstance(write, PutTrigger):
                        db.execute(
                            "INSERT OR REPLACE INTO triggers VALUES (?, ?, ?, ?, ?)",
                            (write.id, write.trigger_type, write.function_id,
                             json.dumps(write.config), None if write.metadata is None
                             else json.dumps(write.metadata)))
                    elif isinstance(write, DropTrigger):
                        db.execute("DELETE FROM triggers WHERE id = ?", (write.id,))
                    elif isinstance(write, PutMessage):
                        _put_message(db, write)
                    elif isinstance(write, DropMessage):
                        db.execute("DELETE FROM messages WHERE id = ?", (write.id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"store write failed: {exc}") from None

    def load(self) -> Stored:
        """Everything the store holds, for the core to start from. Rows that cannot be
        read are kept on disk: triggers say why in ``problem``, state rows are logged."""
        state: list[tuple[str, str, Any]] = []
        try:
            rows = self._db.execute("SELECT scope, key, value FROM state").fetchall()
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
        for scope, key, text in rows:
            try:
                state.append((str(scope), str(key), json.loads(text)))
            except (TypeError, ValueError, RecursionError) as exc:
                log.warning("state %r/%r in the store cannot be read and is left out: %s",
                            scope, key, exc)
        return Stored(triggers=triggers, state=state, messages=messages)

    def load_triggers(self) -> list[StoredTrigger]:
        """Every stored trigger; a row that cannot be read says why in ``problem``.

        Raises:
            sqlite3.Error: the table cannot be read at all.
        """
        rows = self._db.execute(
            "SELECT id, trigger_type, function_id, config, metadata FROM triggers ORDER BY id")
        return [_stored_trigger(row) for row in rows]
