"""Every ``iii`` command but the trigger fast path, as a typer app."""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.completion import completion_init

from iii_cli import daemon_control as dc
from iii_cli import exit_codes as ec
from iii_cli import output, trigger_options, watch_command
from iii_cli.common import (
    DataDirOption,
    FormatOption,
    HttpPortOption,
    QuietOption,
    SocketOption,
    StreamsPortOption,
    UrlOption,
    WsPortOption,
    call_function,
    fail,
    one_of,
    say,
    where,
)
from iii_cli.daemon_call import (
    CALL_DEADLINE_S,
    COMPLETION_BUDGET_S,
    not_running,
    socket_of,
    version_line,
)
from iii_cli.list_view import KINDS, add_display_columns
from iii_cli.queue_commands import queue_app
from iii_cli.style import printable
from iii_cli.value_commands import state_app, stream_app
from iii_cli.worker_commands import worker_app
from iii_daemon.core.triggers import catalog
from iii_sdk.client.blocking import connect
from iii_sdk.errors import Lost, Refused, Timeout, Unreachable

# Typer registers its bash/zsh/fish completion classes only with add_completion=True; we
# print the scripts ourselves (`iii completions`), so register them here.
completion_init()

ROOT_SETTINGS: dict[str, Any] = {
    "name": "iii",
    "help": "A local function and trigger engine: call any function by id.",
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
    # Subcommands inherit it from the root context: `-h` wherever `--help` works.
    "context_settings": {"help_option_names": ["-h", "--help"]},
}
app = typer.Typer(**ROOT_SETTINGS)
daemon_app = typer.Typer(help="Start, stop and inspect the daemon.", no_args_is_help=True)
config_app = typer.Typer(help="Read and change the config file.", no_args_is_help=True)
app.add_typer(daemon_app, name="daemon")
app.add_typer(config_app, name="config")
app.add_typer(queue_app, name="queue")
app.add_typer(state_app, name="state")
app.add_typer(stream_app, name="stream")
app.add_typer(worker_app, name="worker")
app.command("watch")(watch_command.watch)


@app.command("tui")
def tui(socket: SocketOption = None, url: UrlOption = None) -> None:
    """The dashboard: functions with their rates, the live log, triggers, workers and
    queues; `?` lists the keys."""
    target = where(socket, url)
    from iii_cli.tui.app import IIIApp  # textual loads only here

    IIIApp(target).run()



class StatusFormat(StrEnum):
    text = "text"
    json = "json"


class ListKind(StrEnum):
    functions = "functions"
    workers = "workers"
    actions = "actions"
    triggers = "triggers"
    trigger_types = "trigger-types"
    queues = "queues"
    observers = "observers"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def _complete_from_daemon(ctx: typer.Context, incomplete: str, function_id: str,
                          data: dict[str, Any], rows_key: str, id_key: str) -> list[str]:
    """Ids a running daemon lists (``function_id`` answers ``{rows_key: [{id_key}]}``),
    from the command's --url / --socket as typed; never starts one, gives up after 300 ms."""
    from iii_sdk.paths import resolve_socket_path

    params = ctx.params if ctx is not None else {}
    url = params.get("url") or os.environ.get("III_URL")
    try:
        target = url.removeprefix("unix://") if url else \
            str(resolve_socket_path(params.get("socket")))
        with connect(target, COMPLETION_BUDGET_S) as conn:
            answer = conn.call(function_id, data, timeout_ms=250)
        ids = [row[id_key] for row in answer["result"][rows_key]]
    except Exception:
        return []
    return [one for one in ids if one.startswith(incomplete)]


def _complete_function_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    return _complete_from_daemon(ctx, incomplete, "engine::functions::list",
                                 {"include_internal": True}, "functions", "function_id")




def _version(value: bool) -> None:
    """``iii --version``: the CLI's version, and the daemon's when one answers quickly."""
    if not value:
        return
    typer.echo(version_line(COMPLETION_BUDGET_S))
    raise typer.Exit(ec.OK)


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Show the version of the CLI (and of the daemon when one runs) and exit.")
          ] = False) -> None:
    """A local function and trigger engine: call any function by id."""


