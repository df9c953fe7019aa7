"""A progress bar on stderr for long work: only when stderr is a terminal and the user
did not ask for quiet, so scripts and pipes never see one. rich (typer's own dependency)
is imported only then."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any


class ProgressBar:
    """``with ProgressBar("redriving", total) as bar: bar.update(done)``; ``total`` may be
    None (unknown: a count and a spinner)."""

    def __init__(self, label: str, total: int | None, quiet: bool = False) -> None:
        self.label = label
        self.total = total
        self.shown = not quiet and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.shown:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                      BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(stderr=True), transient=True,
                                      redirect_stdout=False, redirect_stderr=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def update(self, done: int, total: int | None = None) -> None:
        if self._progress is not None:
            if total is not None:
                self.total = total
            self._progress.update(self._task, completed=done, total=self.total)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
