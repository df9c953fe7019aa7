"""The config file (cli.md § Configuration): where it is, what it may hold, reading it.

``III_CONFIG`` > the user config dir (``paths.config_file_path``). Reading never
crashes on what it does not know: unknown keys come back as warnings naming the key.
A file that is not valid TOML, or a known key with a value of the wrong type, raises
:class:`ConfigError` with the file and line.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iii_sdk.errors import IIIError
from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES
from iii_sdk.paths import config_file_path

#: Every known key with its default. ``None`` defaults mean "unset" (a str when set).
DEFAULTS: dict[str, Any] = {
    "socket": None,
    "autostart": False,
    "max_frame_bytes": DEFAULT_MAX_FRAME_BYTES,
    "call_timeout_ms": 300_000,
    "websocket": {"enabled": True, "host": "127.0.0.1", "port": 49134, "token": None,
                  "allowed_origins": [], "allowed_hosts": [],
                  #: Extra worker listeners where an auth function decides (RBAC;
                  #: see :mod:`iii_sdk.listener_specs`).
                  "listeners": []},
    "http": {"enabled": True, "host": "127.0.0.1", "port": 3111, "token": None,
             "max_body_bytes": 64 * 1024 * 1024, "cors_origins": [], "allowed_hosts": []},
    "history": {"events": 10_000},
    "queues": {},
    #: Environment variables an HTTP-invoked function's auth may name (none by default).
    "http_functions": {"allowed_env": []},
    #: Managed workers (``[[workers]]``, see :mod:`iii_sdk.worker_specs`).
    "workers": [],
    #: Redis shared with other daemons; the password in the URL or in the environment
    #: variable ``password_env`` names.
    "redis": {"url": None, "password_env": None},
    #: Another iii engine this daemon connects to (``[bridge]``, see
    #: :mod:`iii_sdk.bridge_specs`); None: no bridge.
    "bridge": None,
    #: Where state and streams live: unset follows the daemon (Redis when it has one,
    #: else its own store); "local", "redis" or "bridge" (the bridged engine's).
    "state": {"backend": None},
    #: ``port``: the stream socket, where browsers and other clients join streams
    #: (upstream's 3112); 0, the default, leaves it off.
    "streams": {"backend": None, "port": 0, "host": "127.0.0.1", "auth_function_id": None,
                "allowed_origins": [], "allowed_hosts": [], "max_subscriptions": 256,
                "max_clients": 10_000, "client_buffer_bytes": 4 * 1024 * 1024},
}

#: The range of each whole-number key (both ends included). A port of 0 turns its
#: listener off, as ``--ws-port 0`` does.
RANGES: dict[str, tuple[int, int]] = {
    "max_frame_bytes": (1024, 2**31 - 1),
    "call_timeout_ms": (1, 2**31 - 1),
    "websocket.port": (0, 65535),
    "http.port": (0, 65535),
    "http.max_body_bytes": (1, 2**31 - 1),
    "history.events": (1, 10_000_000),
    "streams.port": (0, 65535),
    "streams.max_subscriptions": (1, 100_000),
    "streams.max_clients": (1, 1_000_000),
    "streams.client_buffer_bytes": (64 * 1024, 2**31 - 1),
}
#: ``[queues.NAME]`` keys with a smaller range than 0..2^31-1 or a fixed set of values.
QUEUE_RANGES: dict[str, tuple[int, int]] = {"concurrency": (1, 100_000),
                                            "max_retries": (0, 1000)}
QUEUE_CHOICES: dict[str, tuple[str, ...]] = {"backoff": ("exponential", "fixed"),
                                             "type": ("standard", "fifo")}
#: Other string keys that take one of a few values.
CHOICES: dict[str, tuple[str, ...]] = {"state.backend": ("local", "redis", "bridge"),
                                       "streams.backend": ("local", "redis", "bridge")}
#: String keys that may not be empty when set.
NON_EMPTY = frozenset({"socket", "websocket.host", "websocket.token", "http.host",
                       "http.token", "redis.url", "redis.password_env", "streams.host",
                       "streams.auth_function_id"})
#: Environment variables that override a key (cli.md: flag > environment > file).
ENV_OVERRIDES: dict[str, str] = {"socket": "III_SOCKET", "websocket.port": "III_WS_PORT",
                                 "http.port": "III_HTTP_PORT", "redis.url": "III_REDIS_URL",
                                 "streams.port": "III_STREAMS_PORT"}

#: Settings of one ``[queues.NAME]`` table.
QUEUE_KEYS: dict[str, type] = {
    "max_retries": int,
    "backoff_ms": int,
    "backoff": str,
    "concurrency": int,
    "type": str,
    "message_group_field": str,
    "visibility_timeout_ms": int,
}


class ConfigError(IIIError):
    """The config file cannot be used; the message names the file (and line)."""


@dataclass
class Config:
    values: dict[str, Any]
    path: Path
    warnings: list[str] = field(default_factory=list)

    def get(self, dotted: str) -> Any:
        node: Any = self.values
        for part in dotted.split("."):
            node = node[part]
        return node


def config_path() -> Path:
    return config_file_path()


def expected_type(dotted: str) -> type | None:
    """The type a key takes, or None when the key is unknown."""
    parts = dotted.split(".")
    if len(parts) == 3 and parts[0] == "queues" and parts[1]:
        return QUEUE_KEYS.get(parts[2])
    node: Any = DEFAULTS
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        return None  # a table, not a key
    if node is None:
        return str
    return type(node)


def value_problem(dotted: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the known key ``dotted``, or None: the one rule
    for the file, ``iii config set`` and the environment."""
    if dotted.split(".")[0] == "workers":
        return "managed workers are added with 'iii worker add' (or [[workers]] in the file)"
    wanted = expected_type(dotted)
    if wanted is None:
        return f"unknown config key '{dotted}'"
    if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
        return f"'{dotted}' must be {wanted.__name__}, got {type(value).__name__} {value!r}"
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        return f"'{dotted}' must be a list of strings, got {value!r}"
    leaf = dotted.rsplit(".", 1)[-1]
    queue_key = dotted.startswith("queues.")
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = (QUEUE_RANGES.get(leaf, (0, 2**31 - 1)) if queue_key
                     else RANGES.get(dotted, (-(2**63), 2**63 - 1)))
        if not low <= value <= high:
            return f"'{dotted}' must be from {low} to {high}, got {value}"
    if isinstance(value, str):
        choices = QUEUE_CHOICES.get(leaf) if queue_key else CHOICES.get(dotted)
        if choices is not None and value not in choices:
            return f"'{dotted}' must be {' or '.join(choices)}, got {value!r}"
        if (dotted in NON_EMPTY or queue_key) and not value.strip():
            return f"'{dotted}' must not be empty"
    return None


