"""The router core, without sockets: every routing rule of protocol.md § Session and § Calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from iii_daemon.core.effects import EVENTS, Close, Emit, HttpReply, Persist, StreamPush
from iii_daemon.core.router import Router
from iii_sdk import protocol as p
from iii_sdk.errors import ProtocolError
from tests.unit.disk import Disk


class Core:
    """Drives a Router with JSON frames, as a transport would, and returns JSON out."""

    def __init__(self) -> None:
        self.router = Router()
        self.disk = Disk()
        self.now = 100.0
        self.hello: dict[int, dict[str, Any]] = {}

    def connect(self, *conn_ids: int) -> None:
        for conn_id in conn_ids:
            out = self._render(self.router.connect(conn_id, "unix", 1_700_000_000.0))
            assert out == [(conn_id, out[0][1])] and out[0][1]["type"] == "workerregistered"
            self.hello[conn_id] = out[0][1]

    def send(self, conn_id: int, message: dict[str, Any] | bytes) -> list[tuple[int, Any]]:
        frame = message if isinstance(message, bytes) else json.dumps(message).encode()
        try:
            decoded = p.decode(frame)
        except ProtocolError as exc:
            return self._render(self.router.bad_frame(conn_id, frame, str(exc)))
        return self._render(self.router.handle(conn_id, decoded, self.now))

    def disconnect(self, conn_id: int) -> list[tuple[int, Any]]:
        return self._render(self.router.disconnect(conn_id))

    def advance(self, seconds: float) -> list[tuple[int, Any]]:
        self.now += seconds
        return self._render(self.router.expire(self.now))

    def land(self) -> list[tuple[int, Any]]:
        """Commit the writes the disk held back, as the store writer would, and hand
        them back to the core in order."""
        rendered: list[tuple[int, Any]] = []
        held, self.disk.held = self.disk.held, []
        for persist in held:
            self.disk.commit(persist)
            rendered += self._render(self.router.persisted(persist, self.now))
        return rendered

    def _render(self, out: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """Wire messages as JSON, Close as "CLOSE"; events (Emit) are no wire output:
        tests read them from the router's history. Writes (Persist) go to the disk;
        what the core does once they landed takes their place."""
        rendered: list[tuple[int, Any]] = []
        for conn_id, message in out:
            if isinstance(message, Emit):
                assert conn_id == EVENTS
                continue
            if isinstance(message, Persist):
                assert conn_id == EVENTS
                if self.disk.take(message):
                    rendered += self._render(self.router.persisted(message, self.now))
                continue
            if isinstance(message, HttpReply):
                rendered.append((conn_id, message))
            elif isinstance(message, Close):
                rendered.append((conn_id, "CLOSE"))
            elif isinstance(message, StreamPush):  # frames for a stream-socket client
                for client_id, frame in message.frames:
                    rendered.append((conn_id, ("push", client_id, [json.loads(frame)])))
            else:
                rendered.append((conn_id, json.loads(p.encode(message))))
        return rendered

    def register(self, conn_id: int, function_id: str) -> list[tuple[int, Any]]:
        return self.send(conn_id, {"type": "registerfunction", "id": function_id})

    def call(self, conn_id: int, function_id: str, data: Any = None,
             **fields: Any) -> list[tuple[int, Any]]:
        return self.send(conn_id, {"type": "invokefunction", "function_id": function_id,
                                   "data": data, **fields})


@pytest.fixture
def core() -> Core:
    c = Core()
    c.connect(1)  # worker
    c.connect(2)  # caller
    return c


def routed(out: list[tuple[int, Any]]) -> dict[str, Any]:
    """The single invokefunction sent to the worker (connection 1)."""
    assert len(out) == 1 and out[0][0] == 1 and out[0][1]["type"] == "invokefunction", out
    message: dict[str, Any] = out[0][1]
    return message


def result(invocation_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": "invocationresult", "invocation_id": invocation_id, **fields}


# --- session ----------------------------------------------------------------------------


def test_each_connection_gets_its_own_worker_id_and_token(core: Core) -> None:
    assert core.hello[1]["worker_id"] != core.hello[2]["worker_id"]
    assert core.hello[1]["reattach_token"] != core.hello[2]["reattach_token"]
    assert core.hello[1]["features"] == ["observe.v1", "local-dispatch.v1"]


def test_ping_pong(core: Core) -> None:
    assert core.send(2, {"type": "ping"}) == [(2, {"type": "pong"})]


@pytest.mark.parametrize("frame, fragment", [
    (b"not json", "malformed"),
    (b"[1, 2]", "Expected `object`"),
    (b'{"type": "teleport"}', "Invalid value 'teleport'"),
    (b'{"id": "x"}', "missing required field `type`"),
    (b'{"type": "registerfunction"}', "missing required field `id`"),
    (b'{"type": "registerfunction", "id": 5}', "Expected `str`"),
])
def test_bad_frames_get_a_bad_frame_error(core: Core, frame: bytes, fragment: str) -> None:
    [(conn, error)] = core.send(2, frame)
    assert conn == 2 and error["type"] == "error" and error["code"] == "bad_frame"
    assert fragment in error["message"]


def test_a_bad_call_with_an_id_is_answered_with_an_invocationresult(core: Core) -> None:
    out = core.send(2, b'{"type":"invokefunction","function_id":"f","invocation_id":"c1",'
                       b'"timeout_ms":"soon"}')
    assert out == [(2, {"type": "invocationresult", "invocation_id": "c1", "function_id": "f",
                        "error": {"code": "bad_frame",
                                  "message": "Expected `int | null`, got `str` - at "
                                             "`$.timeout_ms`"}})]


def test_unknown_fields_are_ignored(core: Core) -> None:
    assert core.send(1, {"type": "registerfunction", "id": "f", "namespace": "x",
                         "observe": {"a": 1}}) == []
    assert "f" in core.router.registry.functions


def test_messages_only_the_daemon_sends_are_refused(core: Core) -> None:
    [(_, error)] = core.send(2, {"type": "pong"})
    assert error["code"] == "bad_frame" and "'pong'" in error["message"]


# --- registration -----------------------------------------------------------------------


def test_registration_has_no_reply_and_a_second_owner_is_rejected(core: Core) -> None:
    assert core.register(1, "math::add") == []
    assert core.register(1, "math::add") == []  # same connection again: replace
    [(conn, rejected)] = core.register(2, "math::add")
    assert conn == 2
    assert rejected == {"type": "registrationrejected", "code": "FUNCTION_NAMESPACE_CONFLICT",
                        "function_id": "math::add",
                        "owner_worker_id": core.hello[1]["worker_id"],
                        "message": rejected["message"]}


@pytest.mark.parametrize("function_id", ["engine::functions::list", "engine::anything"])
def test_daemon_ids_are_reserved(core: Core, function_id: str) -> None:
    [(_, rejected)] = core.register(1, function_id)
    assert rejected["type"] == "registrationrejected"
    assert rejected["code"] == "FUNCTION_NAMESPACE_CONFLICT"
    assert rejected["owner_worker_id"] is None


def test_unregister_stops_serving(core: Core) -> None:
    core.register(1, "f")
    core.send(2, {"type": "unregisterfunction", "id": "f"})  # not the owner: no effect
    assert "f" in core.router.registry.functions
    core.send(1, {"type": "unregisterfunction", "id": "f"})
    [(_, answer)] = core.call(2, "f", invocation_id="c1")
    assert answer["error"]["code"] == "function_not_found"


def test_empty_function_id_is_refused(core: Core) -> None:
    [(_, error)] = core.register(1, "")
    assert error["type"] == "error" and error["code"] == "bad_request"


# --- synchronous calls ------------------------------------------------------------------


def test_sync_call_is_routed_with_a_daemon_id_and_answered_with_the_callers_id(
        core: Core) -> None:
    core.register(1, "math::add")
    sent = routed(core.call(2, "math::add", {"a": 1, "b": 2}, invocation_id="mine",
                            metadata={"tenant": "t1"}, traceparent="00-abc-01"))
    assert sent["invocation_id"] != "mine"
    assert sent["data"] == {"a": 1, "b": 2}
    assert sent["metadata"] == {"tenant": "t1"}  # apart from data, never mixed in
    assert sent["traceparent"] == "00-abc-01"
    out = core.send(1, result(sent["invocation_id"], result={"sum": 3}))
    assert out == [(2, {"type": "invocationresult", "invocation_id": "mine",
                        "function_id": "math::add", "result": {"sum": 3}})]
    # Exactly once: a repeated answer goes nowhere.
    assert core.send(1, result(sent["invocation_id"], result={"sum": 4})) == []


def test_payload_passes_through_byte_for_byte(core: Core) -> None:
    core.register(1, "f")
    raw = b'{"type":"invokefunction","function_id":"f","invocation_id":"c",' \
          b'"data":{"z":1,"a":[1.50,"\\u00e9"]}}'
    [(_, sent)] = core.router.handle(2, p.decode(raw), core.now)
    assert isinstance(sent, p.InvokeFunction)
    assert bytes(sent.data) == b'{"z":1,"a":[1.50,"\\u00e9"]}'


def test_two_callers_may_use_the_same_invocation_id(core: Core) -> None:
    core.connect(3)
    core.register(1, "f")
    first = routed(core.call(2, "f", 1, invocation_id="same"))
    second = routed(core.call(3, "f", 2, invocation_id="same"))
    assert first["invocation_id"] != second["invocation_id"]
    assert core.send(1, result(second["invocation_id"], result="two"))[0][0] == 3
    assert core.send(1, result(first["invocation_id"], result="one"))[0][0] == 2


def test_unknown_function_is_answered_at_once(core: Core) -> None:
    out = core.call(2, "nope", invocation_id="c1")
    assert out == [(2, {"type": "invocationresult", "invocation_id": "c1",
                        "function_id": "nope",
                        "error": {"code": "function_not_found",
                                  "message": "Function 'nope' not found"}})]


def test_a_call_without_invocation_id_is_never_answered(core: Core) -> None:
    assert core.call(2, "nope") == []
    core.register(1, "f")
    sent = routed(core.call(2, "f"))
    assert sent["invocation_id"]  # the worker still gets an id of the daemon's choosing
    assert core.send(1, result(sent["invocation_id"], result=1)) == []


def test_handler_errors_pass_through_unchanged(core: Core) -> None:
    core.register(1, "f")
    sent = routed(core.call(2, "f", invocation_id="c"))
    error = {"code": "division_by_zero", "message": "no", "stacktrace": "tb", "extra": 1}
    [(_, answer)] = core.send(1, result(sent["invocation_id"], error=error))
    assert answer["error"] == error
    assert "result" not in answer


def test_the_error_wins_over_a_result(core: Core) -> None:
    core.register(1, "f")
    sent = routed(core.call(2, "f", invocation_id="c"))
    [(_, answer)] = core.send(1, result(sent["invocation_id"], result=5,
                                        error={"code": "x", "message": "y"}))
    assert answer["error"] == {"code": "x", "message": "y"} and "result" not in answer


def test_a_malformed_worker_error_becomes_invocation_failed(core: Core) -> None:
    core.register(1, "f")
    sent = routed(core.call(2, "f", invocation_id="c"))
    [(_, answer)] = core.send(1, result(sent["invocation_id"], error="oops"))
    assert answer["error"]["code"] == "invocation_failed"
    assert "oops" in answer["error"]["message"]


def test_a_well_formed_worker_error_reaches_the_caller_unchanged(core: Core) -> None:
    core.register(1, "f")
    sent = routed(core.call(2, "f", invocation_id="c"))
    error = {"code": "payment_declined", "message": "no", "stacktrace": "s", "retry": True}
    [(_, answer)] = core.send(1, result(sent["invocation_id"], error=error))
    assert answer["error"] == error


def test_only_the_serving_worker_may_answer(core: Core) -> None:
    core.register(1, "f")
    sent = routed(core.call(2, "f", invocation_id="c"))
    assert core.send(2, result(sent["invocation_id"], result="forged")) == []
    assert core.send(1, result(sent["invocation_id"], result="real"))[0][1]["result"] == "real"


# --- timeouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_ms", [0, -5])
def test_timeout_ms_must_be_positive(core: Core, timeout_ms: int) -> None:
    core.register(1, "f")
    [(_, answer)] = core.call(2, "f", invocation_id="c", timeout_ms=timeout_ms)
    assert answer["error"]["code"] == "bad_request"


def test_timeout_answers_TIMEOUT_and_drops_the_late_result(core: Core) -> None:
    core.register(1, "f")
    sent = routed(core.call(2, "f", invocation_id="c", timeout_ms=500))
    assert core.router.next_deadline() == pytest.approx(core.now + 0.5)
    assert core.advance(0.4) == []
    [(conn, answer)] = core.advance(0.2)
    assert conn == 2 and answer["invocation_id"] == "c"
    assert answer["error"]["code"] == "TIMEOUT"
    assert "500 ms" in answer["error"]["message"]
    assert core.send(1, result(sent["invocation_id"], result="late")) == []
    assert core.router.next_deadline() is None


def test_an_answered_call_does_not_time_out(core: Core) -> None:
    core.register(1, "f")
    sent = routed(core.call(2, "f", invocation_id="c", timeout_ms=100))
    core.send(1, result(sent["invocation_id"], result=1))
    assert core.advance(1.0) == []


# --- void -------------------------------------------------------------------------------


def test_void_without_id_is_silent_even_when_the_function_is_missing(core: Core) -> None:
    assert core.call(2, "nope", action={"type": "void"}) == []


def test_void_with_id_is_acknowledged_once_handed_over(core: Core) -> None:
    core.register(1, "f")
    out = core.call(2, "f", 7, invocation_id="v", action={"type": "void"})
    assert out[0][0] == 1 and out[0][1]["data"] == 7 and "action" not in out[0][1]
    assert out[1] == (2, {"type": "invocationresult", "invocation_id": "v",
                          "function_id": "f"})
    # The function's own result is never returned.
    assert core.send(1, result(out[0][1]["invocation_id"], result="ignored")) == []


def test_void_with_id_reports_a_missing_function(core: Core) -> None:
    [(_, answer)] = core.call(2, "nope", invocation_id="v", action={"type": "void"})
    assert answer["error"]["code"] == "function_not_found"


def test_void_calls_do_not_time_out(core: Core) -> None:
    core.register(1, "f")
    core.call(2, "f", invocation_id="v", action={"type": "void"}, timeout_ms=10)
    assert core.advance(1.0) == []


# --- disconnects ------------------------------------------------------------------------


def test_worker_disconnect_stops_its_calls_and_frees_its_ids(core: Core) -> None:
    core.connect(3)
    core.register(1, "f")
    routed(core.call(2, "f", invocation_id="a"))
    routed(core.call(3, "f", invocation_id="b"))
    routed(core.call(2, "f"))  # nobody waits on this one
    out = core.disconnect(1)
    assert sorted((conn, m["invocation_id"], m["error"]["code"]) for conn, m in out) == [
        (2, "a", "invocation_stopped"), (3, "b", "invocation_stopped")]
    assert len(core.router.invocations) == 0
    assert core.router.registry.functions == {}
    assert core.register(3, "f") == []  # the id is free again at once


def test_caller_disconnect_forgets_its_calls(core: Core) -> None:
    core.register(1, "f")
    sent = routed(core.call(2, "f", invocation_id="a", timeout_ms=1000))
    assert core.disconnect(2) == []
    assert len(core.router.invocations) == 0
    assert core.send(1, result(sent["invocation_id"], result=1)) == []
    assert core.advance(5) == []
    assert core.router.registry.connections[1].serving == set()


def test_a_worker_calling_itself_and_disconnecting(core: Core) -> None:
    core.register(1, "f")
    routed(core.call(1, "f", invocation_id="self"))
    assert core.disconnect(1) == []  # nobody left to tell


def test_disconnect_of_an_unknown_connection_is_harmless(core: Core) -> None:
    assert core.disconnect(99) == []
    assert core.send(99, {"type": "ping"}) == []


def test_shutdown_stops_every_waiting_call(core: Core) -> None:
    core.register(1, "f")
    routed(core.call(2, "f", invocation_id="a"))
    out = core._render(core.router.shutdown())
    assert [(c, m["error"]["code"]) for c, m in out] == [(2, "invocation_stopped")]


# --- reattach ---------------------------------------------------------------------------


def test_reattach_with_the_right_token_retires_the_old_connection(core: Core) -> None:
    core.register(1, "f")
    routed(core.call(2, "f", invocation_id="a"))
    core.connect(3)
    out = core.send(3, {"type": "reattach", "previous_worker_id": core.hello[1]["worker_id"],
                        "reattach_token": core.hello[1]["reattach_token"]})
    assert (2, "invocation_stopped") in [(c, m["error"]["code"]) for c, m in out
                                         if m != "CLOSE"]
    assert (1, "CLOSE") in out
    assert 1 not in core.router.registry.connections
    assert core.register(3, "f") == []  # the replayed registration lands cleanly


@pytest.mark.parametrize("token", ["wrong", None])
def test_reattach_with_a_wrong_token_is_ignored(core: Core, token: str | None) -> None:
    core.register(1, "f")
    core.connect(3)
    message = {"type": "reattach", "previous_worker_id": core.hello[1]["worker_id"]}
    if token:
        message["reattach_token"] = token
    assert core.send(3, message) == []
    assert 1 in core.router.registry.connections


# --- daemon functions -------------------------------------------------------------------


def test_functions_list_includes_daemon_and_worker_functions(core: Core) -> None:
    core.send(1, {"type": "registerfunction", "id": "math::add", "description": "adds",
                  "request_format": {"type": "object"}, "metadata": {"v": 1}})
    [(_, answer)] = core.call(2, "engine::functions::list", invocation_id="l")
    functions = {f["function_id"]: f for f in answer["result"]["functions"]}
    assert functions["math::add"] == {
        "function_id": "math::add", "description": "adds",
        "request_format": {"type": "object"}, "response_format": None,
        "metadata": {"v": 1}, "worker_name": core.hello[1]["worker_id"],
        "worker_id": core.hello[1]["worker_id"]}
    assert functions["state::set"]["worker_name"] == "daemon"
    assert not [f for f in functions if f.startswith("engine::")]
    [(_, answer)] = core.call(2, "engine::functions::list", {"include_internal": True},
                              invocation_id="l")
    functions = {f["function_id"]: f for f in answer["result"]["functions"]}
    assert functions["engine::workers::list"]["worker_id"] is None


def test_workers_register_records_metadata_shown_by_workers_list(core: Core) -> None:
    core.register(1, "f")
    assert core.call(1, "engine::workers::register",
                     {"name": "w1", "runtime": "python", "version": "1", "pid": 42,
                      "os": "Linux"}, action={"type": "void"}) == []
    [(_, answer)] = core.call(2, "engine::workers::list", invocation_id="l")
    [worker] = answer["result"]["workers"]  # the caller registered nothing: not a worker
    assert worker == {"id": core.hello[1]["worker_id"], "name": "w1", "status": "connected",
                      "function_count": 1, "functions": ["f"],
                      "connected_at_ms": 1_700_000_000_000, "active_invocations": 0,
                      "runtime": "python", "version": "1", "pid": 42, "os": "Linux",
                      "transport": "unix", "connected_at": "2023-11-14T22:13:20+00:00",
                      "managed": None, "managed_status": None}


def test_daemon_functions_answer_void_like_any_function(core: Core) -> None:
    [(_, answer)] = core.call(2, "engine::functions::list", invocation_id="v",
                              action={"type": "void"})
    assert answer == {"type": "invocationresult", "invocation_id": "v",
                      "function_id": "engine::functions::list"}


def test_daemon_function_errors_reach_the_caller(core: Core) -> None:
    [(_, answer)] = core.call(2, "engine::workers::register", "not an object",
                              invocation_id="r")
    assert answer["error"]["code"] == "bad_request"


# --- actions ----------------------------------------------------------------------------


def test_unknown_action_type(core: Core) -> None:
    [(_, answer)] = core.call(2, "f", invocation_id="a", action={"type": "delay", "ms": 5})
    assert answer["error"]["code"] == "action_not_found"
    [(_, answer)] = core.call(2, "f", invocation_id="b", action={"type": 5})
    assert answer["error"]["code"] == "bad_request"


def test_worker_provided_action_calls_the_provider_synchronously(core: Core) -> None:
    core.register(1, "delay::run")
    assert core.send(1, {"type": "registeractiontype", "id": "delay",
                         "function_id": "delay::run"}) == []
    sent = routed(core.call(2, "mail::send", {"to": "a"}, invocation_id="d",
                            action={"type": "delay", "ms": 5000}))
    assert sent["function_id"] == "delay::run"
    assert sent["data"] == {"function_id": "mail::send", "payload": {"to": "a"},
                            "action": {"type": "delay", "ms": 5000},
                            "caller": {"worker_id": core.hello[2]["worker_id"]}}
    [(conn, answer)] = core.send(1, result(sent["invocation_id"], result={"scheduled_at": 1}))
    assert conn == 2 and answer["invocation_id"] == "d"
    assert answer["result"] == {"scheduled_at": 1}


@pytest.mark.parametrize("action_id", ["void", "enqueue", ""])
def test_reserved_action_types(core: Core, action_id: str) -> None:
    [(_, error)] = core.send(1, {"type": "registeractiontype", "id": action_id,
                                 "function_id": "x"})
    assert error["code"] == "bad_request"


def test_action_types_belong_to_one_worker_and_leave_with_it(core: Core) -> None:
    core.send(1, {"type": "registeractiontype", "id": "delay", "function_id": "x"})
    [(_, error)] = core.send(2, {"type": "registeractiontype", "id": "delay",
                                 "function_id": "y"})
    assert error["code"] == "bad_request"
    core.disconnect(1)
    assert core.send(2, {"type": "registeractiontype", "id": "delay",
                         "function_id": "y"}) == []


# --- not yet built ---------------------------------------------------------------------



def test_a_bad_watch_filter_is_a_bad_request(core: Core) -> None:
    for bad in ({"nope": 1}, {"kinds": "invocation"}, {"errors": "yes"}, [1]):
        [(_, error)] = core.send(1, {"type": "watch", "filter": bad})
        assert error["type"] == "error" and error["code"] == "bad_request", bad
    [(_, error)] = core.send(1, {"type": "watch", "replay": -1})
    assert error["code"] == "bad_request"
    assert not core.router.watchers


def test_actions_list(core: Core) -> None:
    core.send(1, {"type": "registeractiontype", "id": "delay", "function_id": "d::run",
                  "description": "later"})
    [(_, answer)] = core.call(2, "engine::actions::list", invocation_id="a")
    assert answer["result"] == {"actions": [{"id": "delay", "function_id": "d::run",
                                             "description": "later",
                                             "worker_id": core.hello[1]["worker_id"]}]}


def test_a_result_over_the_frame_limit_fails_that_call_only(core: Core) -> None:
    """Issue: the daemon dropped the whole worker for one oversized result."""
    core.register(1, "big")
    core.register(1, "small")
    [(_, big)] = core.call(2, "big", None, invocation_id="c1")
    [(_, small)] = core.call(2, "small", None, invocation_id="c2")
    head = json.dumps({"type": "invocationresult",
                       "invocation_id": big["invocation_id"], "result": "x"}).encode()
    out = core._render(core.router.oversized_frame(1, head[:-4], b'xx"}', 99_000, 1000,
                                                   core.now))
    assert out[0] == (2, {"type": "invocationresult", "invocation_id": "c1",
                          "function_id": "big", "error": {
                              "code": "result_too_large",
                              "message": "the result of big is 99000 bytes, more than the "
                                         "daemon's frame limit of 1000 bytes "
                                         "(max_frame_bytes)"}})
    assert out[1][0] == 1 and out[1][1]["type"] == "error"  # the worker is told why
    assert core.send(1, result(small["invocation_id"], result=1)) == [
        (2, {"type": "invocationresult", "invocation_id": "c2", "function_id": "small",
             "result": 1})]  # still connected, still served


def test_an_oversized_frame_that_names_no_call_of_its_sender_costs_nothing_else(
        core: Core) -> None:
    core.register(1, "f")
    [(_, sent)] = core.call(2, "f", None, invocation_id="c1")
    # Another connection cannot fail a call it does not serve.
    forged = json.dumps({"type": "invocationresult",
                         "invocation_id": sent["invocation_id"]}).encode()
    out = core._render(core.router.oversized_frame(2, forged, forged, 5000, 1000, core.now))
    assert [m["type"] for _, m in out] == ["error"]
    # A call too large is answered as one, so its caller does not wait.
    call = b'{"type":"invokefunction","function_id":"f","invocation_id":"c9","data":"'
    [(conn, answer)] = core._render(core.router.oversized_frame(2, call, b'"}', 5000, 1000,
                                                               core.now))
    assert conn == 2 and answer["invocation_id"] == "c9"
    assert answer["error"]["code"] == "bad_request"
    # Unreadable ends: an error frame, nothing more.
    assert [m["type"] for _, m in core._render(core.router.oversized_frame(
        1, b"\xff" * 10, b"", 5000, 1000, core.now))] == ["error"]
