"""Exit codes of every ``iii`` command (cli.md): stable, scripts rely on them."""

OK = 0
FUNCTION_ERROR = 1
USAGE = 2
UNREACHABLE = 3
NOT_FOUND = 4
TIMEOUT = 124
INTERRUPTED = 130

#: How an error code in a daemon's answer maps to an exit code.
BY_ERROR_CODE = {
    "function_not_found": NOT_FOUND,
    "action_not_found": NOT_FOUND,
    "TIMEOUT": TIMEOUT,
    "bad_request": USAGE,
    "bad_frame": USAGE,
}
