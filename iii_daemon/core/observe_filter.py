"""The observer filter language (``iii-filter`` v1), evaluated by the daemon.

A filter is a JSON object of paths and combinators with explicit operators only::

    {"input.amount": {"$gte": 500}, "$or": [{"error.code": {"$eq": "declined"}}, ...]}

It is read against a document ``{input?, output?, error?, caller?, metadata?}`` of
decoded JSON. The operators, limits and answers are those of the official SDK 0.25's
``iii.filter`` (our own implementation, tested against it): ``$eq $ne $in $nin $gt $gte
$lt $lte $exists $prefix $any`` on a path, ``$and $or $not`` over filters. A filter that
breaks a rule is refused whole (``INVALID_FILTER``) when the observer is created, so a
typo never turns into "match everything". Evaluation is total: whatever the values hold,
it answers true or false.

Pure: no I/O. A filter is compiled once into closures; a call then costs the clauses it
has, nothing more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec

#: The roots a path may start at (``@`` is the current element inside ``$any``).
ROOTS = frozenset({"input", "output", "error", "caller", "metadata"})
MAX_DEPTH = 8  # nesting of filters; the top level is 1
MAX_NODES = 64  # value operators, $or and $not each count one
MAX_SET_ITEMS = 256  # items of one $in / $nin
MAX_PATH_SEGMENTS = 16  # after the root
MAX_ENCODED_BYTES = 8192  # compact UTF-8 JSON of the filter as written
MAX_SAFE_LITERAL = 2**53  # every implementation reads such numbers alike
MAX_LITERAL_DEPTH = 32  # arrays / objects in one literal
MAX_JSON_DEPTH = 120  # arrays / objects in the whole filter

_VALUE_OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte",
                              "$exists", "$prefix", "$any"})


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


#: What a path that reaches nothing resolves to (``null`` is a value, not absent).
ABSENT: Any = _Absent()

#: ``(document, current $any element) -> matches``
Predicate = Callable[[dict[str, Any], Any], bool]
#: ``(value at the path or ABSENT, document) -> holds``
_Check = Callable[[Any, dict[str, Any]], bool]


class InvalidFilter(ValueError):
    """A filter the language refuses; the message says where and why."""

    code = "INVALID_FILTER"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _double(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def json_equals(value: Any, literal: Any) -> bool:
    """Deep JSON equality: numbers as doubles (``1 == 1.0``), no coercion between types,
    object key order ignored, array order kept."""
    if literal is None:
        return value is None
    if isinstance(literal, bool):
        return value is literal
    if isinstance(literal, (int, float)):
        return _is_number(value) and _double(value) == _double(literal)
    if isinstance(literal, str):
        return isinstance(value, str) and value == literal
    if isinstance(literal, list):
        return (isinstance(value, list) and len(value) == len(literal)
                and all(json_equals(v, item) for v, item in zip(value, literal, strict=True)))
    if isinstance(literal, dict):
        return (isinstance(value, dict) and len(value) == len(literal)
                and all(k in value and json_equals(value[k], v) for k, v in literal.items()))
    return False


class Filter:
    """A validated filter. ``source`` is it as written; ``roots`` the document roots it
    reads (so a caller builds only those); ``match_all`` for ``{}``."""

    __slots__ = ("_predicate", "match_all", "roots", "source")

    def __init__(self, source: dict[str, Any], predicate: Predicate, roots: frozenset[str],
                 match_all: bool) -> None:
        self.source = source
        self._predicate = predicate
        self.roots = roots
        self.match_all = match_all

    def matches(self, document: dict[str, Any]) -> bool:
        if self.match_all:
            return True
        try:
            return self._predicate(document, ABSENT)
        except Exception:  # total: a value the closures did not expect is a non-match
            return False


def compile_filter(source: Any) -> Filter:
    """Validate and compile ``source`` (absent or ``null`` is ``{}``).

    Raises:
        InvalidFilter: the filter breaks a rule of the language.
    """
    if source is None:
        source = {}
    if not isinstance(source, dict):
        raise InvalidFilter(f"a filter must be a JSON object, found {_kind(source)}")
    _check_json(source)
    if len(msgspec.json.encode(source)) > MAX_ENCODED_BYTES:
        raise InvalidFilter(f"the filter encodes to more than {MAX_ENCODED_BYTES} bytes")
    compiler = _Compiler()
    clauses = compiler.clauses(source, 1, in_any=False)
    return Filter(source, _all_of(clauses), frozenset(compiler.roots), not clauses)


def _check_json(source: dict[str, Any]) -> None:
    """Numbers within ±2^53 and finite; nesting within MAX_JSON_DEPTH. Iterative."""
    stack: list[tuple[Any, int]] = [(source, 1)]
    while stack:
        value, level = stack.pop()
        if _is_number(value):
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidFilter(f"{value} is not a JSON number")
            if not abs(value) <= MAX_SAFE_LITERAL:
                raise InvalidFilter(f"the number {value} is outside ±2^53")
        elif isinstance(value, (dict, list)):
            if level > MAX_JSON_DEPTH:
                raise InvalidFilter(f"the filter nests more than {MAX_JSON_DEPTH} "
                                    "arrays / objects")
            members = value.values() if isinstance(value, dict) else value
            stack.extend((member, level + 1) for member in members)


def _all_of(clauses: list[Predicate]) -> Predicate:
    if not clauses:
        return lambda _doc, _element: True
    if len(clauses) == 1:
        return clauses[0]
    items = tuple(clauses)
    return lambda doc, element: all(clause(doc, element) for clause in items)


def _parse_path(raw: str, in_any: bool) -> tuple[str, tuple[tuple[str, int | None], ...]]:
    """``root ("." segment)*`` with ``\\.`` and ``\\\\`` escapes. Each segment is
    ``(key, index)``: ``index`` is set for a canonical decimal (``0``, ``[1-9][0-9]*``),
    which selects an array element; the key looks up an object member."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(raw)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped not in (".", "\\"):
                what = "a dangling `\\`" if escaped is None else f"the escape `\\{escaped}`"
                raise InvalidFilter(f"path `{raw}`: {what} (only `\\.` and `\\\\` escape)")
            current.append(escaped)
        elif char == ".":
            if not current:
                raise InvalidFilter(f"path `{raw}`: empty segment")
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if not current:
        raise InvalidFilter("empty path" if not raw else f"path `{raw}`: empty segment")
    parts.append("".join(current))
    root = parts[0]
    if in_any and root != "@":
        raise InvalidFilter(f"path `{raw}`: inside `$any` paths start at `@`, the element")
    if not in_any and root not in ROOTS:
        where = "`@` is only allowed inside `$any`" if root == "@" else \
            f"unknown root `{root}` (expected input, output, error, caller or metadata)"
        raise InvalidFilter(f"path `{raw}`: {where}")
    if len(parts) - 1 > MAX_PATH_SEGMENTS:
        raise InvalidFilter(f"path `{raw}`: {len(parts) - 1} segments after the root "
                            f"(limit {MAX_PATH_SEGMENTS})")
    segments = tuple((key, _index(key)) for key in parts[1:])
    return root, segments


