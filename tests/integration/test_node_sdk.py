"""A worker written with the official npm iii-sdk attaches to our daemon over WebSocket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    REPO,
    DaemonProcess,
    ThreadDaemon,
    free_port,
    run_iii,
    spawn_worker,
    wait_for,
)

NODE, NPM = shutil.which("node"), shutil.which("npm")
pytestmark = pytest.mark.skipif(not (NODE and NPM),
                                reason="node and npm are not installed on this machine")


@pytest.fixture(scope="module")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/node with its dependencies installed, in a temp copy."""
    target = tmp_path_factory.mktemp("node") / "example"
    shutil.copytree(REPO / "examples" / "node", target)
    proc = subprocess.run([str(NPM), "install", "--no-audit", "--no-fund", "--silent",
                           "--prefer-offline"],
                          cwd=target, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"npm install iii-sdk failed (no registry?): {proc.stderr.strip()[-200:]}")
    return target


@pytest.fixture
def ws_daemon(short_tmp: Path) -> Iterator[DaemonProcess]:
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(free_port())).start()
    yield daemon
    daemon.stop()


def test_node_worker_serves_the_cli_and_calls_python(node_example: Path,
                                                     ws_daemon: DaemonProcess) -> None:
    python_worker = spawn_worker(ws_daemon.tmp)
    env = dict(os.environ, III_URL=f"ws://127.0.0.1:{ws_daemon.extra[1]}",
               CALL_FUNCTION="math::add", CALL_PAYLOAD='{"a": 20, "b": 22}')
    node = subprocess.Popen([str(NODE), "worker.mjs"], cwd=node_example, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        lines: list[str] = []
        while "ready" not in lines:  # the SDK prints its own [OTel] lines too
            line = node.stdout.readline()
            assert line, f"node exited: {lines} {node.stderr.read() if node.stderr else ''}"
            lines.append(line.strip())
        assert 'result {"sum":42}' in lines  # the Node worker called a Python function

        def greeted() -> object:
            proc = run_iii(ws_daemon.tmp, "trigger", "node::greet", "name=ada")
            return proc.returncode == 0 and json.loads(proc.stdout)

        assert wait_for(greeted, message="node::greet") == {"message": "Hello, ada!",
                                                            "runtime": "node"}
    finally:
        node.terminate()
        node.wait(10)
        python_worker.terminate()
        python_worker.wait(10)
