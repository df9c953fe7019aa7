"""Random and malformed frames never crash the router nor disturb another connection."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iii_daemon.core.effects import Close, Emit
from iii_daemon.core.router import Router
from iii_sdk import protocol as p
from iii_sdk.errors import ProtocolError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
types = st.sampled_from(["invokefunction", "invocationresult", "registerfunction",
                         "unregisterfunction", "registeractiontype", "reattach", "ping",
                         "pong", "error", "registertrigger", "watch", "bogus"])
fields = st.sampled_from(["id", "function_id", "invocation_id", "data", "action",
                          "timeout_ms", "result", "error", "metadata", "previous_worker_id",
                          "reattach_token"])
frames = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda t, extra: json.dumps({"type": t, **extra}).encode(), types,
              st.dictionaries(fields, json_values, max_size=5)),
)


def feed(router: Router, conn_id: int, frame: bytes, now: float) -> list[Any]:
    try:
        message = p.decode(frame)
    except ProtocolError as exc:
        return router.bad_frame(conn_id, frame, str(exc))
    return router.handle(conn_id, message, now)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=25))
def test_garbage_from_one_connection_leaves_another_working(garbage: list[bytes]) -> None:
    router = Router()
    router.connect(1, "unix", 0)  # honest worker
    router.connect(2, "unix", 0)  # honest caller
    router.connect(3, "unix", 0)  # fuzzer
    router.handle(1, p.RegisterFunction(id="echo"), 0)
    now = 0.0
    for frame in garbage:
        now += 0.1
        for conn_id, message in feed(router, 3, frame, now):
            # Whatever the fuzzer provokes is addressed to itself or goes to the worker
            # as a call; nothing is sent to the caller, and every message encodes.
            if isinstance(message, Emit):
                continue  # an event, not a message to anyone
            assert conn_id in (1, 3)
            if not isinstance(message, Close):
                p.encode(message)
        router.expire(now)
    # The honest pair still works, whatever the fuzzer did to the registry.
    if router.registry.functions.get("echo") is None or \
            router.registry.functions["echo"].owner != 1:
        return  # the fuzzer may have taken no id of ours: registration is first-come
    out = router.handle(2, p.InvokeFunction(function_id="echo", invocation_id="c",
                                            data=p.to_raw(1)), now)
    [(worker, sent)] = [(c, m) for c, m in out if not isinstance(m, Emit)]  # (it may watch)
    assert worker == 1 and isinstance(sent, p.InvokeFunction)
    [(caller, answer)] = [(c, m) for c, m in router.handle(
        1, p.InvocationResult(invocation_id=sent.invocation_id or "", result=p.to_raw(2)), now)
        if not isinstance(m, Emit)]
    assert caller == 2 and isinstance(answer, p.InvocationResult)
    assert bytes(answer.result) == b"2"