# --- trigger (help and completion; runs go through iii_cli.trigger_fast) -------------------


def trigger(ctx: typer.Context, function_id: str, pairs: list[str] | None = None,
            **_options: Any) -> None:
    """Runs go through iii_cli.trigger_fast (main.py); typer sees this command only for
    completion and ``iii --help``. Its signature is built from the option table."""
    from iii_cli.trigger_fast import main as fast

    raise typer.Exit(fast(sys.argv[sys.argv.index("trigger") + 1:]))


def _trigger_signature() -> inspect.Signature:
    """``trigger``'s parameters as typer reads them: FN, the k=v pairs, and one option per
    entry of trigger_options.OPTIONS, the table the fast path parses (no drift)."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [
        inspect.Parameter("ctx", positional, annotation=typer.Context),
        inspect.Parameter("function_id", positional, annotation=Annotated[str, typer.Argument(
            metavar="FN", help="The function to call.",
            autocompletion=_complete_function_ids)]),
        inspect.Parameter("pairs", positional, default=None, annotation=Annotated[
            list[str] | None, typer.Argument(
                metavar="[k=v ...]", help="Payload fields; values parsed as JSON, else "
                                          "strings.")]),
    ]
    for option in trigger_options.OPTIONS:
        if "--help" in option.names:
            continue  # click's own, named in context_settings
        name = option.names[-1].lstrip("-").replace("-", "_")
        declared = typer.Option(*option.names, help=option.help, metavar=option.metavar)
        kind: Any = bool if option.metavar is None else str | None
        params.append(inspect.Parameter(name, positional, annotation=Annotated[kind, declared],
                                        default=False if option.metavar is None else None))
    return inspect.Signature(params)


_signature = _trigger_signature()
trigger.__signature__ = _signature  # type: ignore[attr-defined]
trigger.__annotations__ = {p.name: p.annotation for p in _signature.parameters.values()}
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                              "help_option_names": ["-h", "--help"]},
            help=f"{trigger_options.SUMMARY}\n\n{trigger_options.EXIT_CODES}")(trigger)


# --- list ---------------------------------------------------------------------------------

def _list_kinds(incomplete: str) -> list[str]:
    return [kind.value for kind in ListKind if kind.value.startswith(incomplete)]


@app.command("list")
def list_(
    kind_name: Annotated[str, typer.Argument(
        metavar="KIND", help=f"What to list: {', '.join(k.value for k in ListKind)}.",
        autocompletion=_list_kinds)],
    fmt: FormatOption = None,
    socket: SocketOption = None,
    url: UrlOption = None,
    internal: Annotated[bool, typer.Option(
        "--all", help="Also the daemon's own engine::* functions (and triggers of them).")
    ] = False,
) -> None:
    """List functions, workers, actions, triggers, trigger types, queues or observers."""
    if kind_name not in {k.value for k in ListKind}:
        fail(ec.USAGE, f"cannot list {kind_name!r}: `iii list` lists "
                       f"{', '.join(k.value for k in ListKind)}")
    kind = ListKind(kind_name)
    target = where(socket, url)
    function_id, key, columns = KINDS[kind.value]
    rows: list[dict[str, Any]] = call_function(
        target, function_id, {"include_internal": True} if internal else None)[key]
    chosen = fmt.value if fmt else output.default_format()
    if chosen == "table":
        add_display_columns(kind.value, rows, lambda fid: call_function(target, fid))
    typer.echo(output.render(rows, columns, chosen))


# --- triggers -----------------------------------------------------------------------------


# The built-in types come from the daemon's catalog (a table; it loads no type).
_TYPE_HELP = f"{', '.join(catalog.BUILTIN)}, or a worker-provided type."


@app.command("register-trigger")
def register_trigger(
    trigger_type: Annotated[str, typer.Option("--type", help=_TYPE_HELP)],
    function_id: Annotated[str, typer.Option(
        "--function", help="The function to run.", autocompletion=_complete_function_ids)],
    config: Annotated[str | None, typer.Option(
        "--config", help='The type\'s config as a JSON object, @file or - for stdin, e.g. '
                         '{"expression":"*/5 * * * * *"}.')
    ] = None,
    condition: Annotated[str | None, typer.Option(
        "--condition", help="Run only when this function returns something truthy.")
    ] = None,
    trigger_id: Annotated[str | None, typer.Option("--id", help="Choose the id.")] = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Change the trigger with this --id if it exists.")] = False,
    allow_pending: Annotated[bool, typer.Option(
        "--allow-pending", help="Accept a type nobody provides yet: the trigger waits for "
                                "a worker that does.")] = False,
    socket: SocketOption = None,
    url: UrlOption = None,
    quiet: QuietOption = False,
) -> None:
    """Add a daemon-owned trigger (kept across restarts); prints its id."""
    from iii_cli.trigger_fast import UsageError, read_json

    try:
        parsed = read_json(config, "--config") if config is not None else {}
    except UsageError as exc:
        fail(ec.USAGE, str(exc))
    if not isinstance(parsed, dict):
        fail(ec.USAGE, "--config must be a JSON object")
    if condition:
        parsed["condition_function_id"] = condition
    target = where(socket, url)
    if not allow_pending:
        known = [row["id"] for row in call_function(target, "engine::triggers::list",
                                                    {})["triggers"]]
        if trigger_type not in known:
            fail(ec.USAGE, unknown_type_message(trigger_type, known))
    request: dict[str, Any] = {"trigger_type": trigger_type, "function_id": function_id,
                               "config": parsed}
    if trigger_id:
        request["id"] = trigger_id
    if replace:
        request["replace"] = True
    result = call_function(target, "engine::register_trigger", request)
    functions = {f["function_id"]
                 for f in call_function(target, "engine::functions::list",
                                        {"include_internal": True})["functions"]}
    for needed in (function_id, condition):
        if needed and needed not in functions:
            say(f"iii: warning: function '{needed}' is not registered yet; the trigger "
                 "records function_not_found until a worker serves it", quiet)
    if result["status"] == "pending":
        say(f"iii: warning: nobody provides trigger type '{trigger_type}' yet; the "
             "trigger is pending", quiet)
    typer.echo(printable(result["id"]))


def unknown_type_message(trigger_type: str, known: list[str]) -> str:
    """``unknown trigger type 'crom' (did you mean cron?)``, and what there is."""
    import difflib

    close = difflib.get_close_matches(trigger_type, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (f"unknown trigger type {printable(repr(trigger_type))}{hint}; known: "
            f"{', '.join(sorted(known))}; --allow-pending registers it to wait for a worker "
            f"that provides it")


def _complete_trigger_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    return _complete_from_daemon(ctx, incomplete, "engine::registered-triggers::list", {},
                                 "registered_triggers", "id")


@app.command()
def fire(
    trigger_id: Annotated[str, typer.Argument(metavar="TRIGGER_ID", help="The trigger's id.",
                                              autocompletion=_complete_trigger_ids)],
    payload: Annotated[str | None, typer.Option(
        "--json", metavar="PAYLOAD", help="The event its function gets (JSON, @file or -); "
                                          "default: what a cron tick gives now, else {}.")
    ] = None,
    skip_condition: Annotated[bool, typer.Option(
        "--skip-condition", help="Run the function without asking the trigger's condition.")
    ] = False,
    fmt: Annotated[str | None, typer.Option(
        "-o", "--output", metavar="json|pretty", help="As iii trigger.")] = None,
    timeout_ms: Annotated[int | None, typer.Option(
        "--timeout-ms", metavar="N", help="Give up after N ms (as iii trigger).")] = None,
    socket: SocketOption = None,
    url: UrlOption = None,
) -> None:
    """Fire a trigger by hand: run its function now, through its condition, and print
    the result as iii trigger does (same exit codes; 4: no such trigger). Recorded with
    source manual."""
    from iii_cli.trigger_fast import UsageError, read_json
    from iii_cli.trigger_fast import main as trigger

    request: dict[str, Any] = {"id": trigger_id}
    if payload is not None:
        try:
            request["payload"] = read_json(payload, "--json")
        except UsageError as exc:
            fail(ec.USAGE, str(exc))
    if skip_condition:
        request["skip_condition"] = True
    argv = ["engine::triggers::fire", "--json", json.dumps(request)]
    for flag, value in (("-o", fmt), ("--timeout-ms", timeout_ms), ("--socket", socket),
                        ("--url", url)):
        if value is not None:
            argv += [flag, str(value)]
    raise typer.Exit(trigger(argv))


@app.command()
def unregister(
    trigger_id: Annotated[str, typer.Argument(metavar="ID", help="The trigger's id.")],
    socket: SocketOption = None,
    url: UrlOption = None,
) -> None:
    """Remove a daemon-owned trigger; exit 4 when there is none with that id."""
    result = call_function(where(socket, url), "engine::unregister_trigger", {"id": trigger_id})
    if not result["removed"]:
        fail(ec.NOT_FOUND, f"no trigger '{trigger_id}'")


# --- daemon -------------------------------------------------------------------------------


@daemon_app.command("start")
def daemon_start(
    foreground: Annotated[bool, typer.Option("--foreground", help="Stay attached; log to "
                                                                  "stderr.")] = False,
    data_dir: DataDirOption = None,
    ws_port: WsPortOption = None,
    http_port: HttpPortOption = None,
    streams_port: StreamsPortOption = None,
    socket: SocketOption = None,
    redis_url: Annotated[str | None, typer.Option(
        "--redis-url", help="Share pub/sub with other daemons through this Redis "
                            "(redis://HOST:PORT/DB).")] = None,
    quiet: QuietOption = False,
) -> None:
    """Start the daemon detached: exit 0 once one runs, also when one already did. With
    --foreground this process becomes the daemon: exit 1 when one already runs there."""
    socket_path = socket_of(socket)
    if redis_url:  # through the environment: a password in it stays out of `ps`
        os.environ["III_REDIS_URL"] = redis_url
    options = dc.StartOptions(data_dir=data_dir, ws_port=ws_port, http_port=http_port,
                              streams_port=streams_port)
    if foreground:
        # The same rule as `python -m iii_daemon`, which this becomes: it cannot run here.
        if dc.running_pid(socket_path) is not None and dc.answers(socket_path):
            fail(ec.FUNCTION_ERROR, f"a daemon is already running on {socket_path}; "
                                    "`iii daemon stop` it first, or use another --socket")
        command = dc.daemon_command(socket_path, options)
        os.execv(command[0], command)
    try:
        pid, started = dc.start_daemon(socket_path, options)
    except dc.DaemonError as exc:
        fail(ec.FUNCTION_ERROR, f"cannot start the daemon: {exc}")
    if started:
        say(f"iii daemon started (pid {pid}) on {socket_path}", quiet)
    else:
        say(f"iii daemon already running (pid {pid}) on {socket_path}", quiet)


@daemon_app.command("stop")
def daemon_stop(socket: SocketOption = None, quiet: QuietOption = False) -> None:
    """Stop the daemon: in-flight calls end, the socket is removed."""
    socket_path = socket_of(socket)
    try:
        pid = dc.stop_daemon(socket_path)
    except dc.DaemonError as exc:
        fail(ec.FUNCTION_ERROR, str(exc))
    say(f"iii daemon stopped (pid {pid})" if pid else
         f"iii daemon not running on {socket_path}", quiet)


@daemon_app.command("restart")
def daemon_restart(
    data_dir: DataDirOption = None,
    ws_port: WsPortOption = None,
    http_port: HttpPortOption = None,
    streams_port: StreamsPortOption = None,
    socket: SocketOption = None,
    quiet: QuietOption = False,
) -> None:
    """Stop the daemon if it runs, then start it."""
    socket_path = socket_of(socket)
    try:
        dc.stop_daemon(socket_path)
        pid, _ = dc.start_daemon(socket_path, dc.StartOptions(data_dir, ws_port, http_port,
                                                              streams_port))
    except dc.DaemonError as exc:
        fail(ec.FUNCTION_ERROR, str(exc))
    say(f"iii daemon restarted (pid {pid}) on {socket_path}", quiet)


@daemon_app.command("status")
def daemon_status(
    fmt: Annotated[StatusFormat, typer.Option(
        "-o", "--output", parser=one_of(StatusFormat), metavar="text|json")
    ] = StatusFormat.text,
    socket: SocketOption = None,
    url: UrlOption = None,
) -> None:
    """Pid, uptime, socket, listeners and counts; exit 3 when not running."""
    target = where(socket, url)
    place = f"at {target}" if url else f"on {target}"
    try:
        info = dc.daemon_status(target, CALL_DEADLINE_S)
    except Unreachable as exc:
        fail(ec.UNREACHABLE, not_running(exc, target))
    except Timeout:
        fail(ec.UNREACHABLE, f"the daemon {place}: no answer within {CALL_DEADLINE_S:.0f} s")
    except (Refused, Lost, dc.DaemonError) as exc:
        fail(ec.UNREACHABLE, f"the daemon {place} did not report its status: {exc}")
    if fmt is StatusFormat.json:
        typer.echo(json.dumps(info))
        return
    try:
        text = _status_text(info)
    except (KeyError, TypeError, ValueError) as exc:
        fail(ec.UNREACHABLE, f"the daemon {place} sent a status without {exc}")
    typer.echo(text)


def _status_text(info: dict[str, Any]) -> str:
    """The status as lines; every value the daemon sent is escaped for the terminal."""
    def listener(name: str, v: dict[str, Any]) -> str:
        where = v.get("url") or f":{v['port']}"
        state = f"on {where}" if v["state"] == "on" else f"off ({v['reason']})"
        return printable(f"{name} {state}")

    listeners = ", ".join(listener(name, v) for name, v in info.get("listeners", {}).items())
    return (
        f"running   pid {info['pid']}, up {output.duration_text(info['uptime_s'])}, "
        f"version {printable(str(info['version']))}\n"
        f"socket    {printable(str(info['socket']))}\n"
        f"data      {printable(str(info['data_dir']))}\n"
        f"listeners {listeners}\n"
        f"backend   {_backend_text(info.get('backend') or {})}\n"
        f"{_bridge_text(info.get('bridge'))}"
        f"counts    {_count(info['workers'], 'worker')}, "
        f"{_count(info['functions'], 'function')}, "
        f"{_count(info['triggers'], 'trigger')}, "
        f"{_count(info['pending_invocations'], 'call')} in flight, "
        f"{_count(info.get('queued_messages', 0), 'queued message')}"
        f"{_of_them_dead(info.get('dead_letters', 0))}"
        f"{_stream_clients_text(info)}")


def _stream_clients_text(info: dict[str, Any]) -> str:
    """The stream socket's clients, when it listens."""
    if (info.get("listeners") or {}).get("streams", {}).get("state") != "on":
        return ""
    return f", {_count(info.get('stream_clients', 0), 'stream client')} " \
           f"({_count(info.get('stream_subscriptions', 0), 'subscription')})"


