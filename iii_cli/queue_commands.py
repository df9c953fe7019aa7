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
    data = {"queue": queue} if message_id is None else {"queue": queue, "id": message_id}
    count = call_function(where(socket, url), "engine::queues::redrive", data)["redriven"]
    if message_id is not None and count == 0:
        fail(ec.NOT_FOUND, f"no dead letter {message_id!r} in queue {queue!r}")
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
    count = call_function(target, "engine::queues::purge", {"queue": queue})["purged"]
    say(f"{count} message{'' if count == 1 else 's'} dropped", quiet)
