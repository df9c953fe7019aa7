"""The update ops of ``state::update`` / ``stream::update``, as the upstream engine
applies them (the official SDK's ``iii_helpers.stream.Update*`` types)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iii_helpers.stream import (
    UpdateAppend,
    UpdateDecrement,
    UpdateIncrement,
    UpdateMerge,
    UpdateRemove,
    UpdateSet,
)

from iii_daemon.core.errors import CallError
from iii_daemon.core.unsettled import MISSING
from iii_daemon.functions.update_ops import apply_ops, parse_ops


def run(value: Any, *ops: Any) -> tuple[Any, list[str]]:
    """Ops given as the official SDK's models (dumped as it sends them) or dicts."""
    wire = [op.model_dump() if hasattr(op, "model_dump") else op for op in ops]
    new, errors = apply_ops(value, parse_ops(wire))
    return new, [f"{e['op_index']}:{e['code']}" for e in errors]


def test_set_replaces_a_field_or_the_root() -> None:
    assert run({"a": 1}, UpdateSet(path="b", value=[2])) == ({"a": 1, "b": [2]}, [])
    assert run({"a": 1}, UpdateSet(path="", value=7)) == (7, [])
    assert run(MISSING, UpdateSet(path="status", value="paid")) == ({"status": "paid"}, [])
    # A dotted path is one literal field, never a walk.
    assert run({"a": {"b": 1}}, UpdateSet(path="a.b", value=2)) == (
        {"a": {"b": 1}, "a.b": 2}, [])
    assert run(5, UpdateSet(path="x", value=1)) == (5, ["0:set.target_not_object"])


def test_increment_and_decrement() -> None:
    assert run({"count": 2}, UpdateIncrement(path="count", by=3),
               UpdateIncrement(path="missing", by=3)) == ({"count": 5, "missing": 3}, [])
    assert run({"count": 5}, UpdateDecrement(path="count", by=3),
               UpdateDecrement(path="missing", by=3)) == ({"count": 2, "missing": -3}, [])
    assert run({"count": 1.5}, UpdateIncrement(path="count", by=2)) == ({"count": 3.5}, [])
    assert run(MISSING, UpdateIncrement(path="", by=4)) == (4, [])
    assert run(2, UpdateIncrement(path="", by=3)) == (5, [])
    # null and booleans are not numbers; the ops after a failed one still run.
    assert run({"n": None, "b": True}, UpdateIncrement(path="n", by=1),
               UpdateDecrement(path="b", by=1), UpdateIncrement(path="ok", by=1)) == (
        {"n": None, "b": True, "ok": 1}, ["0:increment.not_number", "1:decrement.not_number"])
    assert run("text", UpdateIncrement(path="x", by=1)) == (
        "text", ["0:increment.target_not_object"])
    assert run("text", UpdateIncrement(path="", by=1)) == ("text", ["0:increment.not_number"])


def test_remove() -> None:
    assert run({"a": 1, "b": 2}, UpdateRemove(path="a")) == ({"b": 2}, [])
    assert run({"a": 1}, UpdateRemove(path="gone")) == ({"a": 1}, [])
    assert run({"a": 1}, UpdateRemove(path="")) == (None, [])
    assert run([1], UpdateRemove(path="a")) == ([1], ["0:remove.target_not_object"])


def test_merge_at_the_root_and_nested() -> None:
    assert run({"a": 1, "b": 1}, UpdateMerge(value={"b": 2, "c": 3})) == (
        {"a": 1, "b": 2, "c": 3}, [])
    assert run(MISSING, UpdateMerge(path="", value={"x": 1})) == ({"x": 1}, [])
    # Segments walk, creating (or replacing) what is not an object on the way.
    assert run({"s": {"abc": 5}}, UpdateMerge(path=["s", "abc", "meta"], value={"k": 1})) == (
        {"s": {"abc": {"meta": {"k": 1}}}}, [])
    assert run({"a": {"x": 1}}, UpdateMerge(path="a", value={"y": 2})) == (
        {"a": {"x": 1, "y": 2}}, [])
    assert run({}, UpdateMerge(value=[1])) == ({}, ["0:merge.value.not_an_object"])
    assert run({}, UpdateMerge(value={"__proto__": 1})) == ({}, ["0:merge.value.proto_polluted"])
    assert run({}, UpdateMerge(value={str(i): i for i in range(1025)}))[1] == [
        "0:merge.value.too_many_keys"]
    deep: Any = 1
    for _ in range(17):
        deep = {"d": deep}
    assert run({}, UpdateMerge(value=deep))[1] == ["0:merge.value.too_deep"]
    assert run(3, UpdateMerge(value={"a": 1})) == (3, ["0:merge.target_not_object"])


