"""The daemon's observer filters answer as the official SDK 0.25's ``iii.filter`` does:
the same refusals and the same matches, over generated filters and documents."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iii.filter import FilterError
from iii.filter import compile_filter as official_compile

from iii_daemon.core.observe_filter import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_SET_ITEMS,
    InvalidFilter,
    compile_filter,
)

DOC = {"input": {"amount": 750, "tags": ["vip", "eu"], "user": {"id": "u1"},
                 "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 0}], "a.b": 1},
       "output": {"ok": True, "n": 1.0},
       "caller": {"worker_id": "w1", "function_id": "orders::create"},
       "metadata": None}


def verdict(source: Any, doc: dict[str, Any]) -> Any:
    """What ours answers: ``"invalid"`` or the match."""
    try:
        return compile_filter(source).matches(doc)
    except InvalidFilter:
        return "invalid"


def official(source: Any, doc: dict[str, Any]) -> Any:
    try:
        return official_compile(source).matches(doc)
    except FilterError:
        return "invalid"


@pytest.mark.parametrize(("source", "expected"), [
    ({}, True),
    ({"input.amount": {"$gte": 500}}, True),
    ({"input.amount": {"$gt": 750}}, False),
    ({"input.amount": {"$eq": 750.0}}, True),  # numbers compare as doubles
    ({"output.ok": {"$eq": 1}}, False),  # a boolean is not a number
    ({"input.tags.0": {"$eq": "vip"}}, True),  # a canonical index selects an element
    ({"input.tags.00": {"$exists": True}}, False),  # a non-canonical one is a key
    ({"input.a\\.b": {"$eq": 1}}, True),  # an escaped dot is part of the key
    ({"input.missing": {"$ne": 1}}, True),  # $ne holds for an absent path
    ({"input.missing": {"$nin": [1]}}, True),
    ({"metadata": {"$exists": True}}, True),  # null is a value
    ({"metadata": {"$eq": None}}, True),
    ({"error": {"$exists": False}}, True),
    ({"caller.function_id": {"$prefix": "orders::"}}, True),
    ({"input.user.id": {"$in": ["u2", "u1"]}}, True),
    ({"input.items": {"$any": {"@.sku": {"$eq": "b"}, "@.qty": {"$eq": 0}}}}, True),
    ({"input.items": {"$any": {"@.sku": {"$eq": "a"}, "@.qty": {"$eq": 0}}}}, False),
    ({"input.tags": {"$any": {"$eq": "eu"}}}, True),
    ({"input.tags": {"$any": {}}}, True),
    ({"$or": [{"input.amount": {"$lt": 10}}, {"output.ok": {"$eq": True}}]}, True),
    ({"$not": {"input.amount": {"$lt": 10}}}, True),
    ({"$and": [{"input.amount": {"$gte": 1}}, {"input.amount": {"$lte": 1000}}]}, True),
    ({"input.user": {"$eq": {"id": "u1"}}}, True),  # deep equality, key order ignored
    ({"input.amount": 750}, "invalid"),  # literals need an operator
    ({"input.amount": {}}, "invalid"),
    ({"body.amount": {"$eq": 1}}, "invalid"),  # unknown root
    ({"@.x": {"$eq": 1}}, "invalid"),  # @ outside $any
    ({"input..x": {"$eq": 1}}, "invalid"),
    ({"input.x\\y": {"$eq": 1}}, "invalid"),  # an escape other than \. and \\
    ({"$eq": 1}, "invalid"),  # an operator needs a path
    ({"$where": "1"}, "invalid"),
    ({"input.x": {"$gt": True}}, "invalid"),
    ({"input.x": {"$in": list(range(MAX_SET_ITEMS + 1))}}, "invalid"),
    ({"input.x": {"$eq": 2**53 + 1}}, "invalid"),
    ({"$or": []}, "invalid"),
    ("input.amount >= 500", "invalid"),
])
def test_the_language_as_the_official_sdk_reads_it(source: Any, expected: Any) -> None:
    assert verdict(source, DOC) == expected
    assert official(source, DOC) == expected


def test_structural_limits() -> None:
    deep: dict[str, Any] = {"input.a": {"$eq": 1}}
    for _ in range(MAX_DEPTH - 1):
        deep = {"$not": deep}
    assert verdict(deep, {"input": {"a": 2}}) is True
    assert verdict({"$not": deep}, {}) == "invalid"
    wide = {f"input.k{i}": {"$exists": False} for i in range(MAX_NODES)}
    assert verdict(wide, {}) is True
    assert verdict({**wide, "input.more": {"$exists": False}}, {}) == "invalid"
    assert verdict({"input.x": {"$eq": "x" * 9000}}, {}) == "invalid"  # over 8 KiB
    assert verdict({"input." + ".".join("s" * 17): {"$exists": True}}, {}) == "invalid"


def test_evaluation_is_total_and_reads_only_the_roots_it_names() -> None:
    compiled = compile_filter({"input.n": {"$gt": 1}, "$or": [{"caller": {"$exists": True}}]})
    assert compiled.roots == {"input", "caller"}
    assert compiled.matches({"input": "not an object"}) is False
    assert compiled.matches({"input": {"n": [1]}}) is False


# --- the same answers as the official evaluator, over generated filters ----------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(
    [0.5, -1.0, 2.0]), st.sampled_from(["", "a", "ab", "b", "é", "1"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "0", "1"]),
                                                 inner, max_size=3)), max_leaves=8)
# Mostly valid, now and then not (an odd segment, an unknown root).
_segments = st.sampled_from(["a", "b", "0", "1"] * 6 + ["01", "a\\.b", "", "x\\q"])
_roots = st.sampled_from(["input", "output", "error", "caller", "metadata"] * 5
                         + ["body", "@"])


def _path(root: str, segments: list[str]) -> str:
    return ".".join([root, *segments])


_paths = st.builds(_path, _roots, st.lists(_segments, max_size=3))
_element_paths = st.builds(_path, st.just("@"), st.lists(_segments, max_size=2))
_order = st.one_of(st.integers(-5, 5), st.sampled_from(["", "a", "b", "é"]))
# Mostly operands of the right type; sometimes any value (a refusal, as the official).
_operator = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$ne"]), _values),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(_values, max_size=4)),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), _order),
    st.tuples(st.just("$exists"), st.booleans()),
    st.tuples(st.just("$prefix"), st.sampled_from(["", "a", "é"])),
)
_wrong_operator = st.tuples(st.sampled_from(["$gt", "$exists", "$prefix", "$in", "$bad",
                                             "$or"]), _values)
_operators = st.lists(st.one_of(*[_operator] * 9, _wrong_operator), min_size=1,
                      max_size=2).map(dict)
def _filters(depth: int) -> st.SearchStrategy[Any]:
    leaf = st.dictionaries(_paths, st.one_of(*[_operators] * 9, _values), max_size=2)
    if depth == 0:
        return leaf
    inner = _filters(depth - 1)
    element = st.dictionaries(_element_paths, _operators, max_size=2)
    return st.one_of(
        leaf,
        st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda f: {"$not": f}, inner),
        st.builds(lambda p, f: {p: {"$any": f}}, _paths,
                  st.one_of(element, element, _operators, inner)),
    )


_documents = st.dictionaries(st.sampled_from(["input", "output", "error", "caller",
                                              "metadata"]), _values, min_size=3, max_size=5)


@settings(max_examples=250, deadline=None)
@given(_filters(2), _documents)
def test_generated_filters_answer_as_the_official_evaluator(source: Any,
                                                            doc: dict[str, Any]) -> None:
    assert verdict(source, doc) == official(source, doc)
