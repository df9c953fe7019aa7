"""Managed workers as the config file holds them (``[[workers]]``) and ``iii worker add``
sends them: one rule for their shape, for the file, the CLI and the daemon.

What this checks is the entry alone (names, types, choices). Whether the command can
run there (the program exists, the directory is one) is the CLI's check before it
stores an entry, and the daemon's when it starts one (a failed start is a status).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

RESTART_POLICIES = ("always", "on-failure", "never")
DEFAULT_RESTART = "on-failure"
DEFAULT_STOP_GRACE_MS = 5_000
MAX_STOP_GRACE_MS = 600_000
#: Letters, digits, ``-``, ``_`` and ``.``, starting with a letter or digit: a name is
#: also a log file's name and typed in shells.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEYS = frozenset({"name", "command", "cwd", "env", "restart", "stop_grace_ms"})


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One managed worker: what to run, where, and what to do when it exits."""

    name: str
    command: tuple[str, ...]
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    restart: str = DEFAULT_RESTART
    stop_grace_ms: int = DEFAULT_STOP_GRACE_MS

    def as_entry(self) -> dict[str, Any]:
        """The ``[[workers]]`` table (what the config file and ``list`` show)."""
        entry: dict[str, Any] = {"name": self.name, "command": list(self.command)}
        if self.cwd is not None:
            entry["cwd"] = self.cwd
        if self.env:
            entry["env"] = dict(self.env)
        entry["restart"] = self.restart
        entry["stop_grace_ms"] = self.stop_grace_ms
        return entry


def name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "a worker needs a 'name' (a non-empty string)"
    if not NAME_PATTERN.fullmatch(name):
        shown = name.encode("unicode_escape").decode("ascii")
        return (f"worker name '{shown}' is not valid: use up to 64 letters, digits, '.', "
                f"'_' or '-', starting with a letter or digit")
    return None


def entry_problem(entry: Any) -> str | None:
    """What is wrong with one ``[[workers]]`` entry, or None."""
    if not isinstance(entry, dict):
        return "each [[workers]] entry must be a table"
    problem = name_problem(entry.get("name"))
    if problem:
        return problem
    name = entry["name"]
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        return f"worker '{name}': unknown key '{unknown[0]}' (known: {', '.join(sorted(KEYS))})"
    command = entry.get("command")
    if not isinstance(command, list) or not command or not all(
            isinstance(part, str) for part in command) or not command[0]:
        return f"worker '{name}': 'command' must be a non-empty list of strings"
    if any("\0" in part for part in command):
        return f"worker '{name}': 'command' must not hold NUL characters"
    cwd = entry.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd or "\0" in cwd):
        return f"worker '{name}': 'cwd' must be a non-empty string"
    env = entry.get("env", {})
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and k and "=" not in k and "\0" not in k
            and isinstance(v, str) and "\0" not in v for k, v in env.items()):
        return f"worker '{name}': 'env' must be a table of strings (names without '=')"
    restart = entry.get("restart", DEFAULT_RESTART)
    if restart not in RESTART_POLICIES:
        return (f"worker '{name}': 'restart' must be {', '.join(RESTART_POLICIES)}, "
                f"got {restart!r}")
    grace = entry.get("stop_grace_ms", DEFAULT_STOP_GRACE_MS)
    if not isinstance(grace, int) or isinstance(grace, bool) or \
            not 0 < grace <= MAX_STOP_GRACE_MS:
        return f"worker '{name}': 'stop_grace_ms' must be from 1 to {MAX_STOP_GRACE_MS}"
    return None


def spec_of(entry: dict[str, Any]) -> WorkerSpec:
    """The spec of an entry :func:`entry_problem` passed."""
    return WorkerSpec(
        name=entry["name"], command=tuple(entry["command"]), cwd=entry.get("cwd"),
        env=tuple(sorted(entry.get("env", {}).items())),
        restart=entry.get("restart", DEFAULT_RESTART),
        stop_grace_ms=entry.get("stop_grace_ms", DEFAULT_STOP_GRACE_MS))


def entries_problem(entries: Any) -> str | None:
    """What is wrong with the whole ``workers`` array (each entry, and names twice)."""
    if not isinstance(entries, list):
        return "'workers' must be an array of tables ([[workers]])"
    seen: set[str] = set()
    for entry in entries:
        problem = entry_problem(entry)
        if problem:
            return problem
        if entry["name"] in seen:
            return f"worker name '{entry['name']}' is used twice"
        seen.add(entry["name"])
    return None
