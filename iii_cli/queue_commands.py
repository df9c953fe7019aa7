"""``iii queue list | dlq | redrive | purge``: operating the durable queues."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from iii_cli import exit_codes as ec
from iii_cli import output
from iii_cli.common import (
    FormatOption,
    QuietOption,
    SocketOption,
    UrlOption,
    call_function,
    fail,
    say,
    where,
)
from iii_cli.list_view import QUEUE_COLUMNS

queue_app = typer.Typer(help="Inspect and operate the durable queues.", no_args_is_help=True)

DEAD_COLUMNS = [("id", "ID"), ("function_id", "FUNCTION"), ("attempts", "ATTEMPTS"),
                ("last_error", "LAST ERROR"), ("payload", "PAYLOAD")]

QueueArgument = Annotated[str, typer.Argument(metavar="QUEUE", help="The queue's name.")]


@queue_app.command("list")
def list_queues(fmt: FormatOption = None, socket: SocketOption = None,
                url: UrlOption = None) -> None:
    """Each queue per function: ready, in flight, delayed, waiting for a worker, dead."""
    rows = call_function(where(socket, url), "engine::queues::list")["queues"]
    typer.echo(output.render(rows, QUEUE_COLUMNS, fmt.value if fmt else
                             output.default_format()))


@queue_app.command("dlq")
def dead_letters(queue: QueueArgument, fmt: FormatOption = None, socket: SocketOption = None,
                 url: UrlOption = None) -> None:
    """The dead letters of QUEUE: each with its payload, attempts and last error."""
    rows = call_function(where(socket, url), "engine::queues::dlq",
                         {"queue": queue})["dead_letters"]
    typer.echo(output.render(rows, DEAD_COLUMNS, fmt.value if fmt else
                             output.default_format()))


@queue_app.command("redrive")
def redrive(queue: QueueArgument,
            message_id: Annotated[str | None, typer.Option(
                "--id", help="Only this dead letter (default: all of them).")] = None,
            socket: SocketOption = None, url: UrlOption = None,
            quiet: QuietOption = False) -> None:
    """Send QUEUE's dead letters (or one) for delivery again, attempts reset."""
    target = where(socket, url)
    if message_id is not None:
        data = {"queue": queue, "id": message_id}
        count = call_function(target, "engine::queues::redrive", data)["redriven"]
        if count == 0:
            fail(ec.NOT_FOUND, f"no dead letter {message_id!r} in queue {queue!r}")
    else:
        count = in_steps(target, "engine::queues::redrive", queue, "redriven",
                         f"redriving {queue}", quiet)
    say(f"{count} message{'' if count == 1 else 's'} sent again", quiet)


@queue_app.command("purge")
def purge(queue: QueueArgument,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
          socket: SocketOption = None, url: UrlOption = None,
          quiet: QuietOption = False) -> None:
    """Drop every waiting message and dead letter of QUEUE (messages in flight finish)."""
    target = where(socket, url)
    if not yes:
        if not sys.stdin.isatty():
            fail(ec.USAGE, f"purging {queue!r} drops its messages: confirm with --yes")
        typer.confirm(f"Drop every waiting message and dead letter of {queue!r}?",
                      abort=True)
    count = in_steps(target, "engine::queues::purge", queue, "purged", f"purging {queue}",
                     quiet)
    say(f"{count} message{'' if count == 1 else 's'} dropped", quiet)


#: Messages one step of a redrive or purge handles: the daemon stays responsive to
#: everyone else between steps, and a terminal shows the progress.
STEP = 2000


def in_steps(target: str, function_id: str, queue: str, done_key: str, label: str,
             quiet: bool) -> int:
    """Call ``function_id`` on ``queue`` ``STEP`` messages at a time until as many as
    there were at the start are done (what arrives meanwhile, a redriven letter that dies
    again among them, is not chased); a progress bar on a terminal once there is more
    than one step."""
    from iii_cli.progress import ProgressBar

    answer = call_function(target, function_id, {"queue": queue, "limit": STEP})
    done, total = answer[done_key], answer[done_key] + answer["left"]
    if done >= total:
        return int(done)
    with ProgressBar(label, total, quiet) as bar:
        while done < total and answer[done_key]:
            bar.update(done)
            answer = call_function(target, function_id, {"queue": queue,
                                                         "limit": min(STEP, total - done)})
            done += answer[done_key]
        bar.update(done)
    return int(done)