def test_append_to_lists_strings_and_missing_fields() -> None:
    assert run({"events": [1]}, UpdateAppend(path="events", value=2)) == ({"events": [1, 2]}, [])
    assert run({"t": "hello"}, UpdateAppend(path="t", value=" world")) == (
        {"t": "hello world"}, [])
    # A missing field starts as the string, or as a list of the value.
    assert run({}, UpdateAppend(path="t", value="hi"), UpdateAppend(path="e", value={"k": 1})) == (
        {"t": "hi", "e": [{"k": 1}]}, [])
    assert run(MISSING, UpdateAppend(value="hello")) == ("hello", [])
    assert run(MISSING, UpdateAppend(value={"k": 1})) == ([{"k": 1}], [])
    # Deeper than one field, a missing leaf is always a list.
    assert run({}, UpdateAppend(path=["s", "abc", "events"], value="x")) == (
        {"s": {"abc": {"events": ["x"]}}}, [])
    assert run({"t": "a"}, UpdateAppend(path="t", value=1)) == (
        {"t": "a"}, ["0:append.type_mismatch"])
    assert run({"o": {}}, UpdateAppend(path="o", value=1)) == (
        {"o": {}}, ["0:append.type_mismatch"])
    assert run(7, UpdateAppend(path="x", value=1)) == (7, ["0:append.target_not_object"])


@pytest.mark.parametrize("path, code", [
    ("__proto__", "set.path.proto_polluted"),
    ("x" * 257, "set.path.segment_too_long"),
])
def test_forbidden_paths_are_reported_and_skipped(path: str, code: str) -> None:
    assert run({}, UpdateSet(path=path, value=1), UpdateSet(path="ok", value=1)) == (
        {"ok": 1}, [f"0:{code}"])


def test_path_limits_of_nested_ops() -> None:
    assert run({}, UpdateMerge(path=["a", ""], value={}))[1] == ["0:merge.path.empty_segment"]
    assert run({}, UpdateAppend(path=["a"] * 33, value=1))[1] == ["0:append.path.too_deep"]
    assert run({}, UpdateMerge(path=["constructor"], value={}))[1] == [
        "0:merge.path.proto_polluted"]


@pytest.mark.parametrize("ops, message", [
    ("nope", "'ops' must be a list"),
    ([1], "op 0 must be an object"),
    ([{"type": "explode", "path": "a"}], "op 0: unknown type 'explode'"),
    ([{"type": "set", "path": "a", "value": 1}, {"type": "increment", "path": "n"}],
     "op 1 ('increment', path 'n'): 'by' must be a number"),
    ([{"type": "increment", "path": "n", "by": True}], "'by' must be a number"),
    ([{"type": "set", "path": "a"}], "op 0 ('set', path 'a'): 'value' is missing"),
    ([{"type": "set", "path": ["a", "b"], "value": 1}], "'path' must be a string"),
    ([{"type": "merge", "path": [1], "value": {}}], "a string or a list of strings"),
])
def test_malformed_ops_are_a_bad_request_naming_the_op(ops: Any, message: str) -> None:
    with pytest.raises(CallError) as raised:
        parse_ops(ops)
    assert raised.value.code == "bad_request" and message in raised.value.message


def test_a_value_nested_too_deeply_is_a_bad_request() -> None:
    deep: Any = []
    for _ in range(5_000):
        deep = [deep]
    with pytest.raises(CallError) as raised:
        run({"a": deep}, UpdateSet(path="b", value=1))
    assert raised.value.code == "bad_request" and "nested too deeply" in raised.value.message


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=10)
OPS = st.lists(st.fixed_dictionaries({
    "type": st.sampled_from(["set", "merge", "increment", "decrement", "append", "remove"]),
    "path": st.sampled_from(["", "a", "b"]) | st.lists(st.sampled_from(["a", "b"]), max_size=3),
    "value": JSON, "by": st.integers(-5, 5)}), max_size=6)


@given(JSON, OPS)
def test_any_ops_leave_the_old_value_and_the_ops_untouched(value: Any, ops: Any) -> None:
    """The old value is what the caller and the triggers get as ``old_value``: ops on a
    copy, whatever they do."""
    for op in ops:  # field ops take one string
        if op["type"] in ("set", "increment", "decrement", "remove") and isinstance(
                op["path"], list):
            op["path"] = "a"
    before, ops_before = copy.deepcopy(value), copy.deepcopy(ops)
    new, errors = apply_ops(value, parse_ops(ops))
    assert value == before and ops == ops_before
    assert all(0 <= e["op_index"] < len(ops) for e in errors)
    if isinstance(new, dict | list):
        new_copy = copy.deepcopy(new)
        apply_ops(new, parse_ops(ops))
        assert new == new_copy


@given(st.lists(st.integers(-100, 100), max_size=20))
def test_increments_add_up(steps: list[int]) -> None:
    value: Any = MISSING
    for by in steps:
        value, errors = apply_ops(value, parse_ops([{"type": "increment", "path": "n",
                                                      "by": by}]))
        assert errors == []
    assert (value if steps else {"n": 0}) == {"n": sum(steps)}
