"""Handlers started at once (iii_sdk.eager) and the answers of one read sent in one write
(iii_sdk.client_link): what a task would do, without the task."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
import uvloop

from iii_sdk import eager
from iii_sdk import protocol as p
from iii_sdk.client_link import ClientLink

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> Any:
    loop = asyncio.new_event_loop() if request.param == "asyncio" else uvloop.new_event_loop()
    yield loop
    loop.close()


def test_a_coroutine_that_does_not_wait_runs_at_once_without_a_task(loop: Any) -> None:
    seen: list[str] = []

    async def handler() -> None:
        var.set("inside")
        seen.append(var.get())

    async def main() -> None:
        assert eager.start(asyncio.get_running_loop(), handler()) is None
        assert seen == ["inside"]  # before anything else ran
        assert var.get() == "outside"  # its context is its own

    loop.run_until_complete(main())


def test_one_that_waits_goes_on_in_a_task_with_its_context(loop: Any) -> None:
    steps: list[str] = []

    async def handler() -> str:
        var.set("mine")
        steps.append("first")
        await asyncio.sleep(0.01)
        steps.append(f"after the wait: {var.get()}")
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, 5)
        return f"got {await fut}"

    async def main() -> None:
        task = eager.start(asyncio.get_running_loop(), handler())
        assert task is not None and steps == ["first"]
        assert await task == "got 5"
        assert steps == ["first", "after the wait: mine"]
        assert var.get() == "outside"

    loop.run_until_complete(main())


def test_what_the_first_step_raises_is_raised_and_later_ones_fail_the_task(loop: Any) -> None:
    async def at_once() -> None:
        raise KeyError("now")

    async def later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    async def main() -> None:
        with pytest.raises(KeyError, match="now"):
            eager.start(asyncio.get_running_loop(), at_once())
        task = eager.start(asyncio.get_running_loop(), later())
        assert task is not None
        with pytest.raises(KeyError, match="later"):
            await task

    loop.run_until_complete(main())


def test_cancelling_it_reaches_the_coroutine_even_before_its_task_ran(loop: Any) -> None:
    cleaned: list[str] = []

    async def handler() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally")

    async def main() -> None:
        task = eager.start(asyncio.get_running_loop(), handler())
        assert task is not None
        task.cancel()  # before the task's first step
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == ["finally"]
        later = eager.start(asyncio.get_running_loop(), handler())
        assert later is not None
        await asyncio.sleep(0.01)
        later.cancel()  # while it waits inside the task
        with pytest.raises(asyncio.CancelledError):
            await later
        assert cleaned == ["finally", "finally"]

    loop.run_until_complete(main())


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def test_the_answers_sent_while_a_read_is_handled_leave_in_one_write() -> None:
    link: ClientLink

    def on_message(message: p.Message) -> None:
        assert isinstance(message, p.InvokeFunction)
        link.send(p.InvocationResult(invocation_id=message.invocation_id or "",
                                     function_id=message.function_id, result=message.data))

    link = ClientLink(on_message, lambda: None, 1 << 20)
    transport = CountingTransport()
    link.connection_made(transport)
    frames = b"".join(p.encode(p.InvokeFunction(function_id="f", data=p.to_raw(n),
                                                invocation_id=f"i{n}")) for n in range(3))
    link.data_received(frames)
    assert len(transport.writes) == 1
    answers = [p.decode(line) for line in transport.writes[0].splitlines()]
    assert [(a.invocation_id, p.from_raw(a.result)) for a in answers  # type: ignore[union-attr]
            ] == [("i0", 0), ("i1", 1), ("i2", 2)]
    link.send(p.Ping())  # outside a read: at once
    assert transport.writes[-1] == p.encode(p.Ping())
