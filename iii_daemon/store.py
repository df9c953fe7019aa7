"""The daemon's one store: SQLite in WAL mode (stdlib sqlite3).

Holds what must survive a restart: daemon-owned triggers and state values. Each write
commits before the caller is answered; WAL with ``synchronous=NORMAL`` keeps committed
data through a killed daemon (power loss may lose the last moments; queues, which
promise more, will use ``FULL`` for their own writes).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from iii_daemon.errors import StoreError

#: What :meth:`Store.get_state` returns for a key that is not set (``None`` is a value).
MISSING: Final = object()

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
"""



@dataclass(slots=True)
class StoredTrigger:
    id: str
    trigger_type: str
    function_id: str
    config: Any
    metadata: Any
    #: Why the row cannot be used as it is, or None.
    problem: str | None = None


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
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"store write failed: {exc}") from None

    # --- daemon-owned triggers ----------------------------------------------------------

    def save_trigger(self, trigger_id: str, trigger_type: str, function_id: str,
                     config: dict[str, Any], metadata: Any) -> None:
        self._write(
            "INSERT OR REPLACE INTO triggers VALUES (?, ?, ?, ?, ?)",
            (trigger_id, trigger_type, function_id, json.dumps(config),
             None if metadata is None else json.dumps(metadata)))

    def delete_trigger(self, trigger_id: str) -> None:
        self._write("DELETE FROM triggers WHERE id = ?", (trigger_id,))

    def load_triggers(self) -> list[StoredTrigger]:
        """Every stored trigger; a row that cannot be read says why in ``problem``."""
        rows = self._db.execute(
            "SELECT id, trigger_type, function_id, config, metadata FROM triggers ORDER BY id")
        return [_stored_trigger(row) for row in rows]

    # --- state --------------------------------------------------------------------------

    def get_state(self, scope: str, key: str) -> Any:
        row = self._db.execute("SELECT value FROM state WHERE scope = ? AND key = ?",
                               (scope, key)).fetchone()
        return MISSING if row is None else json.loads(row[0])

    def set_state(self, scope: str, key: str, value: Any) -> None:
        self._write("INSERT OR REPLACE INTO state VALUES (?, ?, ?)",
                    (scope, key, json.dumps(value)))

    def delete_state(self, scope: str, key: str) -> None:
        self._write("DELETE FROM state WHERE scope = ? AND key = ?", (scope, key))

    def list_state(self, scope: str) -> list[tuple[str, Any]]:
        rows = self._db.execute("SELECT key, value FROM state WHERE scope = ? ORDER BY key",
                                (scope,))
        return [(r[0], json.loads(r[1])) for r in rows]
