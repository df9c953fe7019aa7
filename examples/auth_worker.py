"""An auth function for an RBAC listener (README: "Letting other workers in").

Run it on the daemon's own socket (it is trusted), next to a listener whose
``auth_function_id`` is ``acme::auth``. A worker that connects to that listener presents
``Authorization: Bearer TOKEN``; this function says what that token may do:

- ``ci-token``: call ``acme::public::*`` (the listener exposes them) and
  ``acme::deploy``, and register functions, which get the prefix ``ci::``;
- ``partner-token``: call ``acme::public::*`` only, and register nothing.

Any other token is refused, and the connection closed with the reason.
"""

from __future__ import annotations

import contextlib
from typing import Any

from iii_sdk import InitOptions, register_worker

TEAMS: dict[str, dict[str, Any]] = {
    "ci-token": {"allowed_functions": ["acme::deploy"], "function_registration_prefix": "ci::",
                 "context": {"team": "ci"}},
    "partner-token": {"allow_function_registration": False, "context": {"team": "partner"}},
}


def auth(data: dict[str, Any]) -> dict[str, Any]:
    """``AuthInput`` (headers, query_params, ip_address) in, ``AuthResult`` out."""
    token = data["headers"].get("authorization", "").removeprefix("Bearer ").strip()
    if token not in TEAMS:
        raise PermissionError("unknown token")
    return TEAMS[token]


def main() -> None:
    worker = register_worker(options=InitOptions(worker_name="acme-auth"))
    worker.register_function("acme::auth", auth,
                             description="decides what a worker on the RBAC port may do")
    worker.register_function("acme::public::hello",
                             lambda data: {"hello": (data or {}).get("name", "world")},
                             description="anyone let in may call this")
    worker.register_function("acme::deploy", lambda data: {"deployed": data},
                             description="CI only")
    worker.wait_until_connected()
    worker.ping()
    worker.run_forever(ready=lambda: print("acme-auth ready", flush=True))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
