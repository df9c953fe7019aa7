"""The ``iii`` entry point: ``trigger``, ``list`` and the ``state`` / ``stream``
shortcuts take the fast path, everything else typer."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import NoReturn

#: What writing our output can fail with: the reader went away, or the disk is full.
OUTPUT_ERRORS = frozenset({errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def leave(code: int) -> NoReturn:
    """Exit now, without the interpreter's teardown of every module it imported: a fast
    path holds nothing that needs it, and the teardown was 12 to 20 ms of each short
    call (measured: ``python -c pass`` spends 12 ms in it here). Output is flushed
    first, and a failure to write it is told as for :func:`output_failed`."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRORS:
            raise
        code = output_failed(exc) or code
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


def output_failed(exc: OSError) -> int:
    """Our output could not be written: a reader that went away (`iii trigger f | head
    -0`) is not our failure (0); anything else (a full disk) is one line and exit 1,
    never lost in silence. What is still buffered goes nowhere."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if exc.errno == errno.EPIPE:
        return 0
    with contextlib.suppress(OSError):
        sys.stderr.write(f"iii: cannot write the output: {exc.strerror or exc}\n")
    return 1


def main() -> None:
    argv = sys.argv[1:]
    try:
        code = fast_path(argv)
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRORS:
            raise
        code = output_failed(exc)
    if code is not None:
        leave(code)
    from iii_cli.app import run

    run()


def fast_path(argv: list[str]) -> int | None:
    """The exit code of a command the fast paths took, else None (typer's turn)."""
    # Completion requests (the shell script sets _III_COMPLETE) go through typer; the
    # trigger fast path prints its own --help from the same option table.
    completing = "_III_COMPLETE" in os.environ
    if argv[:1] == ["trigger"] and not completing:
        from iii_cli.trigger_fast import main as trigger

        return trigger(argv[1:])
    if argv[:1] in (["state"], ["stream"]) and not completing:
        from iii_cli.value_shortcuts import fast

        return fast(argv)
    if argv == ["--version"]:  # scripts ask it to check what is installed
        from iii_cli.daemon_call import COMPLETION_BUDGET_S, version_line

        print(version_line(COMPLETION_BUDGET_S))
        return 0
    if argv[:1] == ["list"] and not completing:
        from iii_cli.list_view import fast as list_fast

        return list_fast(argv[1:])
    return None


if __name__ == "__main__":
    main()