def _backend_text(backend: dict[str, Any]) -> str:
    """The store, or the Redis shared with other daemons and whether it answers."""
    if backend.get("kind") != "redis":
        return printable(f"sqlite {backend.get('path', '')}".rstrip())
    state = str(backend.get("state"))
    if state == "down":
        state += f" since {time.strftime('%H:%M:%S', time.localtime(backend['since']))}"
        state += f": {backend.get('error')}" if backend.get("error") else ""
    shares = ", ".join(backend.get("shares") or [])
    return printable(f"redis {backend.get('url')} ({state}; shares {shares})")


def _bridge_text(bridge: dict[str, Any] | None) -> str:
    """The bridge to another engine, whether it is up, and what crosses it; "" for none."""
    if not bridge:
        return ""
    state = str(bridge.get("state"))
    if state == "down" and bridge.get("since"):
        state += f" since {time.strftime('%H:%M:%S', time.localtime(bridge['since']))}"
        state += f": {bridge.get('error')}" if bridge.get("error") else ""
    crossing = f"{len(bridge.get('expose') or [])} exposed, " \
               f"{len(bridge.get('forward') or [])} forwarded"
    return printable(f"bridge    {bridge.get('url')} as {bridge.get('service_id')} "
                     f"({state}; {crossing})") + "\n"


