"""RBAC worker listeners against a real daemon: an auth function decides per connection
what a worker may call and register; the official SDK is the worker let in, and a raw
client tries every route around the rules."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import register_worker
from tests.helpers import ThreadDaemon, ask, free_port, official_worker, wait_for, wait_served

CONFIG = """
[[websocket.listeners]]
host = "127.0.0.1"
port = {port}
[websocket.listeners.rbac]
auth_function_id = "{auth}"
expose_functions = ['match("acme::public::*")', 'match("engine::functions::list")',
                    {{ metadata = {{ public = true }} }}]
"""

TEAMS: dict[str, dict[str, Any]] = {
    "ci": {"allowed_functions": ["acme::tools::build"],
           "forbidden_functions": ["acme::public::secret"],
           "function_registration_prefix": "ci::", "context": {"team": "ci"},
           "allowed_trigger_types": ["cron", "queue"]},
    "readonly": {"allow_function_registration": False},
}


class Acme:
    """A trusted worker on the Unix socket: the auth function and the functions the
    RBAC workers may or may not call (each records its calls)."""

    def __init__(self, daemon: Any) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.auth_inputs: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.worker = register_worker(str(daemon.socket_path))

        def auth(data: dict[str, Any]) -> dict[str, Any]:
            with self.lock:
                self.auth_inputs.append(data)
            team = data["headers"].get("x-team", "")
            if team not in TEAMS:
                raise PermissionError(f"unknown team {team!r}")
            return TEAMS[team]

        self.worker.register_function("acme::auth", auth)
        for function_id in ("acme::public::hello", "acme::public::secret", "acme::private",
                            "acme::tools::build"):
            self.worker.register_function(function_id, self._recorder(function_id))
        self.worker.register_function("acme::meta", self._recorder("acme::meta"),
                                      metadata={"public": True})
        self.worker.ping()

    def _recorder(self, function_id: str) -> Any:
        def handler(data: Any) -> Any:
            with self.lock:
                self.calls.append((function_id, data))
            return {"ran": function_id}

        return handler

    def called(self, function_id: str) -> list[Any]:
        with self.lock:
            return [d for f, d in self.calls if f == function_id]


@pytest.fixture
def rbac(short_tmp: Path) -> Iterator[tuple[ThreadDaemon, Acme, int]]:
    port = free_port()
    (short_tmp / "config.toml").write_text(CONFIG.format(port=port, auth="acme::auth"))
    daemon = ThreadDaemon(short_tmp).start()
    acme = Acme(daemon)
    yield daemon, acme, port
    acme.worker.shutdown()
    daemon.stop()


class Raw:
    """A bare WebSocket client on the RBAC listener: frames in, frames out."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        assert json.loads(self.ws.recv(10))["type"] == "workerregistered"

    @staticmethod
    @contextlib.contextmanager
    def on(port: int, team: str) -> Iterator[Raw]:
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}", additional_headers={"X-Team": team},
                     open_timeout=10) as ws:
            yield Raw(ws)

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def answer(self, **match: Any) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(self.ws.recv(10))
            if all(message.get(k) == v for k, v in match.items()):
                return message

    def call(self, function_id: str, **fields: Any) -> dict[str, Any]:
        self.send({"type": "invokefunction", "function_id": function_id,
                   "invocation_id": "c1", "data": {}, **fields})
        return self.answer(type="invocationresult", invocation_id="c1")


