"""The README's guide runs as shown: its shell blocks, in order, against a temp daemon.

The guide is the blocks from "The command line" to the end of "HTTP triggers" and the
closing block after it. Each line must exit 0 (a line that is documented to exit otherwise says
"exit N" in its comment, and is checked for that). A line ending in `&` starts a
background process (the worker), and the next line runs once the worker's functions are
served, as a person would wait for its "ready". `iii daemon logs -f` follows forever: it
must still be following after a moment. Not run here: the quick start (`iii demo` has
its own tests; pip and pytest are what CI runs), the WebSocket block (npm and the
official SDK), the security block (placeholders by design), benchmarks and lint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import (
    IIIBIN,
    REPO,
    DaemonProcess,
    ThreadDaemon,
    ask,
    child_env,
    free_port,
    wait_for,
)

GUIDE_START, GUIDE_END = "## The command line", "## WebSocket"


def guide_commands(start: str = GUIDE_START, end: str = GUIDE_END) -> list[str]:
    text = (REPO / "README.md").read_text()
    guide = text[text.index(start):text.index(end)]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", guide, re.S):
        pending = ""
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue  # a comment continuing the line above
            pending += line
            if pending.rstrip().endswith("\\"):
                pending = pending.rstrip()[:-1]
                continue
            commands.append(pending.strip())
            pending = ""
    return commands


def run_each(commands: list[str], env: dict[str, str]
             ) -> Iterator[tuple[str, subprocess.CompletedProcess[str]]]:
    """Run each command with bash, as a reader would paste it; each must succeed."""
    for command in commands:
        proc = subprocess.run(["bash", "-c", command], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (command, proc.stderr)
        yield command, proc


def expected_exit(command: str) -> int:
    found = re.search(r"#.*\bexit (\d+)\b(?! when)", command)
    return int(found.group(1)) if found else 0


def served(env: dict[str, str], function_id: str) -> bool:
    proc = subprocess.run([IIIBIN, "list", "functions", "-o", "json"], env=env,
                          capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and function_id in {
        f["function_id"] for f in json.loads(proc.stdout)}


def test_the_guide_has_the_commands_this_test_knows() -> None:
    commands = guide_commands()
    assert commands[0].startswith("iii daemon start")
    assert any(c.startswith("iii queue dlq") for c in commands)
    assert commands[-2].startswith("iii daemon logs -f")
    assert commands[-1].startswith("iii daemon stop")


def test_the_readme_guide_runs_as_shown(short_tmp: Path) -> None:
    env = child_env(short_tmp)
    # The guide's HTTP block talks to the default port; this daemon listens on a free one
    # (and channels, which the upload streams through, need the WebSocket listener).
    port = free_port()
    env["III_HTTP_PORT"], env["III_WS_PORT"] = str(port), str(free_port())
    background: list[subprocess.Popen[bytes]] = []
    try:
        for command in guide_commands():
            command = command.replace("localhost:3111", f"localhost:{port}")
            if command.split("#")[0].rstrip().endswith("&"):
                line = command.split("#")[0].rstrip()[:-1]
                background.append(subprocess.Popen(["bash", "-c", line], env=env, cwd=REPO,
                                                   stdout=subprocess.DEVNULL))
                wait_for(lambda: served(env, "math::add"), message=f"{line} to be ready")
                continue
            if command.startswith("iii daemon logs -f"):
                follower = subprocess.Popen(["bash", "-c", command], env=env, cwd=REPO,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                try:
                    follower.wait(1.0)
                except subprocess.TimeoutExpired:  # still following, as it should
                    follower.send_signal(signal.SIGINT)
                    follower.wait(10)
                else:
                    raise AssertionError(f"{command} stopped: {follower.stderr.read()!r}")
                continue
            proc = subprocess.run(["bash", "-c", command], env=env, cwd=REPO,
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == expected_exit(command), (command, proc.stderr)
            if "curl" in command and "404" not in command:  # curl exits 0 on a 500 too
                assert '"error"' not in proc.stdout, (command, proc.stdout)
    finally:
        for proc in background:
            proc.terminate()
            proc.wait(10)
        subprocess.run([IIIBIN, "daemon", "stop"], env=env, capture_output=True, timeout=30)


def test_the_quick_start_is_two_commands_and_the_demo_runs(short_tmp: Path) -> None:
    """The quick start: one command installs and runs the demo, one installs and runs the
    tests (CI runs that one: .ci/run). The demo part runs here."""
    text = (REPO / "README.md").read_text()
    quick = text[text.index("## Quick start"):text.index(GUIDE_START)]
    [block] = re.findall(r"```sh\n(.*?)```", quick, re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["pip install -e . && iii demo",
                        "pip install -e '.[test]' && python -m pytest -q"]
    assert "python -m pytest -q" in (REPO / ".ci" / "run").read_text()
    demo = subprocess.run(["bash", "-c", commands[0].split("&&")[1]], env=child_env(short_tmp),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr


def test_help_shows_no_markup(short_tmp: Path) -> None:
    for args in (["config", "path", "--help"], ["queue", "--help"], ["--help"]):
        proc = subprocess.run([IIIBIN, *args], env=child_env(short_tmp), capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0 and "``" not in proc.stdout, args


def python_block(containing: str) -> str:
    text = (REPO / "README.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if containing in b]
    return block


def test_the_sdk_examples_run_as_written(daemon: DaemonProcess) -> None:
    """The worker example serves my::add; the caller example's calls (sync and void) all
    succeed: the void one too, which the daemon's events show."""
    env = child_env(daemon.tmp)
    served_by = python_block('worker.register_function("my::add"').replace(
        "worker.run_forever()", "print('ready', flush=True)\nworker.run_forever()")
    worker = subprocess.Popen([sys.executable, "-c", served_by], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        wait_for(lambda: served(env, "my::add"), message="my::add to be served")
        caller = python_block("client = connect()")
        script = caller.replace('client.trigger({"function_id": "my::add", "payload": '
                                '{"a": 1, "b": 2}})',
                                'print(client.trigger({"function_id": "my::add", "payload": '
                                '{"a": 1, "b": 2}}))')
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "{'sum': 3}\n", "")

        def void_finished() -> list[dict[str, Any]]:
            events = json.loads(subprocess.run(
                [IIIBIN, "trigger", "engine::events::list", "event=invocation.finished"],
                env=env, capture_output=True, text=True, timeout=30).stdout)["events"]
            return [e for e in events if e.get("function_id") == "my::add"
                    and e.get("action") == "void"]

        [void] = wait_for(void_finished, message="the void call to finish")
        assert void.get("error") is None, void
    finally:
        worker.terminate()
        worker.wait(10)