def _of_them_dead(dead: int) -> str:
    return f" ({_count(dead, 'dead letter')})" if dead else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@daemon_app.command("logs")
def daemon_logs(
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")
                      ] = False,
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many last lines.")] = 50,
) -> None:
    """Print the daemon's log (the detached daemon's; --foreground logs to stderr)."""
    path = dc.log_file()
    if not path.exists():
        fail(ec.NOT_FOUND, f"no log yet at {path}")
    handle = open(path, "rb")  # noqa: SIM115 - replaced when the log rotates
    try:
        tail = handle.read().splitlines()[-lines:] if lines > 0 else []
        _show_log(b"".join(line + b"\n" for line in tail))
        while follow:
            chunk = handle.read()
            if chunk:
                _show_log(chunk)
            elif _rotated(path, handle):
                # The daemon's RotatingFileHandler renamed our file away and started a
                # new one: finish nothing (we read to the end), follow the new file.
                handle.close()
                handle = open(path, "rb")  # noqa: SIM115
            else:
                time.sleep(0.2)
    finally:
        handle.close()


def _rotated(path: Path, handle: Any) -> bool:
    """The file at ``path`` is no longer the one ``handle`` reads (or it was truncated)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False  # between the rename and the new file: look again later
    mine = os.fstat(handle.fileno())
    return now.st_ino != mine.st_ino or now.st_size < handle.tell()


def _show_log(data: bytes) -> None:
    """Log text as it is for a pipe; on a terminal, with control characters escaped
    (log lines can quote what clients sent)."""
    if sys.stdout.isatty():
        text = data.decode(errors="replace")
        data = "\n".join(printable(line) for line in text.split("\n")).encode()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


# --- config -------------------------------------------------------------------------------


@config_app.command("path")
def config_path() -> None:
    """Where the config file is ($III_CONFIG overrides)."""
    from iii_sdk import config

    typer.echo(str(config.config_path()))


@config_app.command("show")
def config_show() -> None:
    """The effective settings: defaults overlaid with the file, as TOML."""
    import tomli_w

    from iii_sdk import config

    try:
        settings = config.load()
        overrides = {key: (config.ENV_OVERRIDES[key], value)
                     for key in config.ENV_OVERRIDES
                     if (value := config.env_value(key)) is not None}
    except config.ConfigError as exc:
        fail(ec.USAGE, f"config error: {exc}")
    for warning in settings.warnings:
        say(f"iii: warning: {warning}", False)
    values = settings.values
    for key, (_, value) in overrides.items():
        *tables, leaf = key.split(".")
        node = values
        for table in tables:
            node = node[table]
        node[leaf] = value
    if values["redis"]["url"]:  # its password is nobody's business here
        from iii_sdk.client.addresses import without_password

        values["redis"]["url"] = without_password(values["redis"]["url"])
    text = tomli_w.dumps(_without_none(values)).rstrip()
    typer.echo(_mark_overrides(text, {key: env for key, (env, _) in overrides.items()}))


def _mark_overrides(toml_text: str, overrides: dict[str, str]) -> str:
    """Each value an environment variable sets, with a comment naming the variable."""
    lines = toml_text.split("\n")
    table = ""
    for index, line in enumerate(lines):
        if line.startswith("["):
            table = line.strip("[]") + "."
            continue
        key = table + line.partition(" = ")[0]
        if " = " in line and key in overrides:
            lines[index] = f"{line}  # from ${overrides[key]}, not the file"
    return "\n".join(lines)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_none(v) if isinstance(v, dict) else v
            for k, v in values.items() if v is not None}


@config_app.command("set")
def config_set(
    key: Annotated[str, typer.Argument(help="A dotted key, e.g. websocket.port.")],
    value: Annotated[str, typer.Argument(help="The value (numbers and true/false typed).")],
) -> None:
    """Set one key in the config file (created if missing)."""
    import tomli_w

    from iii_sdk import config

    wanted = config.expected_type(key)
    if wanted is None:
        fail(ec.USAGE, f"unknown config key '{key}'")
    typed: Any = value
    if wanted is bool:
        if value.lower() not in ("true", "false"):
            fail(ec.USAGE, f"'{key}' takes true or false, got {value!r}")
        typed = value.lower() == "true"
    elif wanted is int:
        try:
            typed = int(value)
        except ValueError:
            fail(ec.USAGE, f"'{key}' takes a whole number, got {value!r}")
    elif wanted is list:
        typed = [item.strip() for item in value.split(",") if item.strip()]
    problem = config.value_problem(key, typed)
    if problem:  # the same rule the daemon applies when it reads the file
        fail(ec.USAGE, problem)
    path = config.config_path()
    try:
        current = config.read_file(path)
    except config.ConfigError as exc:
        fail(ec.USAGE, f"config error: {exc}")
    node = current
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = typed
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomli_w.dumps(current), encoding="utf-8")
    os.replace(tmp, path)  # never a half-written config


# --- completions and demo -----------------------------------------------------------------

#: Typer's bash script hands bash's own words over, and bash splits a word at each ':'
#: (it is in COMP_WORDBREAKS): ``math::d`` arrives as ``math : : d``. This one splits the
#: line up to the cursor at blanks only, and strips what precedes the word's last ':'
#: from each answer, since bash replaces only what follows it.
BASH_COMPLETION = r"""_iii_completion() {
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words
    read -r -a words <<< "$line"
    [[ -z $line || $line == *[[:space:]] ]] && words+=("")
    local cword=$(( ${#words[@]} - 1 ))
    local cur=${words[cword]}
    local joined="${words[*]}"
    local IFS=$'\n'
    COMPREPLY=( $( env COMP_WORDS="$joined" COMP_CWORD=$cword \
                   _III_COMPLETE=complete_bash "$1" ) )
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local prefix=${cur%"${cur##*:}"} i
        for i in "${!COMPREPLY[@]}"; do
            COMPREPLY[i]=${COMPREPLY[i]#"$prefix"}
        done
    fi
    return 0
}

complete -o default -F _iii_completion iii
"""


def completion_script(shell: str) -> str:
    """The script for ``shell``; it calls ``iii`` back for each completion, so function
    ids come from the running daemon."""
    if shell == "bash":
        return BASH_COMPLETION
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="iii", complete_var="_III_COMPLETE", shell=shell)


@app.command()
def completions(
    shell: Annotated[Shell, typer.Argument(parser=one_of(Shell), metavar="SHELL",
                                           help="bash, zsh or fish.")],
) -> None:
    """Print the shell completion script (also shipped in completions/)."""
    typer.echo(completion_script(shell.value), nl=False)


@app.command()
def demo(socket: SocketOption = None) -> None:
    """Start the daemon if needed, attach an example worker, call its functions."""
    from iii_cli.demo import run as run_demo

    raise typer.Exit(run_demo(socket_of(socket)))


def app_for(argv: list[str]) -> typer.Typer:
    """The app with only the command ``argv`` names, when that is plain: typer makes every
    registered command's click object before it parses anything, and one command (or
    group) costs a fraction of all of them. Anything else (no command, an option first,
    an unknown name, completion) gets the whole app, which lists and suggests."""
    if not argv or argv[0].startswith("-") or "_III_COMPLETE" in os.environ:
        return app
    name = argv[0]
    commands = [c for c in app.registered_commands
                if (c.name or getattr(c.callback, "__name__", "").replace("_", "-")) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    one = typer.Typer(**ROOT_SETTINGS)
    one.registered_callback = app.registered_callback  # --version; and it stays a group
    one.registered_commands = commands
    one.registered_groups = groups
    return one


def run() -> None:
    try:
        app_for(sys.argv[1:])()
    except KeyboardInterrupt:
        sys.exit(ec.INTERRUPTED)
