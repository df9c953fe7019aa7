"""The ops of ``state::update`` / ``stream::update``, applied to a value (pure).

The upstream engine's contract: ops run in order on the current value (a missing key
starts as ``{}``); an op that cannot apply (a field that is not a number, a path into a
value that is not an object, a forbidden path segment, ...) is skipped and reported in
``errors`` with a stable code, the others still apply. ``set``, ``increment``,
``decrement`` and ``remove`` take one literal first-level field (``"a.b"`` is the field
named ``a.b``; ``""`` or no path is the value itself); ``merge`` and ``append`` also take
a list of literal segments for a nested place, creating objects on the way.

An op that is not an op at all (not an object, an unknown ``type``, a ``by`` that is not
a number, a path that is neither a string nor a list of strings) is a malformed request:
:func:`parse_ops` raises ``bad_request`` naming it and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iii_daemon.core.errors import CallError
from iii_daemon.core.unsettled import MISSING
from iii_sdk.error_codes import ErrorCode

MAX_PATH_DEPTH = 32
MAX_SEGMENT_BYTES = 256
MAX_MERGE_DEPTH = 16
MAX_MERGE_KEYS = 1024
#: Keys that would poison a JavaScript object built from the value.
FORBIDDEN_KEYS = frozenset({"__proto__", "constructor", "prototype"})
DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"
#: Ops whose path is one first-level field; the others may also take segments.
FIELD_OPS = frozenset({"set", "increment", "decrement", "remove"})
OP_TYPES = FIELD_OPS | {"merge", "append"}


@dataclass(frozen=True, slots=True)
class Op:
    type: str
    #: Literal segments: ``()`` is the value itself.
    path: tuple[str, ...]
    value: Any = None
    by: int | float = 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _where(index: int, raw: dict[str, Any]) -> str:
    return f"op {index} ({raw.get('type')!r}, path {raw.get('path', '')!r})"


def parse_ops(ops: Any) -> list[Op]:
    """The ops of a request, checked for shape.

    Raises:
        CallError: ``bad_request`` naming the first malformed op.
    """
    if not isinstance(ops, list):
        raise CallError(ErrorCode.BAD_REQUEST, "'ops' must be a list of update ops")
    parsed = []
    for index, raw in enumerate(ops):
        if not isinstance(raw, dict):
            raise CallError(ErrorCode.BAD_REQUEST, f"op {index} must be an object")
        kind = raw.get("type")
        if kind not in OP_TYPES:
            raise CallError(ErrorCode.BAD_REQUEST,
                            f"op {index}: unknown type {kind!r} (one of "
                            f"{', '.join(sorted(OP_TYPES))})")
        path = raw.get("path")
        segments: tuple[str, ...]
        if path is None or path == "":
            segments = ()
        elif isinstance(path, str):
            segments = (path,)
        elif (kind not in FIELD_OPS and isinstance(path, list)
              and all(isinstance(s, str) for s in path)):
            segments = tuple(path)
        else:
            shape = "a string" if kind in FIELD_OPS else "a string or a list of strings"
            raise CallError(ErrorCode.BAD_REQUEST,
                            f"{_where(index, raw)}: 'path' must be {shape}")
        by: int | float = 0
        if kind in ("increment", "decrement"):
            by = raw.get("by")  # type: ignore[assignment]
            if not _is_number(by):
                raise CallError(ErrorCode.BAD_REQUEST,
                                f"{_where(index, raw)}: 'by' must be a number")
        elif kind != "remove" and "value" not in raw:
            raise CallError(ErrorCode.BAD_REQUEST, f"{_where(index, raw)}: 'value' is missing")
        parsed.append(Op(kind, segments, raw.get("value"), by))
    return parsed


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), "value")


def _label(segments: tuple[str, ...]) -> str:
    if not segments:
        return "root"
    return segments[0] if len(segments) == 1 else f"[{', '.join(segments)}]"


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _copy(value: Any) -> Any:
    """A copy of the containers of ``value`` (ops change it in place; the stored value
    and the caller's payload must not change with it)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _Apply:
    def __init__(self, value: Any) -> None:
        #: A missing key starts as ``{}``, yet a numeric op on the root starts at 0.
        self.missing = value is MISSING
        self.current: Any = {} if value is MISSING else _copy(value)
        self.errors: list[dict[str, Any]] = []

    def error(self, index: int, code: str, message: str) -> None:
        self.errors.append({"op_index": index, "code": code, "message": message,
                            "doc_url": DOC_URL})

    def path_ok(self, index: int, op: Op) -> bool:
        if len(op.path) > MAX_PATH_DEPTH:
            self.error(index, f"{op.type}.path.too_deep",
                       f"Path depth {len(op.path)} exceeds maximum of {MAX_PATH_DEPTH}")
            return False
        for segment in op.path:
            if not segment:
                self.error(index, f"{op.type}.path.empty_segment",
                           "Path contains an empty segment")
                return False
            if len(segment.encode()) > MAX_SEGMENT_BYTES:
                self.error(index, f"{op.type}.path.segment_too_long",
                           f"Path segment of {len(segment.encode())} bytes exceeds maximum "
                           f"of {MAX_SEGMENT_BYTES}")
                return False
            if segment in FORBIDDEN_KEYS:
                self.error(index, f"{op.type}.path.proto_polluted",
                           f"Path segment '{segment}' is not allowed (prototype pollution).")
                return False
        return True

    def not_object(self, index: int, op: Op) -> None:
        self.error(index, f"{op.type}.target_not_object",
                   f"Cannot {op.type} at path '{_label(op.path)}': target is "
                   f"{_type_name(self.current)}, expected object.")

    def run(self, index: int, op: Op) -> None:
        if not self.path_ok(index, op):
            return
        if getattr(self, f"_{op.type}")(index, op) is not False:
            self.missing = False

    def _set(self, index: int, op: Op) -> bool:
        if not op.path:
            self.current = _copy(op.value)
        elif isinstance(self.current, dict):
            self.current[op.path[0]] = _copy(op.value)
        else:
            self.not_object(index, op)
            return False
        return True

    def _increment(self, index: int, op: Op) -> bool:
        return self._add(index, op, op.by)

    def _decrement(self, index: int, op: Op) -> bool:
        return self._add(index, op, -op.by)

    def _add(self, index: int, op: Op, by: int | float) -> bool:
        if not op.path:
            if self.missing:
                self.current = by
            elif _is_number(self.current):
                self.current += by
            else:
                self._not_number(index, op, self.current)
                return False
            return True
        if not isinstance(self.current, dict):
            self.not_object(index, op)
            return False
        field = op.path[0]
        if field not in self.current:
            self.current[field] = by
        elif _is_number(self.current[field]):
            self.current[field] += by
        else:
            self._not_number(index, op, self.current[field])
            return False
        return True

    def _not_number(self, index: int, op: Op, found: Any) -> None:
        self.error(index, f"{op.type}.not_number",
                   f"Expected number at path '{_label(op.path)}', got {_type_name(found)}.")

    def _remove(self, index: int, op: Op) -> bool:
        if not op.path:
            self.current = None
        elif isinstance(self.current, dict):
            self.current.pop(op.path[0], None)
        else:
            self.not_object(index, op)
            return False
        return True

    def _merge(self, index: int, op: Op) -> bool:
        value = op.value
        problem: tuple[str, str] | None = None
        if not isinstance(value, dict):
            problem = ("not_an_object", "Merge value must be a JSON object")
        elif len(value) > MAX_MERGE_KEYS:
            problem = ("too_many_keys", f"Merge value has {len(value)} top-level keys, "
                                        f"exceeds maximum of {MAX_MERGE_KEYS}")
        elif FORBIDDEN_KEYS.intersection(value):
            problem = ("proto_polluted", "Merge value has a prototype-pollution key "
                                         f"{sorted(FORBIDDEN_KEYS.intersection(value))[0]!r}")
        elif _depth(value) > MAX_MERGE_DEPTH:
            problem = ("too_deep", f"Merge value nesting depth {_depth(value)} exceeds "
                                   f"maximum of {MAX_MERGE_DEPTH}")
        if problem is not None:
            self.error(index, f"merge.value.{problem[0]}", problem[1])
            return False
        if not op.path and not isinstance(self.current, dict):
            # The upstream engine skips this quietly; saying so costs nothing.
            self.not_object(index, op)
            return False
        self._walk(op.path).update(_copy(value))
        return True

    def _walk(self, segments: tuple[str, ...]) -> dict[str, Any]:
        """The object at ``segments``, made (replacing whatever is not an object)."""
        if not isinstance(self.current, dict):
            self.current = {}
        node: dict[str, Any] = self.current
        for segment in segments:
            child = node.get(segment)
            if not isinstance(child, dict):
                child = node[segment] = {}
            node = child
        return node

    def _append(self, index: int, op: Op) -> bool:
        if not op.path:
            if self.missing:
                self.current = None
            target = self.current
            if target is None:
                self.current = _first_append(op.value)
                return True
            return self._append_to(index, op, target)
        if not isinstance(self.current, dict):
            self.not_object(index, op)
            return False
        parent = self._walk(op.path[:-1])
        leaf = op.path[-1]
        if leaf not in parent or parent[leaf] is None:
            # One field: a string starts a string; deeper, always a list.
            parent[leaf] = (_first_append(op.value) if len(op.path) == 1
                            else [_copy(op.value)])
            return True
        return self._append_to(index, op, parent[leaf], parent, leaf)

    def _append_to(self, index: int, op: Op, target: Any,
                   parent: dict[str, Any] | None = None, leaf: str = "") -> bool:
        if isinstance(target, list):
            target.append(_copy(op.value))
            return True
        if isinstance(target, str):
            if not isinstance(op.value, str):
                self.error(index, "append.type_mismatch",
                           f"Expected string append value at path '{_label(op.path)}', "
                           f"got {_type_name(op.value)}.")
                return False
            if parent is None:
                self.current = target + op.value
            else:
                parent[leaf] = target + op.value
            return True
        self.error(index, "append.type_mismatch",
                   f"Cannot append at path '{_label(op.path)}': target is "
                   f"{_type_name(target)}, expected array, string, null, or missing field.")
        return False


def _first_append(value: Any) -> Any:
    return value if isinstance(value, str) else [_copy(value)]


def apply_ops(value: Any, ops: list[Op]) -> tuple[Any, list[dict[str, Any]]]:
    """``(new value, errors)`` of ``ops`` run on ``value`` (``MISSING``: the key does not
    exist); ``value`` itself is left as it was.

    Raises:
        CallError: ``bad_request`` when the value or an op's value is nested too deeply to
            walk (Python's recursion limit; msgspec decodes close to it).
    """
    try:
        state = _Apply(value)
        for index, op in enumerate(ops):
            state.run(index, op)
    except RecursionError:
        raise CallError(ErrorCode.BAD_REQUEST,
                        "the value is nested too deeply to update") from None
    return state.current, state.errors
