"""The ``iii`` entry point: ``trigger`` takes the fast path, everything else typer."""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    # Completion requests (typer sets _III_COMPLETE) and help go through typer.
    if argv[:1] == ["trigger"] and "_III_COMPLETE" not in os.environ \
            and "--help" not in argv and "-h" not in argv:
        from iii_cli.trigger_fast import main as trigger

        sys.exit(trigger(argv[1:]))
    from iii_cli.app import run

    run()


if __name__ == "__main__":
    main()
