"""``iii trigger``: call a function from a shell, as cheaply as a process can.

This path is typed in loops and CI scripts, so it imports neither typer nor asyncio nor
the daemon: it parses its own arguments, opens the socket, writes one line and reads
one line. ``iii trigger --help`` and completion go through the typer app instead.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

from iii_cli import exit_codes as ec
from iii_cli.json_input import UsageError, check, loads, loads_or_text
from iii_cli.style import error_prefix, json_printable, printable
from iii_cli.trigger_options import BY_NAME, IN_FLIGHT, USAGE, VOID_IN_FLIGHT, help_text
from iii_sdk.client.addresses import BadAddress, parse_url
from iii_sdk.client.blocking import Calls, connect, unreachable_message
from iii_sdk.errors import Lost, Refused, Timeout, Unreachable
from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES as DEFAULT_MAX_FRAME
from iii_sdk.limits import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS

#: Our own deadline is the call's timeout plus this, so the daemon's TIMEOUT answer wins.
MARGIN_S = 5.0


class Args:
    def __init__(self) -> None:
        self.function_id: str | None = None
        self.pairs: list[str] = []
        self.json: str | None = None
        self.action: dict[str, Any] | None = None
        self.action_flags: list[str] = []
        self.timeout_ms = DEFAULT_TIMEOUT_MS
        self.output: str | None = None
        self.socket: str | None = None
        self.url: str | None = None
        self.quiet = False
        self.help = False
        #: ``--batch``: where the lines come from ("-": stdin), None without it.
        self.batch: str | None = None
        #: ``--max-in-flight``; None: the default for the batch's kind of calls.
        self.max_in_flight: int | None = None


def parse(argv: list[str]) -> Args:
    """Parse ``iii trigger``'s arguments.

    Raises:
        UsageError: anything malformed; nothing is sent.
    """
    args = Args()
    i = 0
    only_positional = False
    while i < len(argv):
        arg = argv[i]
        i += 1
        if only_positional or not arg.startswith("-") or arg == "-":
            if args.function_id is None:
                args.function_id = arg
            else:
                args.pairs.append(arg)
            continue
        if arg == "--":
            only_positional = True
            continue
        name, has_value, value = arg.partition("=")
        option = BY_NAME.get(name)
        if name == "--batch":  # FILE is optional: the next argument, unless an option
            if not has_value:
                value = "-"
                if i < len(argv) and (argv[i] == "-" or not argv[i].startswith("-")):
                    value, i = argv[i], i + 1
            args.batch = value
            continue
        if option is None or (has_value and option.metavar is None):
            raise UsageError(f"unknown option {arg}")
        if option.metavar is not None:
            if not has_value:
                if i >= len(argv):
                    raise UsageError(f"{name} needs a value")
                value = argv[i]
                i += 1
            _option(args, option.names[-1], value)
        elif name == "--void":
            args.action = {"type": "void"}
            args.action_flags.append(name)
        elif option.names[-1] == "--quiet":
            args.quiet = True
        else:
            args.help = True
    if args.help:
        return args
    if args.batch is not None:
        if args.pairs or args.json is not None:
            raise UsageError("with --batch the payloads come from the lines; k=v and --json "
                             "cannot be given too")
        if args.function_id is not None:
            check(args.function_id, "the function id")
        if args.max_in_flight is None:
            void = args.action is not None and args.action.get("type") == "void"
            args.max_in_flight = VOID_IN_FLIGHT if void else IN_FLIGHT
        return args
    if not args.function_id:
        raise UsageError("missing the function id")
    check(args.function_id, "the function id")
    if len(args.action_flags) > 1:
        raise UsageError(f"{' and '.join(args.action_flags)} cannot be combined")
    return args


def _option(args: Args, name: str, value: str) -> None:
    if name == "--json":
        args.json = value
    elif name == "--enqueue":
        if not value:
            raise UsageError("--enqueue needs a queue name")
        args.action = {"type": "enqueue", "queue": value}
        args.action_flags.append(name)
    elif name == "--action":
        action = loads(value, "--action")
        if not isinstance(action, dict) or not isinstance(action.get("type"), str):
            raise UsageError('--action must be a JSON object with a "type", '
                             'e.g. {"type":"delay","ms":5000}')
        args.action = action
        args.action_flags.append(name)
    elif name == "--timeout-ms":
        if not value.isdigit() or not 0 < int(value) <= MAX_TIMEOUT_MS:
            raise UsageError(f"--timeout-ms must be a whole number from 1 to "
                             f"{MAX_TIMEOUT_MS}, got {value!r}")
        args.timeout_ms = int(value)
    elif name == "--output":
        if value not in ("json", "pretty"):
            raise UsageError(f"-o takes json or pretty, got {value!r}")
        args.output = value
    elif name == "--max-in-flight":
        if not value.isdigit() or not 0 < int(value) <= 100_000:
            raise UsageError(f"--max-in-flight must be a whole number from 1 to 100000, "
                             f"got {value!r}")
        args.max_in_flight = int(value)
    elif name == "--socket":
        args.socket = value
    elif name == "--url":
        args.url = value


def read_json(source: str, option: str) -> Any:
    """The JSON an option gives: the text itself, ``@file``, or ``-`` for stdin (each
    at most the daemon's frame limit).

    Raises:
        UsageError: unreadable file, too large, invalid JSON.
    """
    if source == "-":
        return loads(_read_capped(sys.stdin.buffer, "stdin"), "stdin")
    if source.startswith("@"):
        try:
            with open(source[1:], "rb") as handle:
                text = _read_capped(handle, source[1:])
        except OSError as exc:
            raise UsageError(f"cannot read {source[1:]}: {exc.strerror or exc}") from None
        return loads(text, source[1:])
    return loads(source, option)


def build_payload(args: Args) -> Any:
    """``--json`` (any JSON value, @file or - for stdin) merged with ``k=v`` pairs (k=v
    wins); ``{}`` when neither is given.

    Raises:
        UsageError: unreadable file, invalid JSON, a pair without ``=``, a value the
            wire cannot carry (see :mod:`iii_cli.json_input`).
    """
    if args.json is not None:
        base = read_json(args.json, "--json")
        if not args.pairs:
            return base  # null too: the README promises any JSON value
        if not isinstance(base, dict):
            raise UsageError("k=v pairs need the --json payload to be an object")
    else:
        base = {}
    for pair in args.pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"expected k=v, got {pair!r}")
        check(key, f"the key {key!r}")
        base[key] = loads_or_text(raw, key)
    return base


def _read_capped(stream: Any, what: str) -> bytes:
    """All of ``stream``, refusing more than the daemon would take in one frame
    (``--json @/dev/zero`` must not read forever)."""
    data: bytes = stream.read(DEFAULT_MAX_FRAME + 1)
    if len(data) <= DEFAULT_MAX_FRAME:
        return data
    limit = _max_frame_bytes()
    data += stream.read(limit + 1 - len(data)) if limit > len(data) else b""
    if len(data) > limit:
        raise UsageError(f"{what} is larger than the daemon's frame limit of {limit} bytes "
                         "(config max_frame_bytes)")
    return data


def _max_frame_bytes() -> int:
    from iii_sdk import config

    try:
        return int(config.load().values["max_frame_bytes"])
    except config.ConfigError:
        return DEFAULT_MAX_FRAME


def fail(code: int, message: str, quiet: bool = False, usage: bool = False) -> NoReturn:
    """One line on stderr (control characters escaped: it may quote the daemon), then
    the usage line when asked; exit with ``code``."""
    if not quiet or code in (ec.USAGE, ec.UNREACHABLE):
        text = error_prefix(sys.stderr) + printable(message) + "\n"
        if usage:
            text += f"{USAGE} (iii trigger -h for help)\n"
        sys.stderr.write(text)
    raise SystemExit(code)


def _print_json(value: Any, stream: Any, output: str | None) -> None:
    pretty = output == "pretty" or (output is None and stream.isatty())
    if pretty:
        text = json.dumps(value, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    stream.write(json_printable(text) + "\n")
    stream.flush()


def _print_error(error: Any, output: str | None) -> None:
    """The error object: JSON when piped (scripts parse it) or with ``-o json``; on a
    terminal, readable: ``code: message``, then the stack trace if there is one."""
    if output == "json" or not sys.stderr.isatty() or not isinstance(error, dict):
        _print_json(error, sys.stderr, "json")
        return
    lines = [f"{error_prefix(sys.stderr)}{printable(str(error.get('code')))}: "
             f"{printable(str(error.get('message')))}"]
    stack = error.get("stacktrace")
    if isinstance(stack, str) and stack:
        lines += [printable(line) for line in stack.rstrip("\n").splitlines()]
    sys.stderr.write("\n".join(lines) + "\n")


def run(argv: list[str]) -> int:
    try:
        args = parse(argv)
        if args.help:
            import shutil

            sys.stdout.write(help_text(min(shutil.get_terminal_size((80, 24)).columns, 100)))
            return ec.OK
        payload = None if args.batch is not None else build_payload(args)
    except UsageError as exc:
        fail(ec.USAGE, str(exc), usage=True)
    url = args.url or (None if args.socket else os.environ.get("III_URL"))
    if url is not None:
        try:
            where = parse_url(url)
        except BadAddress as exc:
            fail(ec.USAGE, str(exc))
        url = where.target if where.kind == "unix" else url
    target = url or args.socket or os.environ.get("III_SOCKET") or _default_socket()
    if args.batch is not None:
        return _run_batch(target, args)
    assert args.function_id is not None
    try:
        with _connect(target, args) as conn:
            answer = conn.call(args.function_id, payload, timeout_ms=args.timeout_ms,
                               action=args.action)
            topic = _enqueued_topic(args, payload, answer)
            if topic is not None and not _consumed(conn, topic):
                sys.stderr.write(printable(
                    f"note: nothing consumes topic {topic} yet; the message waits for the "
                    f"first queue trigger on it") + "\n")
    except Unreachable as exc:
        fail(ec.UNREACHABLE, unreachable_message(exc, args.socket))
    except Refused as exc:
        fail(ec.USAGE, f"the daemon refused the request: {exc}")
    except Lost as exc:
        fail(ec.LOST, f"{exc} before answering: the call was lost (retry it if it is "
                      f"idempotent)", args.quiet)
    except Timeout:
        fail(ec.TIMEOUT, f"no answer within {args.timeout_ms} ms", args.quiet)
    error = answer.get("error")
    if error is not None:
        _print_error(error, args.output)
        return ec.for_error(error)
    result = answer.get("result")
    if isinstance(result, dict) and result.get("function_served") is False \
            and not args.quiet:
        # A receipt for a function nobody serves: it waits (protocol.md § Queues).
        sys.stderr.write(printable(
            f"note: nothing serves {args.function_id} yet; the message waits in queue "
            f"{args.action['queue'] if args.action else '?'} until a worker does") + "\n")
    if result is not None:
        _print_json(result, sys.stdout, args.output)
    return ec.OK


def _run_batch(target: str, args: Args) -> int:
    from iii_cli.progress import ProgressBar
    from iii_cli.trigger_batch import Batch, count_lines

    try:
        source = sys.stdin.buffer if args.batch == "-" else open(args.batch or "", "rb")  # noqa: SIM115
    except OSError as exc:
        fail(ec.USAGE, f"cannot read {args.batch}: {exc.strerror or exc}")
    bar = ProgressBar("calls", None, args.quiet)
    if bar.shown and args.batch != "-":
        bar.total = count_lines(args.batch or "")
    try:
        with source, _connect(target, args) as conn, bar:
            return Batch(conn, source, sys.stdout, args.function_id, args.action,
                         args.timeout_ms, args.max_in_flight or IN_FLIGHT, bar).run()
    except Unreachable as exc:
        fail(ec.UNREACHABLE, unreachable_message(exc, args.socket))


def _enqueued_topic(args: Args, payload: Any, answer: dict[str, Any]) -> str | None:
    """The topic of an ``enqueue {topic, data}`` that succeeded (and may be noted)."""
    if args.function_id != "enqueue" or args.action is not None or args.quiet \
            or "error" in answer or not isinstance(payload, dict):
        return None
    topic = payload.get("topic")
    return topic if isinstance(topic, str) else None


def _consumed(conn: Calls, topic: str) -> bool:
    """Some ``queue`` trigger is bound to ``topic`` (one more round trip, only after an
    ``enqueue``; when the daemon cannot say, assume so and say nothing)."""
    try:
        answer = conn.call("engine::registered-triggers::list", {"trigger_type": "queue"},
                           timeout_ms=2000)
        rows = answer["result"]["registered_triggers"]
        return any(row.get("config", {}).get("topic") == topic for row in rows)
    except Exception:
        return True


def _default_socket() -> str:
    from iii_sdk.paths import resolve_socket_path  # config file and platformdirs: slower

    return str(resolve_socket_path())


def _connect(target: str, args: Args) -> Calls:
    # The daemon answers TIMEOUT itself; our own deadline, for the whole exchange, only
    # guards against a daemon that died, hangs or trickles bytes.
    timeout_s = args.timeout_ms / 1000 + MARGIN_S
    try:
        return connect(target, timeout_s, _max_frame_bytes)
    except Unreachable:
        if args.socket is None and "://" not in target and _autostart():
            from pathlib import Path

            from iii_cli.daemon_control import start_daemon

            start_daemon(Path(target), quiet=True)
            return connect(target, timeout_s, _max_frame_bytes)
        raise


def _autostart() -> bool:
    from iii_sdk import config

    if not config.config_path().exists():
        return False
    try:
        return config.load().values.get("autostart") is True
    except config.ConfigError:
        return False


def main(argv: list[str]) -> int:
    # A failure to write our output (a reader gone, a full disk) is iii_cli.main's to tell.
    try:
        return run(argv)
    except KeyboardInterrupt:
        return ec.INTERRUPTED
