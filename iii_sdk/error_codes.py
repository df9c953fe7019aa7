"""The error codes the daemon itself produces (protocol.md § Messages), in one place.

Imports nothing, so the ``iii trigger`` fast path maps them to exit codes without loading
the protocol module.
"""

from __future__ import annotations

from typing import Final


class ErrorCode:
    FUNCTION_NOT_FOUND: Final = "function_not_found"
    INVOCATION_FAILED: Final = "invocation_failed"
    INVOCATION_STOPPED: Final = "invocation_stopped"
    TIMEOUT: Final = "TIMEOUT"
    ACTION_NOT_FOUND: Final = "action_not_found"
    QUEUE_ERROR: Final = "queue_error"
    #: ``enqueue`` without a topic; a delay past the cap (the upstream engine's codes).
    TOPIC_NOT_SET: Final = "topic_not_set"
    DELAY_TOO_LARGE: Final = "delay_too_large"
    BAD_REQUEST: Final = "bad_request"
    BAD_FRAME: Final = "bad_frame"
    #: An HTTP-invoked function answered other than 2xx JSON, or could not be reached.
    HTTP_ERROR: Final = "http_error"
    FUNCTION_NOT_INVOKABLE: Final = "function_not_invokable"
    TRIGGER_REGISTRATION_FAILED: Final = "trigger_registration_failed"
    #: A result larger than the frame limit: that call fails, nothing else does.
    RESULT_TOO_LARGE: Final = "result_too_large"
    #: The worker already runs its ``max_concurrency`` calls: refused at once.
    WORKER_BUSY: Final = "worker_busy"
    #: The worker is shutting down: its calls in flight are answered with this.
    WORKER_STOPPING: Final = "worker_stopping"
    #: (extension) ``engine::triggers::fire`` of an id no trigger has.
    TRIGGER_NOT_FOUND: Final = "trigger_not_found"
    #: (extension) ``engine::observers::get`` of an id no observer has.
    OBSERVER_NOT_FOUND: Final = "observer_not_found"
    #: (extension) A trigger fired by hand that its condition (or a firing still running)
    #: skipped; the message says why.
    TRIGGER_SKIPPED: Final = "trigger_skipped"
    #: (extension) A managed worker name no ``[[workers]]`` entry has.
    WORKER_NOT_FOUND: Final = "worker_not_found"
    #: (extension) ``engine::managed::add`` of a name that is taken.
    WORKER_EXISTS: Final = "worker_exists"
    #: Shared data whose backend (Redis) cannot be reached: the call failed fast, retry.
    BACKEND_UNAVAILABLE: Final = "backend_unavailable"
    #: A call that needs the bridged engine while the bridge is down: failed fast, retry.
    BRIDGE_UNAVAILABLE: Final = "bridge_unavailable"
    #: Not allowed from this connection (as upstream: RBAC denials; managed workers may
    #: be changed over the Unix socket only).
    FORBIDDEN: Final = "FORBIDDEN"
    #: The only code ``registrationrejected`` ever carries.
    FUNCTION_NAMESPACE_CONFLICT: Final = "FUNCTION_NAMESPACE_CONFLICT"