def test_the_auth_function_sees_the_handshake_and_its_answer_rules_the_calls(
        rbac: tuple[ThreadDaemon, Acme, int]) -> None:
    import iii

    daemon, acme, port = rbac
    official = official_worker(port, "ci-job", headers={"X-Team": "ci"})
    try:
        assert official.trigger({"function_id": "acme::public::hello", "payload": 1}) == {
            "ran": "acme::public::hello"}
        assert official.trigger({"function_id": "acme::tools::build"}) == {
            "ran": "acme::tools::build"}  # allowed_functions
        assert official.trigger({"function_id": "acme::meta"}) == {"ran": "acme::meta"}
        for function_id, rule in (("acme::private", "rbac.expose_functions"),
                                  ("acme::public::secret", "rbac.forbidden_functions")):
            with pytest.raises(iii.InvocationError) as refused:
                official.trigger({"function_id": function_id})
            assert refused.value.code == "FORBIDDEN"
            assert function_id in refused.value.message and rule in refused.value.message
        listed = {f["function_id"] for f in official.trigger(
            {"function_id": "engine::functions::list"})["functions"]}
        # What it may call, and nothing else (daemon functions are listed on request).
        assert listed == {"acme::public::hello", "acme::tools::build", "acme::meta"}
    finally:
        official.shutdown()
    [seen] = [a for a in acme.auth_inputs if a["headers"].get("x-team") == "ci"][:1]
    assert seen["ip_address"] == "127.0.0.1" and isinstance(seen["query_params"], dict)
    assert acme.called("acme::private") == acme.called("acme::public::secret") == []
    # The handshake's headers (credentials among them) are kept nowhere: not in events.
    auth_events = [e for e in ask(daemon, "engine::events::list")["events"]
                   if e.get("function_id") == "acme::auth"]
    assert auth_events and not any("x-team" in json.dumps(e) for e in auth_events)