def _index(segment: str) -> int | None:
    if len(segment) > 15 or not segment.isascii() or not segment.isdigit() or \
            (segment != "0" and segment[0] == "0"):
        return None
    return int(segment)


def _resolver(root: str, segments: tuple[tuple[str, int | None], ...]
              ) -> Callable[[dict[str, Any], Any], Any]:
    def walk(value: Any) -> Any:
        for key, index in segments:
            if isinstance(value, dict):
                if key not in value:
                    return ABSENT
                value = value[key]
            elif isinstance(value, list):
                if index is None or index >= len(value):
                    return ABSENT
                value = value[index]
            else:
                return ABSENT
        return value

    if root == "@":
        return lambda _doc, element: walk(element)
    return lambda doc, _element: walk(doc[root]) if root in doc else ABSENT


class _Compiler:
    """One pass of validation and compilation, with the node budget and the roots read."""

    def __init__(self) -> None:
        self.nodes = 0
        self.roots: set[str] = set()

    def _take(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise InvalidFilter(f"more than {MAX_NODES} operator / clause nodes")

    def clauses(self, source: Any, depth: int, in_any: bool) -> list[Predicate]:
        """The clauses of a filter and of every filter its ``$and`` holds (``$and``
        adds no depth)."""
        if depth > MAX_DEPTH:
            raise InvalidFilter(f"filters nested deeper than {MAX_DEPTH} levels")
        out: list[Predicate] = []
        pending = [source]
        while pending:
            current = pending.pop()
            if not isinstance(current, dict):
                raise InvalidFilter(f"a filter must be a JSON object, found {_kind(current)}")
            for key, value in current.items():
                if key == "$and":
                    pending.extend(reversed(_filters("$and", value)))
                elif key == "$or":
                    self._take()
                    options = tuple(_all_of(self.clauses(item, depth + 1, in_any))
                                    for item in _filters("$or", value))
                    out.append(_any_of(options))
                elif key == "$not":
                    self._take()
                    if not isinstance(value, dict):
                        raise InvalidFilter(f"`$not` takes a filter object, found {_kind(value)}")
                    inner = _all_of(self.clauses(value, depth + 1, in_any))
                    out.append(_negated(inner))
                elif key in _VALUE_OPERATORS:
                    raise InvalidFilter(f'`{key}` needs a path: {{"<path>": {{"{key}": ...}}}}')
                elif key.startswith("$"):
                    raise InvalidFilter(f"unknown operator `{key}` (a filter holds paths, "
                                        "`$and`, `$or` and `$not`)")
                else:
                    out.append(self._path_clause(key, value, depth, in_any))
        return out

    def _path_clause(self, path: str, ops: Any, depth: int, in_any: bool) -> Predicate:
        root, segments = _parse_path(path, in_any)
        if root != "@":
            self.roots.add(root)
        if not isinstance(ops, dict) or any(not k.startswith("$") for k in ops):
            raise InvalidFilter(f'`{path}`: expected an operator object such as {{"$eq": '
                                "...}; literal values are not allowed")
        if not ops:
            raise InvalidFilter(f"`{path}`: empty operator object")
        checks = self._operators(path, ops, depth)
        resolve = _resolver(root, segments)
        return lambda doc, el: _holds(checks, resolve(doc, el), doc)

    def _operators(self, path: str, ops: dict[str, Any], depth: int) -> tuple[_Check, ...]:
        checks = []
        for name, operand in ops.items():
            self._take()
            checks.append(self._operator(path, name, operand, depth))
        return tuple(checks)

    def _operator(self, path: str, name: str, operand: Any, depth: int) -> _Check:
        def wrong(expected: str) -> InvalidFilter:
            return InvalidFilter(f"`{path}`: `{name}` takes {expected}, found {_kind(operand)}")

        if name in ("$eq", "$ne"):
            _check_literal(path, name, operand)
            if name == "$eq":
                return lambda v, _doc: v is not ABSENT and json_equals(v, operand)
            return lambda v, _doc: v is ABSENT or not json_equals(v, operand)
        if name in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise wrong("an array")
            if len(operand) > MAX_SET_ITEMS:
                raise InvalidFilter(f"`{path}`: `{name}` has {len(operand)} items "
                                    f"(limit {MAX_SET_ITEMS})")
            for item in operand:
                _check_literal(path, name, item)
            items = tuple(operand)
            if name == "$in":
                return lambda v, _doc: v is not ABSENT and any(json_equals(v, i) for i in items)
            return lambda v, _doc: v is ABSENT or not any(json_equals(v, i) for i in items)
        if name in ("$gt", "$gte", "$lt", "$lte"):
            accept = _ORDER[name]
            if _is_number(operand):
                bound = _double(operand)
                return lambda v, _doc: _is_number(v) and accept(_double(v), bound)
            if isinstance(operand, str):
                return lambda v, _doc: isinstance(v, str) and accept(v, operand)
            raise wrong("a number or a string")
        if name == "$exists":
            if not isinstance(operand, bool):
                raise wrong("a boolean")
            return lambda v, _doc: (v is not ABSENT) is operand
        if name == "$prefix":
            if not isinstance(operand, str):
                raise wrong("a string")
            return lambda v, _doc: isinstance(v, str) and v.startswith(operand)
        if name == "$any":
            return self._any(path, operand, depth)
        if name in ("$and", "$or", "$not"):
            raise InvalidFilter(f"`{path}`: `{name}` combines filters and is not a value "
                                "operator")
        raise InvalidFilter(f"`{path}`: unknown operator `{name}`")

    def _any(self, path: str, operand: Any, depth: int) -> _Check:
        """``$any``: an operator object every op of which one element satisfies, or a
        filter over the element (``@`` paths); ``{}`` matches any non-empty array."""
        if not isinstance(operand, dict):
            raise InvalidFilter(f"`{path}`: `$any` takes an operator object or a filter "
                                f"over `@`, found {_kind(operand)}")
        if depth + 1 > MAX_DEPTH:
            raise InvalidFilter(f"filters nested deeper than {MAX_DEPTH} levels")
        if operand and all(k in _VALUE_OPERATORS for k in operand):
            checks = self._operators(path, operand, depth + 1)
            return lambda v, doc: isinstance(v, list) and any(
                _holds(checks, item, doc) for item in v)
        element = _all_of(self.clauses(operand, depth + 1, in_any=True))
        return lambda v, doc: isinstance(v, list) and any(element(doc, item) for item in v)


def _any_of(options: tuple[Predicate, ...]) -> Predicate:
    return lambda doc, el: any(option(doc, el) for option in options)


def _negated(inner: Predicate) -> Predicate:
    return lambda doc, el: not inner(doc, el)


def _holds(checks: tuple[_Check, ...], value: Any, doc: dict[str, Any]) -> bool:
    return all(check(value, doc) for check in checks)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
}


def _filters(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidFilter(f"`{name}` takes an array of filters, found {_kind(value)}")
    if not value:
        raise InvalidFilter(f"`{name}` takes a non-empty array of filters")
    return value


def _check_literal(path: str, name: str, literal: Any) -> None:
    """A literal nests at most MAX_LITERAL_DEPTH arrays / objects (``[]`` is 1)."""
    stack: list[tuple[Any, int]] = [(literal, 1)]
    while stack:
        value, level = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        if level > MAX_LITERAL_DEPTH:
            raise InvalidFilter(f"`{path}`: `{name}` nests a literal deeper than "
                                f"{MAX_LITERAL_DEPTH} arrays / objects")
        members = value.values() if isinstance(value, dict) else value
        stack.extend((member, level + 1) for member in members)
