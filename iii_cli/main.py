"""The ``iii`` entry point: ``trigger``, ``list`` and the ``state`` / ``stream``
shortcuts take the fast path, everything else typer."""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    # Completion requests (the shell script sets _III_COMPLETE) go through typer; the
    # trigger fast path prints its own --help from the same option table.
    if argv[:1] == ["trigger"] and "_III_COMPLETE" not in os.environ:
        from iii_cli.trigger_fast import main as trigger

        sys.exit(trigger(argv[1:]))
    if argv[:1] in (["state"], ["stream"]) and "_III_COMPLETE" not in os.environ:
        from iii_cli.value_shortcuts import fast

        code = fast(argv)
        if code is not None:
            sys.exit(code)
    if argv == ["--version"]:  # scripts ask it to check what is installed
        from iii_cli.daemon_call import COMPLETION_BUDGET_S, version_line

        print(version_line(COMPLETION_BUDGET_S))
        sys.exit(0)
    if argv[:1] == ["list"] and "_III_COMPLETE" not in os.environ:
        from iii_cli.list_view import fast as list_fast

        code = list_fast(argv[1:])
        if code is not None:
            sys.exit(code)
    from iii_cli.app import run

    run()


if __name__ == "__main__":
    main()
