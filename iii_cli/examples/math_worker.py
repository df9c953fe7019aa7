"""An example worker: serves a few functions until interrupted.

    python examples/math_worker.py            # uses $III_SOCKET or the default socket
    python examples/math_worker.py unix:///tmp/iii.sock
    python -m iii_cli.examples.math_worker    # the same, from an installed package

It ships inside the package (``examples/math_worker.py`` in a checkout links here), so
``iii demo`` works after a plain ``pip install``.

Call its functions from anywhere: ``iii trigger math::add a=1 b=2`` or through the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from iii_sdk import InitOptions, InvocationError, register_worker


def add(data: dict[str, Any]) -> dict[str, Any]:
    return {"sum": data["a"] + data["b"]}


def divide(data: dict[str, Any]) -> dict[str, Any]:
    if data["b"] == 0:
        # A handler's own code and message reach the caller unchanged.
        raise InvocationError("division_by_zero", "cannot divide by zero")
    return {"quotient": data["a"] / data["b"]}


async def sleep(data: dict[str, Any]) -> dict[str, Any]:
    seconds = float(data.get("seconds", 1))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def echo(data: Any, metadata: Any = None) -> dict[str, Any]:
    return {"data": data, "metadata": metadata}


def http_add(request: dict[str, Any]) -> dict[str, Any]:
    """Behind an http trigger on ``add/:a/:b``: the status, headers and body it chose."""
    a, b = float(request["path_params"]["a"]), float(request["path_params"]["b"])
    return {"status_code": 200, "headers": {"X-Sum": str(a + b)}, "body": {"sum": a + b}}


def count_bytes(request: dict[str, Any]) -> dict[str, Any]:
    """Behind an http POST trigger: an upload of any size streams in through the
    request channel, a chunk at a time, never held whole."""
    size = sum(len(chunk) for chunk in request["request_body"])
    return {"status_code": 201, "body": {"bytes": size}}


def is_positive(data: Any) -> bool:
    """A trigger condition: run the target only for payloads with n > 0."""
    return isinstance(data, dict) and isinstance(data.get("n"), int | float) and data["n"] > 0


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else None
    worker = register_worker(address, InitOptions(worker_name="math-worker"))
    worker.register_function("math::add", add, description="adds a and b")
    worker.register_function("math::divide", divide, description="divides a by b")
    worker.register_function("math::sleep", sleep, description="sleeps, then answers")
    worker.register_function("math::echo", echo, description="returns data and metadata")
    worker.register_function("math::http_add", http_add,
                             description="adds path parameters a and b (an http trigger)")
    worker.register_function("math::count_bytes", count_bytes,
                             description="counts the bytes of an uploaded body (http POST)")
    worker.register_function("math::is_positive", is_positive,
                             description="true when data.n > 0 (a trigger condition)")
    # Started before the daemon? The SDK says once on stderr what it waits for.
    worker.wait_until_connected()
    worker.ping()  # every registration is in effect once the daemon answered
    # Until Ctrl-C or SIGTERM, then a clean shutdown; "ready" once those are handled.
    worker.run_forever(ready=lambda: print("math-worker ready", flush=True))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C while still waiting
        main()
