"""Exit codes of every ``iii`` command (cli.md): stable, scripts rely on them."""

from iii_sdk.error_codes import ErrorCode

OK = 0
FUNCTION_ERROR = 1
USAGE = 2
UNREACHABLE = 3
NOT_FOUND = 4
#: The call was lost in transit (its worker left, the daemon or worker is stopping, a
#: backend is unreachable): retry it if it is idempotent.
LOST = 5
TIMEOUT = 124
INTERRUPTED = 130

def for_error(error: object) -> int:
    """The exit code for an error object from the daemon (1 unless its code says more)."""
    code = error.get("code") if isinstance(error, dict) else None
    return BY_ERROR_CODE.get(code, FUNCTION_ERROR) if isinstance(code, str) else FUNCTION_ERROR


#: How an error code in a daemon's answer maps to an exit code.
BY_ERROR_CODE = {
    ErrorCode.FUNCTION_NOT_FOUND: NOT_FOUND,
    ErrorCode.ACTION_NOT_FOUND: NOT_FOUND,
    ErrorCode.TRIGGER_NOT_FOUND: NOT_FOUND,
    ErrorCode.OBSERVER_NOT_FOUND: NOT_FOUND,
    ErrorCode.WORKER_NOT_FOUND: NOT_FOUND,
    ErrorCode.WORKER_EXISTS: USAGE,
    ErrorCode.TIMEOUT: TIMEOUT,
    ErrorCode.BAD_REQUEST: USAGE,
    ErrorCode.BAD_FRAME: USAGE,
    ErrorCode.TOPIC_NOT_SET: USAGE,
    ErrorCode.DELAY_TOO_LARGE: USAGE,
    ErrorCode.INVOCATION_STOPPED: LOST,
    ErrorCode.WORKER_STOPPING: LOST,
    ErrorCode.BACKEND_UNAVAILABLE: LOST,
    ErrorCode.BRIDGE_UNAVAILABLE: LOST,
}
