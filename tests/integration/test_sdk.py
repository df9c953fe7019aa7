"""SDK workers and callers in separate processes, through a real daemon."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import III, InitOptions, InvocationError, TriggerAction, register_worker
from iii_sdk.options import ReconnectionConfig
from tests.helpers import (
    REPO,
    DaemonProcess,
    RawClient,
    ThreadDaemon,
    child_env,
    spawn_worker,
    wait_for,
)


@pytest.fixture
def math_worker(daemon: DaemonProcess) -> Any:
    proc = spawn_worker(daemon.tmp)
    yield proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def caller(daemon: DaemonProcess) -> Any:
    client = register_worker(str(daemon.socket_path), InitOptions(connect_timeout_s=5))
    yield client
    client.shutdown()


def test_sync_call_across_processes(math_worker: Any, caller: III) -> None:
    assert caller.trigger({"function_id": "math::add", "payload": {"a": 2, "b": 3}}) == {
        "sum": 5}


def test_metadata_reaches_the_handler_apart_from_data(math_worker: Any, caller: III) -> None:
    answer = caller.trigger({"function_id": "math::echo", "payload": {"x": 1},
                             "metadata": {"tenant": "t1"}})
    assert answer == {"data": {"x": 1}, "metadata": {"tenant": "t1"}}


def test_handler_error_code_passes_through(math_worker: Any, caller: III) -> None:
    with pytest.raises(InvocationError) as err:
        caller.trigger({"function_id": "math::divide", "payload": {"a": 1, "b": 0}})
    assert (err.value.code, err.value.message) == ("division_by_zero", "cannot divide by zero")


def test_a_raising_handler_gives_invocation_failed_with_its_message(
        daemon: DaemonProcess, caller: III) -> None:
    worker = register_worker(str(daemon.socket_path))
    try:
        def broken(data: Any) -> Any:
            raise KeyError("missing thing")
        worker.register_function("broken", broken)
        worker.ping()
        with pytest.raises(InvocationError) as err:
            caller.trigger({"function_id": "broken", "payload": {}})
        assert err.value.code == "invocation_failed"
        assert err.value.message == "KeyError: 'missing thing'"  # the type, then the text
        assert err.value.stacktrace and "KeyError" in err.value.stacktrace
    finally:
        worker.shutdown()


def test_unknown_function(caller: III) -> None:
    with pytest.raises(InvocationError) as err:
        caller.trigger({"function_id": "no::such", "payload": None})
    assert err.value.code == "function_not_found"
    assert err.value.message == "Function 'no::such' not found"


def test_timeout_from_the_daemon(math_worker: Any, caller: III) -> None:
    with pytest.raises(InvocationError) as err:
        caller.trigger({"function_id": "math::sleep", "payload": {"seconds": 5},
                        "timeout_ms": 200})
    assert err.value.code == "TIMEOUT"
    assert err.value.message == "invocation of 'math::sleep' timed out after 200 ms"


def test_local_timeout_when_the_daemon_is_not_asked(daemon: DaemonProcess,
                                                     math_worker: Any) -> None:
    client = register_worker(str(daemon.socket_path), InitOptions(invocation_timeout_ms=200))
    try:
        with pytest.raises(InvocationError) as err:
            client.trigger({"function_id": "math::sleep", "payload": {"seconds": 5}})
        assert err.value.code == "TIMEOUT"  # the same words as the daemon's own timeout
        assert err.value.message == "invocation of 'math::sleep' timed out after 200 ms"
    finally:
        client.shutdown()


def test_void_returns_none_and_the_function_runs(daemon: DaemonProcess, caller: III) -> None:
    worker = register_worker(str(daemon.socket_path))
    seen: list[Any] = []
    try:
        worker.register_function("collect", seen.append)
        worker.ping()
        assert caller.trigger({"function_id": "collect", "payload": {"n": 1},
                               "action": TriggerAction.Void()}) is None
        wait_for(lambda: seen == [{"n": 1}], message="the void call to run")
    finally:
        worker.shutdown()


def test_async_handlers_and_trigger_async_from_another_loop(daemon: DaemonProcess,
                                                             caller: III) -> None:
    worker = register_worker(str(daemon.socket_path))
    try:
        async def double(data: int) -> int:
            await asyncio.sleep(0)
            return data * 2

        async def chain(data: int) -> Any:
            # An async handler calling another function on the SDK loop.
            return await worker.trigger_async({"function_id": "double", "payload": data})

        worker.register_function("double", double)
        worker.register_function("chain", chain)
        worker.ping()

        async def main() -> list[Any]:
            return list(await asyncio.gather(*[
                caller.trigger_async({"function_id": "chain", "payload": i})
                for i in range(50)]))

        assert asyncio.run(main()) == [i * 2 for i in range(50)]
    finally:
        worker.shutdown()


def test_many_threads_call_at_once(math_worker: Any, caller: III) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> Any:
        return caller.trigger({"function_id": "math::add", "payload": {"a": i, "b": 1}})

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(200))) == [{"sum": i + 1} for i in range(200)]


def test_conflicting_registration_is_rejected_and_the_owner_keeps_it(
        math_worker: Any, daemon: DaemonProcess, caller: III) -> None:
    intruder = register_worker(str(daemon.socket_path))
    try:
        intruder.register_function("math::add", lambda data: "intruder")
        intruder.ping()
        assert caller.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 1}}) == {
            "sum": 2}
    finally:
        intruder.shutdown()


def test_kill_9_of_a_worker_mid_call(daemon: DaemonProcess, caller: III) -> None:
    proc = spawn_worker(daemon.tmp)
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            caller.trigger({"function_id": "math::sleep", "payload": {"seconds": 30}})
        except InvocationError as exc:
            result["error"] = exc
            result["at"] = time.monotonic()

    import threading
    thread = threading.Thread(target=call)
    thread.start()
    probe = RawClient(daemon.socket_path)
    wait_for(lambda: probe.in_flight() == 1, message="the call to reach the worker")
    killed_at = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    thread.join(10)
    assert result["error"].code == "invocation_stopped"
    print(f"caller told {1000 * (result['at'] - killed_at):.1f} ms after kill -9")
    functions = caller.trigger({"function_id": "engine::functions::list"})["functions"]
    assert not [f for f in functions if f["function_id"].startswith("math::")]
    replacement = register_worker(str(daemon.socket_path))
    try:
        replacement.register_function("math::add", lambda d: {"sum": 0})
        replacement.ping()
        assert caller.trigger({"function_id": "math::add", "payload": {}}) == {"sum": 0}
    finally:
        replacement.shutdown()


def test_caller_disconnect_mid_call_leaves_the_daemon_and_worker_fine(
        daemon: DaemonProcess) -> None:
    import threading

    release, finished = threading.Event(), threading.Event()
    worker = register_worker(str(daemon.socket_path))
    try:
        def held(data: Any) -> str:
            release.wait(10)
            finished.set()
            return "late"

        worker.register_function("held", held)
        worker.ping()
        raw = RawClient(daemon.socket_path)
        raw.send({"type": "invokefunction", "function_id": "held", "invocation_id": "gone"})
        other = RawClient(daemon.socket_path)
        wait_for(lambda: other.in_flight() == 1, message="the call to be in flight")
        raw.close()
        wait_for(lambda: other.in_flight() == 0, message="the daemon to forget the call")
        release.set()
        finished.wait(10)
        worker.ping()  # ordered after the late result on the same connection
        assert daemon.alive
        assert other.call("engine::workers::list")["result"]["workers"]
    finally:
        worker.shutdown()


def test_workers_list_shows_the_workers_metadata(math_worker: Any, caller: III) -> None:
    workers = caller.trigger({"function_id": "engine::workers::list"})["workers"]
    [math] = [w for w in workers if w["name"] == "math-worker"]
    assert math["runtime"] == "python" and math["pid"] == math_worker.pid
    assert math["transport"] == "unix"
    assert set(math["functions"]) == {"math::add", "math::divide", "math::sleep",
                                      "math::echo", "math::is_positive", "math::http_add",
                                      "math::count_bytes"}


def test_worker_reconnects_and_replays_after_a_daemon_restart(short_tmp: Path) -> None:
    daemon = ThreadDaemon(short_tmp).start()
    fast = InitOptions(reconnection_config=ReconnectionConfig(initial_delay_ms=50,
                                                              max_delay_ms=200))
    worker = register_worker(str(daemon.socket_path), fast)
    caller = register_worker(str(daemon.socket_path), fast)
    try:
        worker.register_function("up", lambda data: "still here")
        worker.ping()
        daemon.stop()
        wait_for(lambda: not worker.connected, message="the worker to notice")
        daemon.start()
        wait_for(lambda: worker.connected and caller.connected, message="reconnects")
        worker.ping()
        assert caller.trigger({"function_id": "up", "payload": None}) == "still here"
    finally:
        worker.shutdown()
        caller.shutdown()
        daemon.stop()


def test_calls_made_while_disconnected_wait_for_the_daemon(short_tmp: Path) -> None:
    fast = InitOptions(connect_timeout_s=0.1,
                       reconnection_config=ReconnectionConfig(initial_delay_ms=50,
                                                              max_delay_ms=100))
    caller = register_worker(str(short_tmp / "iii.sock"), fast)  # no daemon yet
    daemon = ThreadDaemon(short_tmp)
    try:
        assert not caller.connected
        import threading
        answers: list[Any] = []
        thread = threading.Thread(target=lambda: answers.append(
            caller.trigger({"function_id": "engine::workers::list", "timeout_ms": 10_000})))
        thread.start()
        wait_for(lambda: len(caller._calls.outbox) == 1, message="the call to wait in the outbox")
        daemon.start()
        thread.join(10)
        assert answers and "workers" in answers[0]
    finally:
        caller.shutdown()
        daemon.stop()


def test_sigterm_stops_waiting_calls_and_removes_the_socket(
        daemon: DaemonProcess, math_worker: Any) -> None:
    raw = RawClient(daemon.socket_path)
    raw.send({"type": "invokefunction", "function_id": "math::sleep",
              "data": {"seconds": 30}, "invocation_id": "w"})
    probe = RawClient(daemon.socket_path)
    wait_for(lambda: probe.in_flight() == 1, message="the call to be in flight")
    assert daemon.stop() == 0
    assert raw.recv()["error"]["code"] == "invocation_stopped"
    assert not daemon.socket_path.exists()
    assert not (daemon.tmp / "iii.sock.pid").exists()


def test_example_worker_script_runs_from_the_command_line(daemon: DaemonProcess) -> None:
    proc = subprocess.Popen([sys.executable, "examples/math_worker.py",
                             f"unix://{daemon.socket_path}"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env=child_env(daemon.tmp))
    try:
        assert proc.stdout is not None and "ready" in proc.stdout.readline()
        assert RawClient(daemon.socket_path).call("math::add", {"a": 4, "b": 5})["result"] \
            == {"sum": 9}
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_a_worker_provided_delay_action_end_to_end(daemon: DaemonProcess,
                                                    caller: III) -> None:
    provider = register_worker(str(daemon.socket_path))
    target = register_worker(str(daemon.socket_path))
    ran: list[Any] = []
    try:
        async def delay(call: dict[str, Any]) -> dict[str, Any]:
            async def later() -> None:
                await asyncio.sleep(call["action"]["ms"] / 1000)
                await provider.trigger_async({"function_id": call["function_id"],
                                              "payload": call["payload"],
                                              "action": TriggerAction.Void()})
            asyncio.get_running_loop().create_task(later())
            return {"scheduled_in_ms": call["action"]["ms"],
                    "caller": call["caller"]["worker_id"]}

        provider.register_action_type("delay", delay)
        target.register_function("mail::send", ran.append)
        provider.ping()
        target.ping()
        answer = caller.trigger({"function_id": "mail::send", "payload": {"to": "ada"},
                                 "action": {"type": "delay", "ms": 100}})
        assert answer == {"scheduled_in_ms": 100, "caller": caller.worker_id}
        assert ran == []  # not yet: the provider decides when
        wait_for(lambda: ran == [{"to": "ada"}], message="the delayed call to run")
    finally:
        provider.shutdown()
        target.shutdown()


def test_a_plain_client_is_not_listed_as_a_worker(daemon: DaemonProcess,
                                                  math_worker: Any) -> None:
    from iii_sdk import connect

    client = connect(str(daemon.socket_path))
    worker = register_worker(str(daemon.socket_path))
    try:
        assert client.trigger({"function_id": "math::add",
                               "payload": {"a": 1, "b": 2}}) == {"sum": 3}
        worker.ping()
        listed = client.trigger({"function_id": "engine::workers::list"})["workers"]
        ids = {w["id"] for w in listed}
        assert worker.worker_id in ids and client.worker_id not in ids
        client.register_function("client::fn", lambda data: data)  # now it serves one
        client.ping()
        listed = client.trigger({"function_id": "engine::workers::list"})["workers"]
        assert client.worker_id in {w["id"] for w in listed}
    finally:
        client.shutdown()
        worker.shutdown()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_run_forever_stops_cleanly_on_ctrl_c_and_sigterm(daemon: DaemonProcess,
                                                          stop: signal.Signals) -> None:
    proc = spawn_worker(daemon.tmp)  # the example ends in worker.run_forever()
    proc.send_signal(stop)
    # SIGTERM is an ordinary stop (0); Ctrl-C is an interrupt, 130 as shells count it.
    assert proc.wait(10) == (130 if stop == signal.SIGINT else 0)
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    wait_for(lambda: RawClient(daemon.socket_path).call("engine::workers::list")
             ["result"]["workers"] == [], message="the worker to be gone")


def test_a_worker_started_before_the_daemon_says_so_once_and_waits(short_tmp: Path) -> None:
    daemon = ThreadDaemon(short_tmp)
    err = short_tmp / "worker.err"
    with open(err, "w") as stderr_file:
        proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "math_worker.py")],
                                stdout=subprocess.PIPE, stderr=stderr_file, text=True,
                                env=child_env(short_tmp))
    try:
        wait_for(lambda: "not reachable" in err.read_text(), message="the worker to say so")
        daemon.start()
        assert proc.stdout is not None and "ready" in proc.stdout.readline()
        answer = RawClient(daemon.socket_path).call("math::add", {"a": 1, "b": 2})
        assert answer["result"] == {"sum": 3}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        stderr = err.read_text()
        assert stderr.count("not reachable") == 1 and str(daemon.socket_path) in stderr
        assert "iii daemon start" in stderr and "Traceback" not in stderr
    finally:
        proc.kill()
        daemon.stop()