def env_value(dotted: str) -> Any:
    """The environment's override of ``dotted`` (typed), or None when not set.

    Raises:
        ConfigError: the variable is set to something the key does not take.
    """
    name = ENV_OVERRIDES.get(dotted)
    text = os.environ.get(name) if name else None
    if not text:
        return None
    value: Any = text
    if expected_type(dotted) is int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"${name}: '{dotted}' takes a whole number, got {text!r}"
                              ) from None
    problem = value_problem(dotted, value)
    if problem:
        raise ConfigError(f"${name}: {problem}")
    return value


def _check(table: dict[str, Any], prefix: str, path: Path, warnings: list[str]) -> None:
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if dotted in ("workers", "bridge", "websocket.listeners"):  # shapes of their own
            from iii_sdk import bridge_specs, listener_specs, worker_specs

            problem = worker_specs.entries_problem(value) if dotted == "workers" \
                else bridge_specs.table_problem(value) if dotted == "bridge" \
                else listener_specs.listeners_problem(value)
            if problem:
                raise ConfigError(f"{path}: {problem}")
            continue
        if isinstance(value, dict):
            # Known tables ([websocket], [queues], ...) and each [queues.NAME] table.
            known_table = prefix == "" and isinstance(DEFAULTS.get(key), dict)
            if known_table or prefix == "queues.":
                _check(value, f"{dotted}.", path, warnings)
            else:
                warnings.append(f"unknown config key '{dotted}' in {path}")
            continue
        if expected_type(dotted) is None:
            warnings.append(f"unknown config key '{dotted}' in {path}")
            continue
        problem = value_problem(dotted, value)
        if problem:
            raise ConfigError(f"{path}: {problem}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def read_file(path: Path) -> dict[str, Any]:
    """The file's own tables (no defaults); empty when there is no file.

    Raises:
        ConfigError: not valid TOML (message has the line), or unreadable.
    """
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load(path: Path | None = None) -> Config:
    """Defaults overlaid with the file.

    Raises:
        ConfigError: see :func:`read_file`, or a known key with a wrong type.
    """
    path = path or config_path()
    raw = read_file(path)
    warnings: list[str] = []
    _check(raw, "", path, warnings)
    values = copy.deepcopy(DEFAULTS)
    _merge(values, raw)
    return Config(values=values, path=path, warnings=warnings)
