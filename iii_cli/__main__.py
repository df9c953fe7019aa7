"""``python -m iii_cli``: the same as the ``iii`` command."""

from iii_cli.main import main

main()
