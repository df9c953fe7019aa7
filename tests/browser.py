"""Debian's Chromium, headless, driven over the DevTools protocol: open a page, read
its text, take a screenshot (for the tests of what browsers see)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.helpers import wait_for

#: The flags a sandboxed machine needs: no GPU, no sandbox as root, no calls home (a
#: closed network refuses them, many at a time).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=800,600")


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (.ci/run installs Debian's package)"
    return found


class Chromium:
    """One headless browser with one page."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="iii-chromium-")
        self.proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self._profile.name}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # its helpers are in its group: stopped with it
        active = Path(self._profile.name) / "DevToolsActivePort"
        wait_for(lambda: active.exists() and len(active.read_text().split()) == 2,
                 timeout=30, message="chromium to listen")
        port, path = active.read_text().split()
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10))
        self._ids = itertools.count(1)
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target,
                                   flatten=True)["sessionId"]

    def _call(self, method: str, session: str | None = None, **params: Any) -> Any:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        while True:  # events of the page come in between; only the answer counts
            answer = json.loads(self._ws.recv(30))
            if answer.get("id") == call_id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer["result"]

    def open(self, url: str) -> None:
        self._call("Page.navigate", self._session, url=url)

    def evaluate(self, expression: str) -> Any:
        result = self._call("Runtime.evaluate", self._session, expression=expression,
                            returnByValue=True)["result"]
        return result.get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def screenshot(self) -> bytes:
        import base64

        data = self._call("Page.captureScreenshot", self._session, format="png")["data"]
        return base64.b64decode(data)

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            # The whole group: a helper that outlives the browser still writes into the
            # profile, and removing the profile under it fails ("Directory not empty").
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(10)
            wait_for(lambda: not self._signal_group(0), timeout=10,
                     message="chromium's helpers to exit")
            self._profile.cleanup()

    def _signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the browser's process group; False: nothing is left in it."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return False
        return True
