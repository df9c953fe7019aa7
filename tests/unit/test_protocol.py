from __future__ import annotations

import json

import pytest

from iii_sdk import protocol as p
from iii_sdk.errors import ProtocolError


def test_every_message_round_trips_with_its_type_tag() -> None:
    messages = [
        p.RegisterFunction(id="f", description="d", metadata={"k": 1}),
        p.UnregisterFunction(id="f"),
        p.InvokeFunction(function_id="f", data=p.to_raw({"a": 1}), invocation_id="i",
                         action={"type": "void"}, timeout_ms=5),
        p.InvocationResult(invocation_id="i", function_id="f", result=p.to_raw([1])),
        p.RegisterTrigger(id="t", trigger_type="cron", function_id="f",
                          config={"expression": "* * * * * *"}),
        p.UnregisterTrigger(id="t", trigger_type="cron"),
        p.RegisterTriggerType(id="webhook", description="d"),
        p.UnregisterTriggerType(id="webhook"),
        p.TriggerRegistrationResult(id="t", trigger_type="cron", function_id="f"),
        p.RegisterActionType(id="delay", function_id="f"),
        p.Watch(),
        p.Ping(),
        p.Reattach(previous_worker_id="w", reattach_token="t"),
        p.WorkerRegistered(worker_id="w", reattach_token="t"),
        p.RegistrationRejected(code="FUNCTION_NAMESPACE_CONFLICT", function_id="f",
                               owner_worker_id="w", message="m"),
        p.Event(event="x"),
        p.Error(code="bad_frame", message="m"),
        p.Pong(),
    ]
    for message in messages:
        frame = p.encode(message)
        assert frame.endswith(b"\n") and frame.count(b"\n") == 1
        assert json.loads(frame)["type"] == message.__struct_config__.tag
        again = p.decode(frame[:-1])
        assert p.encode(again) == frame


def test_absent_optional_fields_are_left_out() -> None:
    assert p.encode(p.InvokeFunction(function_id="f")) == \
        b'{"type":"invokefunction","function_id":"f"}\n'


def test_unknown_fields_are_ignored() -> None:
    message = p.decode(b'{"type":"ping","caller":{"x":1},"observe_depth":2}')
    assert isinstance(message, p.Ping)


@pytest.mark.parametrize("frame", [b"", b"{", b"null", b'"s"', b'{"type":1}',
                                   b'{"type":"invokefunction","function_id":null}',
                                   b'\xff'])
def test_bad_frames_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        p.decode(frame)


def test_to_raw_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="not JSON serialisable"):
        p.to_raw({"s": object()})
    assert p.from_raw(p.to_raw({"a": [1, "é"]})) == {"a": [1, "é"]}


def test_loads_object_salvages_only_objects() -> None:
    assert p.loads_object(b'{"a":1}') == {"a": 1}
    assert p.loads_object(b"[1]") is None
    assert p.loads_object(b"{") is None


def test_error_body_reads_well_formed_errors_and_shows_malformed_ones() -> None:
    body = p.error_body({"code": "E1", "message": "m", "stacktrace": "s", "extra": 1})
    assert body == p.ErrorBody(code="E1", message="m", stacktrace="s")
    assert p.error_body({"code": "E1", "message": "m", "stacktrace": 7}).stacktrace is None
    same = p.ErrorBody(code="c", message="m")
    assert p.error_body(same) is same
    for malformed in ("boom", {"code": 1, "message": "m"}, {"code": "c"}, ["x"], 42):
        body = p.error_body(malformed, "UNKNOWN")
        assert body.code == "UNKNOWN" and repr(malformed) in body.message
    assert len(p.error_body("x" * 10_000).message) == 1000