def test_a_raising_or_missing_auth_function_refuses_the_connection(
        rbac: tuple[ThreadDaemon, Acme, int], short_tmp: Path) -> None:
    from websockets.exceptions import ConnectionClosed

    _, _, port = rbac
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}", additional_headers={"X-Team": "nobody"},
                 open_timeout=10) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "refused: acme::auth" in closed.value.rcvd.reason
    assert "unknown team" in closed.value.rcvd.reason
    # A listener whose auth function nobody serves lets nobody in.
    port2 = free_port()
    (short_tmp / "other").mkdir()
    (short_tmp / "other" / "config.toml").write_text(
        CONFIG.format(port=port2, auth="acme::missing"))
    other = ThreadDaemon(short_tmp / "other").start()
    try:
        with connect(f"ws://127.0.0.1:{port2}", open_timeout=10) as ws, \
                pytest.raises(ConnectionClosed) as closed:
            ws.recv(10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert "acme::missing" in closed.value.rcvd.reason
    finally:
        other.stop()


def test_registrations_take_the_prefix_and_the_flags(
        rbac: tuple[ThreadDaemon, Acme, int]) -> None:
    daemon, _, port = rbac
    official = official_worker(port, "ci-job", headers={"X-Team": "ci"})
    try:
        official.register_function("step", lambda data: {"step": data})
        wait_served(daemon, "ci::step")
        # Callers use the prefixed id; the worker's handler runs under its own name.
        assert ask(daemon, "ci::step", 5) == {"step": 5}
        assert official.trigger({"function_id": "step", "payload": 6}) == {"step": 6}
    finally:
        official.shutdown()
    with Raw.on(port, "readonly") as readonly:
        readonly.send({"type": "registerfunction", "id": "mine"})
        refused = readonly.answer(type="error")
        assert refused["code"] == "FORBIDDEN"
        assert "may not register functions" in refused["message"]
        readonly.send({"type": "registertriggertype", "id": "webhook", "description": "x"})
        refused = readonly.answer(type="error", request_type="registertriggertype")
        assert refused["code"] == "FORBIDDEN"
        assert "allow_trigger_type_registration" in refused["message"]
    names = {f["function_id"] for f in ask(daemon, "engine::functions::list")["functions"]}
    assert "mine" not in names
    refusals = [e for e in ask(daemon, "engine::events::list")["events"]
                if e.get("event") == "registration.refused"]  # as every refusal is told
    assert {(e["what"], e["id"]) for e in refusals} >= {("function", "mine"),
                                                       ("trigger type", "webhook")}


def test_no_route_reaches_a_forbidden_function(rbac: tuple[ThreadDaemon, Acme, int]) -> None:
    """A direct call, Void, Enqueue, an action, a trigger (target or condition), an
    observer (source or target): each is refused, and the function never runs."""
    daemon, acme, port = rbac
    with Raw.on(port, "ci") as ci:
        assert ci.call("acme::private")["error"]["code"] == "FORBIDDEN"
        ci.send({"type": "invokefunction", "function_id": "acme::private", "data": {},
                 "action": {"type": "void"}})
        enqueued = ci.call("acme::private", action={"type": "enqueue", "queue": "q"})
        assert enqueued["error"]["code"] == "FORBIDDEN"
        acted = ci.call("acme::private", action={"type": "custom"})
        assert acted["error"]["code"] == "FORBIDDEN"
        ci.send({"type": "registerfunction", "id": "mine"})  # ci::mine, its own
        for trigger_id, function_id, config in (
                ("t1", "acme::private", {"expression": "* * * * * *"}),
                ("t2", "mine", {"expression": "* * * * * *",
                                "condition_function_id": "acme::private"})):
            ci.send({"type": "registertrigger", "id": trigger_id, "trigger_type": "cron",
                     "function_id": function_id, "config": config})
            result = ci.answer(type="triggerregistrationresult", id=trigger_id)
            assert result["error"]["code"] == "FORBIDDEN", result
        ci.send({"type": "registertrigger", "id": "t3", "trigger_type": "state",
                 "function_id": "mine", "config": {}})
        result = ci.answer(type="triggerregistrationresult", id="t3")
        assert "allowed_trigger_types" in result["error"]["message"]
        for observer_id, source, target in (("o1", "acme::private", "mine"),
                                            ("o2", "acme::public::hello", "acme::private")):
            ci.send({"type": "observe", "id": observer_id, "source": {"function_id": source},
                     "target": {"function_id": target}})
            observed = ci.answer(type="observeresult", id=observer_id)
            assert observed["error"]["code"] == "FORBIDDEN", observed
        ci.send({"type": "watch"})  # every call's payload would show: refused
        assert ci.answer(type="error", request_type="watch")["code"] == "FORBIDDEN"
        ci.call("acme::public::hello")  # the void call above has long been handled
    assert acme.called("acme::private") == []
    registered = ask(daemon, "engine::registered-triggers::list")["registered_triggers"]
    assert not {"t1", "t2", "t3"} & {t["id"] for t in registered}


HOOKED = """
[[websocket.listeners]]
host = "127.0.0.1"
port = {port}
middleware_function_id = "acme::middleware"
[websocket.listeners.rbac]
auth_function_id = "acme::auth"
on_function_registration_function_id = "acme::on-fn-reg"
on_trigger_registration_function_id = "acme::on-trigger-reg"
on_trigger_type_registration_function_id = "acme::on-tt-reg"
expose_functions = ['match("acme::public::*")']
"""


def test_the_middleware_answers_for_each_call_with_the_auth_context(
        short_tmp: Path) -> None:
    port = free_port()
    (short_tmp / "config.toml").write_text(HOOKED.format(port=port))
    daemon = ThreadDaemon(short_tmp).start()
    acme = Acme(daemon)
    seen: list[dict[str, Any]] = []

    def middleware(data: dict[str, Any]) -> Any:
        seen.append(data)
        if data["payload"] == {"deny": True}:
            return {"denied": True}  # it answers for the call: the function never runs
        return acme.worker.trigger({"function_id": data["function_id"],
                                    "payload": data["payload"]})

    acme.worker.register_function("acme::middleware", middleware)
    acme.worker.ping()
    official = official_worker(port, "ci-job", headers={"X-Team": "ci"})
    try:
        assert official.trigger({"function_id": "acme::public::hello",
                                 "payload": {"x": 1}}) == {"ran": "acme::public::hello"}
        assert official.trigger({"function_id": "acme::public::hello",
                                 "payload": {"deny": True}}) == {"denied": True}
        import iii

        with pytest.raises(iii.InvocationError) as refused:  # the rules come first
            official.trigger({"function_id": "acme::private"})
        assert refused.value.code == "FORBIDDEN"
        # An owner's obs.call could not pass the middleware: behind one it is refused.
        kept: list[Any] = []
        acme.worker.register_function("acme::on-fn-reg", lambda data: {})  # let it in
        acme.worker.ping()
        official.register_function("ticks", lambda data: None, observe=iii.ObserveHooks(
            delivery="owner", on_observer_added=kept.append))
        wait_served(daemon, "ci::ticks")
        acme.worker.observe({"function_id": "ci::ticks"}, "acme::public::hello").ready(5)
        [observer] = wait_for(lambda: list(kept), message="the owner's hook")
        with pytest.raises(iii.InvocationError) as no_call:
            observer.call({"price": 1})
        assert no_call.value.code == "FORBIDDEN" and "obs.emit" in no_call.value.message
    finally:
        official.shutdown()
        acme.worker.shutdown()
        daemon.stop()
    assert seen[0] == {"function_id": "acme::public::hello", "payload": {"x": 1},
                       "action": None, "context": {"team": "ci"}, "namespace": "default"}
    assert acme.called("acme::public::hello") == [{"x": 1}]
    assert acme.called("acme::private") == []


def test_registration_hooks_see_each_registration_and_may_deny_or_rewrite_it(
        short_tmp: Path) -> None:
    port = free_port()
    (short_tmp / "config.toml").write_text(HOOKED.format(port=port))
    daemon = ThreadDaemon(short_tmp).start()
    acme = Acme(daemon)
    inputs: list[dict[str, Any]] = []

    def on_function(data: dict[str, Any]) -> dict[str, Any]:
        inputs.append(data)
        if data["function_id"].endswith("bad"):
            raise PermissionError("no bad functions")
        return {"description": f"checked for {data['context']['team']}"}

    def on_trigger(data: dict[str, Any]) -> dict[str, Any]:
        inputs.append(data)
        if data["trigger_id"] == "nope":
            raise PermissionError("not this one")
        return {"config": {**data["config"], "expression": "0 0 * * * *"}}

    acme.worker.register_function("acme::on-fn-reg", on_function)
    acme.worker.register_function("acme::on-trigger-reg", on_trigger)
    acme.worker.register_function("acme::on-tt-reg",
                                  lambda data: {"trigger_type_id": f"ci.{data['trigger_type_id']}"})
    acme.worker.ping()
    TEAMS["hooks"] = {"context": {"team": "hooks"}, "allow_trigger_type_registration": True}
    try:
        with Raw.on(port, "hooks") as hooks:
            hooks.send({"type": "registerfunction", "id": "good"})
            hooks.send({"type": "registerfunction", "id": "bad"})
            denied = hooks.answer(type="error", request_id="bad")
            assert denied["code"] == "FORBIDDEN"
            assert "acme::on-fn-reg denied it" in denied["message"]
            assert "no bad functions" in denied["message"]
            hooks.send({"type": "registertrigger", "id": "nope", "trigger_type": "cron",
                        "function_id": "good", "config": {"expression": "* * * * * *"}})
            refused = hooks.answer(type="triggerregistrationresult", id="nope")
            assert "not this one" in refused["error"]["message"]
            hooks.send({"type": "registertrigger", "id": "hourly", "trigger_type": "cron",
                        "function_id": "good", "config": {"expression": "* * * * * *"}})
            assert "error" not in hooks.answer(type="triggerregistrationresult", id="hourly")
            hooks.send({"type": "registertriggertype", "id": "webhook", "description": "w"})
            wait_for(lambda: "ci.webhook" in {t["id"] for t in ask(
                daemon, "engine::triggers::list")["triggers"]}, message="ci.webhook")
            functions = {f["function_id"]: f for f in ask(
                daemon, "engine::functions::list")["functions"]}
            assert functions["good"]["description"] == "checked for hooks"
            assert "bad" not in functions
            [hourly] = [t for t in ask(daemon, "engine::registered-triggers::list")[
                "registered_triggers"] if t["id"] == "hourly"]
            assert hourly["config"]["expression"] == "0 0 * * * *"  # as the hook rewrote it
    finally:
        TEAMS.pop("hooks")
        acme.worker.shutdown()
        daemon.stop()
    assert {"function_id": "good", "description": None, "metadata": None,
            "namespace": "default", "context": {"team": "hooks"}} in inputs


def test_http_middleware_runs_in_order_and_may_answer_the_request(short_tmp: Path) -> None:
    import urllib.error
    import urllib.request

    port = free_port()
    daemon = ThreadDaemon(short_tmp, "--http-port", str(port)).start()
    worker = register_worker(str(daemon.socket_path))
    seen: list[Any] = []
    handled: list[Any] = []

    def log_step(data: dict[str, Any]) -> None:
        seen.append(data)  # null: go on

    def check(data: dict[str, Any]) -> dict[str, Any]:
        if data["request"]["headers"].get("x-token") != "t0k":
            return {"status_code": 403, "body": {"error": "no token"}}
        return {"continue": True}

    try:
        worker.register_function("mw::log", log_step)
        worker.register_function("mw::check", check)
        worker.register_function("api::hello", lambda data: handled.append(data) or "hi")
        worker.register_trigger({"type": "http", "function_id": "api::hello", "config": {
            "api_path": "hello", "http_method": "GET",
            "middleware_function_ids": ["mw::log", "mw::check"]}}).ready(5)
        url = f"http://127.0.0.1:{port}/hello"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 403
        assert json.loads(refused.value.read()) == {"error": "no token"}
        assert handled == []  # the middleware answered: the handler never ran
        request = urllib.request.Request(url, headers={"X-Token": "t0k"})
        with urllib.request.urlopen(request, timeout=10) as ok:
            assert ok.status == 200 and json.loads(ok.read()) == "hi"
        assert len(handled) == 1 and len(seen) == 2
        assert seen[0]["phase"] == "request" and seen[0]["index"] == 0
        assert seen[0]["request"]["method"] == "GET" and seen[0]["request"]["path"] == "hello"
    finally:
        worker.shutdown()
        daemon.stop()


def test_the_readme_example_lets_in_whom_the_auth_function_says(short_tmp: Path) -> None:
    """README "Letting other workers in": its config and examples/auth_worker.py, with
    the official SDK presenting each token."""
    import re
    import subprocess
    import sys

    import iii

    from tests.helpers import REPO, child_env

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Letting other workers in"):readme.index("## The daemon")]
    config = re.search(r"```toml\n(.*?)```", section, re.S)
    assert config is not None
    port = free_port()
    (short_tmp / "config.toml").write_text(config.group(1).replace("49135", str(port)))
    daemon = ThreadDaemon(short_tmp).start()
    example = subprocess.Popen([sys.executable, str(REPO / "examples" / "auth_worker.py")],
                               env=child_env(short_tmp), stdout=subprocess.PIPE, text=True)
    try:
        assert example.stdout is not None and "acme-auth ready" in example.stdout.readline()

        def with_token(token: str) -> Any:
            return official_worker(port, token, headers={"Authorization": f"Bearer {token}"})

        ci = with_token("ci-token")
        try:
            assert ci.trigger({"function_id": "acme::public::hello"}) == {"hello": "world"}
            assert ci.trigger({"function_id": "acme::deploy", "payload": 1}) == {
                "deployed": 1}
            with pytest.raises(iii.InvocationError) as refused:
                ci.trigger({"function_id": "engine::managed::list"})
            assert refused.value.code == "FORBIDDEN"
        finally:
            ci.shutdown()
        partner = with_token("partner-token")
        try:
            with pytest.raises(iii.InvocationError) as refused:
                partner.trigger({"function_id": "acme::deploy"})
            assert refused.value.code == "FORBIDDEN"
        finally:
            partner.shutdown()
    finally:
        example.terminate()
        example.wait(10)
        daemon.stop()


def test_a_bridge_alias_is_one_more_function_the_rules_guard(short_tmp: Path) -> None:
    """A forward alias of a bridge reaches another engine: from an RBAC listener it is
    refused unless exposed like any function."""
    b_port, port = free_port(), free_port()
    (short_tmp / "b").mkdir()
    b = ThreadDaemon(short_tmp / "b", "--ws-port", str(b_port)).start()
    (short_tmp / "config.toml").write_text(CONFIG.format(port=port, auth="acme::auth") + f"""
[bridge]
url = "ws://127.0.0.1:{b_port}"
forward = [{{ local_function = "remote::status", remote_function = "engine::status" }}]
""")
    daemon = ThreadDaemon(short_tmp).start()
    acme = Acme(daemon)
    try:
        wait_for(lambda: ask(daemon, "engine::status")["bridge"]["state"] == "up",
                 message="the bridge")
        assert ask(daemon, "remote::status")["socket"] == str(b.socket_path)  # trusted: fine
        with Raw.on(port, "ci") as ci:
            refused = ci.call("remote::status")
            assert refused["error"]["code"] == "FORBIDDEN"
            assert "remote::status" in refused["error"]["message"]
    finally:
        acme.worker.shutdown()
        daemon.stop()
        b.stop()


def test_a_flood_of_handshakes_cannot_queue_auth_calls_without_bound(short_tmp: Path) -> None:
    """While MAX_WAITING connections wait for a slow auth function, the next one is
    refused at once; when the function answers, the waiting ones get its verdict."""
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from iii_daemon.drivers.doorkeeper import MAX_WAITING

    port = free_port()
    (short_tmp / "config.toml").write_text(CONFIG.format(port=port, auth="slow::auth"))
    daemon = ThreadDaemon(short_tmp).start()
    from iii_sdk import InitOptions

    worker = register_worker(str(daemon.socket_path), InitOptions(max_concurrency=1000))
    release = threading.Event()
    worker.register_function("slow::auth", lambda data: release.wait(20) and {})
    worker.ping()

    async def flood() -> tuple[str, list[int]]:
        url = f"ws://127.0.0.1:{port}"
        waiting = [await connect(url, open_timeout=10) for _ in range(MAX_WAITING)]
        # Every one of them is being authenticated now; one more is too many.
        extra = await connect(url, open_timeout=10)
        try:
            await asyncio.wait_for(extra.recv(), 5)
            refusal = "not refused"
        except ConnectionClosed as closed:
            refusal = closed.rcvd.reason if closed.rcvd else "no close frame"
        release.set()
        admitted = []
        for ws in waiting:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 20))
            admitted.append(int(hello["type"] == "workerregistered"))
            await ws.close()
        return refusal, admitted

    try:
        refusal, admitted = asyncio.run(flood())
    finally:
        release.set()
        worker.shutdown()
        daemon.stop()
    assert "wait for an auth function already" in refusal
    assert sum(admitted) == MAX_WAITING  # the slow function let them all in in the end


