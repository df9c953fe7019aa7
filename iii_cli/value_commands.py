"""``iii state …`` and ``iii stream …`` for typer: help, completion, and what the fast
path leaves to it (``iii_cli/value_shortcuts.py`` runs them all)."""

from __future__ import annotations

from typing import Annotated

import typer

from iii_cli import exit_codes as ec
from iii_cli.common import fail
from iii_cli.trigger_fast import UsageError
from iii_cli.value_shortcuts import SHORTCUTS, run

state_app = typer.Typer(help="Read and change state values (shortcuts for iii trigger "
                             "state::…).", no_args_is_help=True)
stream_app = typer.Typer(help="Read and change stream items (shortcuts for iii trigger "
                              "stream::…).", no_args_is_help=True)

Scope = Annotated[str, typer.Argument(metavar="SCOPE", help="The state scope.")]
Key = Annotated[str, typer.Argument(metavar="KEY", help="The key within the scope.")]
Stream = Annotated[str, typer.Argument(metavar="STREAM", help="The stream's name.")]
Group = Annotated[str, typer.Argument(metavar="GROUP", help="The group within the stream.")]
Item = Annotated[str, typer.Argument(metavar="ITEM", help="The item within the group.")]
Value = Annotated[str, typer.Argument(
    metavar="VALUE", help="JSON (a bare word is a string), @file, or - for stdin.")]
Ops = Annotated[str, typer.Argument(
    metavar="OPS", help='A JSON list of update ops, e.g. \'[{"type":"increment","path":'
                        '"n","by":1}]\', @file, or - for stdin.')]
Output = Annotated[str | None, typer.Option(
    "-o", "--output", metavar="json|pretty",
    help="pretty (default on a terminal) or compact json (default when piped).")]
Socket = Annotated[str | None, typer.Option("--socket", metavar="PATH", help="Daemon socket.")]
Url = Annotated[str | None, typer.Option("--url", metavar="URL",
                                         help="ws://HOST:PORT or unix://PATH.")]


def _run(group: str, command: str, positionals: list[str], output: str | None,
         socket: str | None, url: str | None, **own: str | None) -> None:
    options = {"--output": output, "--socket": socket, "--url": url,
               **{f"--{name}": text for name, text in own.items()}}
    try:
        code = run(SHORTCUTS[(group, command)], positionals, options)
    except UsageError as exc:
        fail(ec.USAGE, str(exc))
    raise typer.Exit(code)


@state_app.command("get")
def state_get(scope: Scope, key: Key, output: Output = None, socket: Socket = None,
              url: Url = None) -> None:
    """The value at SCOPE/KEY (null when there is none)."""
    _run("state", "get", [scope, key], output, socket, url)


@state_app.command("set")
def state_set(scope: Scope, key: Key, value: Value, output: Output = None,
              socket: Socket = None, url: Url = None) -> None:
    """Set SCOPE/KEY to VALUE: prints {old_value, new_value}."""
    _run("state", "set", [scope, key, value], output, socket, url)


@state_app.command("update")
def state_update(scope: Scope, key: Key, ops: Ops, output: Output = None,
                 socket: Socket = None, url: Url = None) -> None:
    """Apply update OPS to SCOPE/KEY atomically: prints {old_value, new_value, errors?}."""
    _run("state", "update", [scope, key, ops], output, socket, url)


@state_app.command("delete")
def state_delete(scope: Scope, key: Key, output: Output = None, socket: Socket = None,
                 url: Url = None) -> None:
    """Remove SCOPE/KEY: prints {old_value}."""
    _run("state", "delete", [scope, key], output, socket, url)


@state_app.command("list")
def state_list(scope: Scope, output: Output = None, socket: Socket = None,
               url: Url = None) -> None:
    """Every value in SCOPE, a JSON list."""
    _run("state", "list", [scope], output, socket, url)


@state_app.command("groups")
def state_groups(output: Output = None, socket: Socket = None, url: Url = None) -> None:
    """The scopes that hold values: prints {groups}."""
    _run("state", "groups", [], output, socket, url)


@stream_app.command("get")
def stream_get(stream: Stream, group: Group, item: Item, output: Output = None,
               socket: Socket = None, url: Url = None) -> None:
    """The item STREAM/GROUP/ITEM (null when there is none)."""
    _run("stream", "get", [stream, group, item], output, socket, url)


@stream_app.command("set")
def stream_set(stream: Stream, group: Group, item: Item, value: Value,
               output: Output = None, socket: Socket = None, url: Url = None) -> None:
    """Set STREAM/GROUP/ITEM to VALUE: prints {old_value, new_value}."""
    _run("stream", "set", [stream, group, item, value], output, socket, url)


@stream_app.command("update")
def stream_update(stream: Stream, group: Group, item: Item, ops: Ops, output: Output = None,
                  socket: Socket = None, url: Url = None) -> None:
    """Apply update OPS to STREAM/GROUP/ITEM atomically."""
    _run("stream", "update", [stream, group, item, ops], output, socket, url)


@stream_app.command("delete")
def stream_delete(stream: Stream, group: Group, item: Item, output: Output = None,
                  socket: Socket = None, url: Url = None) -> None:
    """Remove STREAM/GROUP/ITEM: prints {old_value}."""
    _run("stream", "delete", [stream, group, item], output, socket, url)


@stream_app.command("list")
def stream_list(stream: Stream, group: Group, output: Output = None, socket: Socket = None,
                url: Url = None) -> None:
    """Every item of STREAM/GROUP, a JSON list."""
    _run("stream", "list", [stream, group], output, socket, url)


@stream_app.command("groups")
def stream_groups(stream: Stream, output: Output = None, socket: Socket = None,
                  url: Url = None) -> None:
    """The groups of STREAM that hold items, a JSON list."""
    _run("stream", "groups", [stream], output, socket, url)


@stream_app.command("send")
def stream_send(stream: Stream, group: Group,
                event_type: Annotated[str, typer.Argument(metavar="TYPE",
                                                          help="The event's type.")],
                value: Value,
                item: Annotated[str | None, typer.Option(
                    "--id", help="The item (or subscriber) it is about.")] = None,
                output: Output = None, socket: Socket = None, url: Url = None) -> None:
    """Send an event of TYPE with VALUE to STREAM/GROUP's triggers (not stored)."""
    _run("stream", "send", [stream, group, event_type, value], output, socket, url, id=item)