def section_commands(heading: str) -> list[str]:
    """The shell commands of the README section under ``heading`` (its ```sh blocks)."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {heading}\n")
    section = text[start:text.find("\n## ", start + 1)]
    return [line.split("#")[0].strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)
            for line in block.splitlines() if line.split("#")[0].strip()]


def on_a_terminal(argv: list[str], env: dict[str, str], shows: bytes,
                  keys: bytes) -> tuple[int, bytes]:
    """Run ``argv`` on a pseudo-terminal of 100x30, type ``keys`` once it shows ``shows``,
    and return its exit code and what it drew."""
    import fcntl
    import os
    import struct
    import termios
    import threading

    main, side = os.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    drawn: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                return
            if not chunk:
                return
            drawn.append(chunk)

    threading.Thread(target=read, daemon=True).start()
    proc = subprocess.Popen(argv, stdin=side, stdout=side, stderr=side, env=env,
                            start_new_session=True)
    os.close(side)
    try:
        wait_for(lambda: shows in b"".join(drawn), timeout=30, message=f"{shows!r} drawn")
        os.write(main, keys)
        return proc.wait(15), b"".join(drawn)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)


def test_the_watching_and_observer_blocks_run(daemon: DaemonProcess, math_worker: Any) -> None:
    """`iii watch` follows until Ctrl-C (exit 130), JSON lines when piped (what `jq .` would
    read: each line is parsed here), `iii tui` draws and quits on q."""
    import shlex

    env = dict(child_env(daemon.tmp), TERM="xterm-256color")
    commands = section_commands("Watching") + section_commands("Observers")
    assert any(c.startswith("iii tui") for c in commands)
    for command in commands:
        if command.startswith("iii tui"):
            code, _ = on_a_terminal([IIIBIN, *shlex.split(command)[1:]], env, b"math::add",
                                    b"q")
            assert code == 0, command
            continue
        if not command.startswith("iii watch"):
            proc = subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                                  text=True, timeout=60)
            assert proc.returncode == 0, (command, proc.stderr)
            continue
        argv = shlex.split(command.removesuffix("| jq .").strip())
        follower = subprocess.Popen([IIIBIN, *argv[1:]], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        subprocess.run([IIIBIN, "trigger", "math::add", "a=1", "b=2"], env=env,
                       capture_output=True, timeout=30)  # something to see
        with contextlib.suppress(subprocess.TimeoutExpired):
            follower.wait(1.0)
        assert follower.poll() is None, (command, follower.stderr.read())  # still following
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=10)
        assert follower.returncode == 130 and "Traceback" not in err, (command, err)
        if "jq" in command:
            assert all(isinstance(json.loads(line), dict) for line in out.splitlines())
            assert out.strip(), "no JSON lines"


def test_the_managed_workers_block_runs_as_shown(short_tmp: Path) -> None:
    """README "Let the daemon run your workers": add, list, logs -f, restart."""
    env = child_env(short_tmp)
    commands = guide_commands("## Let the daemon run your workers", "## Several hosts")
    assert commands[0].startswith("iii worker add math -- python examples/math_worker.py")
    daemon = ThreadDaemon(short_tmp).start()
    try:
        for command in commands:
            if " -f" in command.split("#")[0]:
                follower = subprocess.Popen(["bash", "-c", command], env=env, cwd=REPO,
                                            stdout=subprocess.PIPE, text=True)
                assert follower.stdout is not None
                assert "started: pid" in follower.stdout.readline()  # and it follows on
                follower.send_signal(signal.SIGINT)
                assert follower.wait(10) == 130
                continue
            proc = subprocess.run(["bash", "-c", command], env=env, cwd=REPO,
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, (command, proc.stderr)
            if command.startswith("iii worker add"):
                wait_for(lambda: served(env, "math::add"), message="the managed worker")
            if command.startswith("iii worker list"):
                assert "math" in proc.stdout and "math::add" in proc.stdout
        wait_for(lambda: served(env, "math::add"), message="the restarted worker")
    finally:
        daemon.stop()


def test_the_several_hosts_block_runs_as_shown(short_tmp: Path) -> None:
    """README "Several hosts": a Redis, two daemons, a subscriber on one, a publish on the
    other, a message enqueued on one and listed on the other (paths and port made the
    test's own)."""
    from iii_sdk import connect

    port = str(free_port())
    commands = [c.replace("/tmp/iii-hosts", str(short_tmp / "hosts")).replace("6390", port)
                for c in guide_commands("## Several hosts", "## Bridges")]
    assert commands[0].startswith("redis-server")
    env = child_env(short_tmp)
    try:
        for command, proc in run_each(commands, env):
            if "publish" in command:
                assert json.loads(proc.stdout) == {"subscribers": 0, "daemons": 2}
            if "daemon status" in command:
                assert "(up; shares pub/sub, state, streams, queues, cron)" in proc.stdout
            if "--enqueue" in command:
                assert "messageReceiptId" in proc.stdout and proc.stderr == ""
            if "queue list" in command:  # the daemon that took it told Redis
                assert "jobs" in proc.stdout
        with connect(str(short_tmp / "hosts" / "b.sock")) as client:
            wait_for(lambda: any(
                e.get("event") == "trigger.fired" and e.get("trigger_type") == "subscribe"
                for e in client.trigger({"function_id": "engine::events::list",
                                         "payload": {}})["events"]),
                message="b's subscriber to fire")
    finally:
        for name in ("a", "b"):
            subprocess.run([IIIBIN, "daemon", "stop"], env={
                **env, "III_SOCKET": str(short_tmp / "hosts" / f"{name}.sock")},
                capture_output=True,
                timeout=30)
        subprocess.run(["redis-cli", "-p", port, "shutdown", "nosave"], capture_output=True,
                       timeout=30)


def test_the_bridges_block_runs_as_shown(short_tmp: Path) -> None:
    """README "Bridges": a team daemon, a laptop daemon bridged to it, state set on the
    laptop read on the team daemon, a forwarded call (paths and port made the test's own)."""
    port = str(free_port())
    commands = [c.replace("/tmp/iii-bridge", str(short_tmp / "bridge")).replace("49200", port)
                for c in guide_commands("## Bridges", "## The daemon")]
    env = child_env(short_tmp)
    try:
        for command, proc in run_each(commands, env):
            if "state::get" in command:
                assert json.loads(proc.stdout) == "hi"
            if "iii trigger team::status" in command:
                assert json.loads(proc.stdout)["socket"].endswith("team.sock")
            if "daemon status" in command:
                assert f"bridge    ws://127.0.0.1:{port} as laptop (up; 0 exposed, " \
                       f"1 forwarded)" in proc.stdout
    finally:
        for name in ("laptop", "team"):
            subprocess.run([IIIBIN, "daemon", "stop"], env={
                **env, "III_SOCKET": str(short_tmp / "bridge" / f"{name}.sock")},
                capture_output=True, timeout=30)


def html_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {heading}\n")
    section = text[start:text.find("\n## ", start + 1)]
    [block] = re.findall(r"```html\n(.*?)```", section, re.S)
    return block


def dark_pixels(png: bytes) -> int:
    """How many pixels of a screenshot are not near white (text drawn on the page)."""
    import io

    from PIL import Image

    return sum(Image.open(io.BytesIO(png)).convert("L").histogram()[:128])


def test_the_live_streams_page_works_as_written(short_tmp: Path) -> None:
    """README "Live streams in a browser": its page, in headless Chromium, served from an
    allowed origin, joins the stream and shows each of the section's commands as they
    run (only the stream socket's port is the test's own); screenshots show the text."""
    import http.server
    import threading

    from tests.browser import Chromium

    site = short_tmp / "site"
    site.mkdir()
    streams_port, page_port = free_port(), free_port()
    page = html_block("Live streams in a browser")
    assert page.count("ws://127.0.0.1:3112") == 1 and len(page.splitlines()) == 10
    (site / "live.html").write_text(page.replace("3112", str(streams_port)))
    origin = f"http://127.0.0.1:{page_port}"
    (short_tmp / "config.toml").write_text(f'[streams]\nallowed_origins = ["{origin}"]\n')
    daemon = ThreadDaemon(short_tmp, "--streams-port", str(streams_port)).start()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = child_env(short_tmp)
    browser = Chromium()
    try:
        browser.open(f"{origin}/live.html")
        wait_for(lambda: ask(daemon, "engine::status")["stream_subscriptions"] == 1,
                 timeout=30, message="the page to join")
        blank = dark_pixels(browser.screenshot())
        commands = section_commands("Live streams in a browser")
        shows = ["Buy milk", "Buy oat milk", ""]
        assert len(commands) == len(shows)
        shots = []
        for (command, _proc), text in zip(run_each(commands, env), shows, strict=True):
            wait_for(lambda text=text: browser.text().strip() == text,
                     message=f"the page to show {text!r} after {command}")
            shot = browser.screenshot()
            if os.environ.get("III_SCREENSHOTS"):  # to look at them
                Path(os.environ["III_SCREENSHOTS"], f"live-{len(shots)}.png").write_bytes(shot)
            shots.append(dark_pixels(shot))
        # Text drawn after each change, none once the item is deleted.
        assert shots[0] > 50 and shots[1] > shots[0] and shots[2] == blank == 0, shots
    finally:
        browser.close()
        server.shutdown()
        daemon.stop()


def test_the_owner_delivery_example_runs_as_written(short_tmp: Path) -> None:
    """README "Observers": the owner-delivered function, its observer with args, an
    emitted event and a call, with the official SDK (the WebSocket port made the
    test's own)."""
    port = free_port()
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(port)).start()
    script = python_block('delivery="owner"').replace("49134", str(port)) + \
        "\nimport time\ntime.sleep(0.5)\nofficial.shutdown()\n"
    try:
        proc = subprocess.run([sys.executable, "-c", script], env=child_env(short_tmp),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        # The event goes out within a few ms; the call at once: either may print first.
        lines = proc.stdout.splitlines()
        assert "{'price': 11}" in lines and len(lines) == 2
        [envelope] = [line for line in lines if line != "{'price': 11}"]
        assert "'input': {'price': 10}" in envelope and "'observer_id'" in envelope
    finally:
        daemon.stop()