def test_an_owner_behind_a_prefix_takes_its_observers_under_its_own_names(
        rbac: tuple[ThreadDaemon, Acme, int]) -> None:
    """An official-SDK worker on the RBAC listener serves an owner-delivered function:
    observers name its prefixed id, the worker hears them under its own name, acks
    them, and its events reach their targets; no local dispatch behind the listener."""
    import iii

    daemon, acme, port = rbac
    official = official_worker(port, "ci-job", headers={"X-Team": "ci"})
    kept: list[Any] = []
    seen: list[Any] = []
    try:
        official.register_function("ticks", lambda data: None, observe=iii.ObserveHooks(
            delivery="owner", on_observer_added=kept.append))
        acme.worker.register_function("acme::on_tick", seen.append)
        wait_served(daemon, "ci::ticks")
        handle = acme.worker.observe({"function_id": "ci::ticks", "args": {"s": 1}},
                                     "acme::on_tick")
        handle.ready(5)
        [observer] = wait_for(lambda: list(kept), message="the owner's hook")
        assert observer.function_id == "ticks" and observer.args == {"s": 1}
        assert observer.emit({"price": 3}) is True
        [envelope] = wait_for(lambda: list(seen), message="the emitted event")
        assert (envelope["function_id"], envelope["input"]) == ("ci::ticks", {"price": 3})
        assert official._functions["ticks"].observe.local_dispatch is False
    finally:
        official.shutdown()
