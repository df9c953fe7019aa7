"""The caller side: a lean asyncio client, so the figures are the server's, not ours.

Prints one JSON object: sequential sync calls (throughput, p50, p99), pipelined sync
calls (``WINDOW`` in flight) and void calls.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import uvloop

from iii_sdk import protocol as p
from iii_sdk.client_link import ClientLink
from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES

#: Sync calls in flight at once in the pipelined figure (targets.md).
WINDOW = 256


async def main(path: str, calls: int, voids: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    waiters: dict[str, asyncio.Future[p.InvocationResult]] = {}

    pipeline = {"sent": 0, "answered": 0, "total": 0}
    pipelined_done = loop.create_future()

    def on_message(message: p.Message) -> None:
        if isinstance(message, p.InvocationResult):
            if message.invocation_id.startswith("p"):
                on_pipelined(message)
                return
            waiter = waiters.pop(message.invocation_id, None)
            if waiter is not None:
                waiter.set_result(message)

    def send_pipelined() -> None:
        n = pipeline["sent"] = pipeline["sent"] + 1
        link.send(p.InvokeFunction(function_id="bench::echo", data=p.to_raw({"n": n}),
                                   invocation_id=f"p{n}"))

    def on_pipelined(answer: p.InvocationResult) -> None:
        assert answer.error is None, answer.error
        pipeline["answered"] += 1
        if pipeline["sent"] < pipeline["total"]:
            send_pipelined()  # a slot came free: keep WINDOW in flight
        elif pipeline["answered"] == pipeline["total"]:
            pipelined_done.set_result(None)

    _, link = await loop.create_unix_connection(
        lambda: ClientLink(on_message, lambda: None, DEFAULT_MAX_FRAME_BYTES), path)

    async def call(n: int, function_id: str = "bench::echo") -> p.InvocationResult:
        invocation_id = f"c{n}"
        waiter = loop.create_future()
        waiters[invocation_id] = waiter
        link.send(p.InvokeFunction(function_id=function_id, data=p.to_raw({"n": n}),
                                   invocation_id=invocation_id))
        return await waiter

    for n in range(500):  # warm-up
        await call(n)
    samples = []
    started = time.perf_counter()
    for n in range(calls):
        t0 = time.perf_counter_ns()
        answer = await call(n)
        samples.append(time.perf_counter_ns() - t0)
        assert answer.error is None, answer.error
    elapsed = time.perf_counter() - started
    samples.sort()

    pipeline["total"] = calls
    started_pipelined = time.perf_counter()
    for _ in range(min(WINDOW, calls)):
        send_pipelined()
    await pipelined_done
    pipelined_elapsed = time.perf_counter() - started_pipelined

    void = p.encode(p.InvokeFunction(function_id="bench::tally", data=p.to_raw(1),
                                     action={"type": "void"}))
    before = p.from_raw((await call(-1, "bench::total")).result)
    started_void = time.perf_counter()
    batch = void * 256
    for _ in range(voids // 256):
        link._transport.write(batch)  # type: ignore[union-attr]
        await asyncio.sleep(0)
    # Frames on one connection are handled in order: when the worker has counted them
    # all, every void call went through the server.
    while p.from_raw((await call(-2, "bench::total")).result) - before < voids // 256 * 256:
        await asyncio.sleep(0.001)
    void_elapsed = time.perf_counter() - started_void
    return {
        "sync_calls_per_s": calls / elapsed,
        "sync_p50_us": samples[len(samples) // 2] / 1000,
        "sync_p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "pipelined_calls_per_s": calls / pipelined_elapsed,
        "void_calls_per_s": (voids // 256 * 256) / void_elapsed,
    }


if __name__ == "__main__":
    result = uvloop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    print(json.dumps(result))
