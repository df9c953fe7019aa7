from __future__ import annotations

from iii_daemon.core.invocations import Invocation, InvocationTable


def make(table: InvocationTable, deadline: float | None) -> Invocation:
    inv = Invocation(id=table.new_id(), function_id="f", worker=1, caller=2,
                     caller_invocation_id="c", started=0.0, timeout_ms=1, deadline=deadline)
    table.add(inv)
    return inv


def test_ids_are_unique_and_uuid_shaped() -> None:
    table = InvocationTable()
    ids = {table.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 36 and i.count("-") == 4 for i in ids)


def test_expiry_in_deadline_order_skipping_answered_calls() -> None:
    table = InvocationTable()
    late = make(table, 3.0)
    early = make(table, 1.0)
    answered = make(table, 2.0)
    table.pop(answered.id)
    assert table.next_deadline() == 1.0
    assert table.pop_expired(2.5) == [early]
    assert table.next_deadline() == 3.0
    assert table.pop_expired(10) == [late]
    assert table.next_deadline() is None and len(table) == 0


def test_the_deadline_heap_does_not_keep_answered_calls() -> None:
    table = InvocationTable()
    for _ in range(50_000):
        table.pop(make(table, 1e9).id)
    assert len(table._deadlines) <= InvocationTable._COMPACT_MIN + 2
