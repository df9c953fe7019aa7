"""``iii trigger --batch``: one call per JSON line, pipelined over one connection.

Each input line is ``{"function_id", "payload"?, "void"?, "enqueue"?, "timeout_ms"?}``, or
with ``iii trigger FN --batch`` the payload for FN. Each answer is printed as one JSON
line, ``{"line": n, "result": ...}`` or ``{"line": n, "error": {...}}``, in input order.
A bad line is answered with its line number and the rest go on. The window of lines read
but not yet printed is bounded (``--max-in-flight``), and so are the request bytes in
flight (below what a socket buffers, so that sending never waits on a daemon that is
itself waiting for us to read).
"""

from __future__ import annotations

import json
import json.scanner
import sys
import time
from typing import IO, Any

from iii_cli import exit_codes as ec
from iii_cli.json_input import UsageError, check, loads_line
from iii_cli.progress import ProgressBar
from iii_cli.style import json_printable
from iii_sdk.client.blocking import Calls
from iii_sdk.errors import Broken, Closed, Refused, Timeout
from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES, GREETING_TIMEOUT_S, MAX_TIMEOUT_MS

#: The exit code of a batch with failures: the first of these that any line got. What
#: stops the work (no daemon, no answers, the connection lost) comes before what a line
#: did wrong, and that before a function's own failure.
PRIORITY = (ec.UNREACHABLE, ec.TIMEOUT, ec.LOST, ec.NOT_FOUND, ec.USAGE, ec.FUNCTION_ERROR)
#: Request bytes in flight at most (one larger line goes alone).
MAX_BYTES_IN_FLIGHT = 128 * 1024
#: Added to a call's timeout before we stop waiting ourselves (the daemon's TIMEOUT wins).
MARGIN_S = 5.0
#: The keys a line may have without FN.
LINE_KEYS = frozenset({"function_id", "payload", "void", "enqueue", "timeout_ms"})

# The stdlib json, not msgspec: importing msgspec costs ~30 ms of a batch's ~250 ms (the
# target is measured against the SDK's calls alone), and the C scanner called directly
# reads a line or an answer in ~0.3 µs, as fast as msgspec for these small values.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_scan = json.scanner.make_scanner(json.JSONDecoder())
_JSON_SPACE = " \t\n\r"


def _call_frame(function_id: str, data: str, number: int, timeout_ms: int,
                action: str) -> bytes:
    """An ``invokefunction`` frame: ``function_id`` and ``data`` are JSON text already,
    ``action`` is ``,"action":{...}`` or empty."""
    return (f'{{"type":"invokefunction","function_id":{function_id},"data":{data},'
            f'"invocation_id":"b{number}","timeout_ms":{timeout_ms}{action}}}').encode()


def _action_text(action: dict[str, Any] | None) -> str:
    return "" if action is None else f',"action":{_encode(action)}'


def worst(codes: set[int]) -> int:
    """The exit code for a batch whose lines ended with ``codes``."""
    return next((code for code in PRIORITY if code in codes), ec.OK)


class Batch:
    """Reads lines, keeps up to ``max_in_flight`` of them unprinted, prints in order."""

    def __init__(self, conn: Calls, source: IO[bytes], out: IO[str], function_id: str | None,
                 action: dict[str, Any] | None, timeout_ms: int, max_in_flight: int,
                 progress: ProgressBar | None = None) -> None:
        self.conn = conn
        #: Lines answered so far, on a terminal (see iii_cli.progress).
        self.progress = progress
        self.source = source
        self.out = out
        self.function_id = function_id
        self.action = action
        self.timeout_ms = timeout_ms
        # What every line of ``FN --batch`` shares, encoded once.
        self._function_json = _encode(function_id)
        self._action_json = _action_text(action)
        self.max_in_flight = max_in_flight
        #: Line number -> its answer line (None: a blank line, nothing to print).
        self.done: dict[int, str | None] = {}
        #: Invocation id -> (line number, request bytes), for calls sent and not answered.
        self.waiting: dict[str, tuple[int, int]] = {}
        self.read = 0  # lines read so far
        self.printed = 0  # lines printed (or skipped) so far
        self.eof = False
        self.codes: set[int] = set()
        self.heard = False  # the daemon greeted us
        #: A call read but not sent yet: it did not fit the bytes in flight.
        self._held: tuple[int, bytes] | None = None

    # --- one line -----------------------------------------------------------------------

    def message(self, number: int, raw: bytes) -> bytes:
        """The call line ``number`` asks for, encoded.

        Raises:
            UsageError: the line is not one.
        """
        value, text = loads_line(raw, number)
        if self.function_id is not None:
            return _call_frame(self._function_json, text, number, self.timeout_ms,
                               self._action_json)
        if not isinstance(value, dict):
            raise UsageError(f"line {number}: expected an object with a function_id")
        unknown = sorted(set(value) - LINE_KEYS)
        if unknown:
            raise UsageError(f"line {number}: unknown key {unknown[0]!r} (a line takes "
                             f"{', '.join(sorted(LINE_KEYS))})")
        function_id = value.get("function_id")
        if not isinstance(function_id, str) or not function_id:
            raise UsageError(f"line {number}: function_id must be a non-empty string")
        check(function_id, "the function id")
        timeout_ms = value.get("timeout_ms", self.timeout_ms)
        if type(timeout_ms) is not int or not 0 < timeout_ms <= MAX_TIMEOUT_MS:
            raise UsageError(f"line {number}: timeout_ms must be a whole number from 1 "
                             f"to {MAX_TIMEOUT_MS}")
        action = self._action(number, value, self.action)
        return _call_frame(_encode(function_id), _encode(value.get("payload", {})), number,
                           timeout_ms, _action_text(action))

    @staticmethod
    def _action(number: int, line: dict[str, Any],
                default: dict[str, Any] | None) -> dict[str, Any] | None:
        void, queue = line.get("void"), line.get("enqueue")
        if void is not None and not isinstance(void, bool):
            raise UsageError(f"line {number}: void must be true or false")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise UsageError(f"line {number}: enqueue must be a queue name")
        if void and queue is not None:
            raise UsageError(f"line {number}: void and enqueue cannot be combined")
        if void:
            return {"type": "void"}
        if queue is not None:
            return {"type": "enqueue", "queue": queue}
        return None if void is False else default

    def answer(self, number: int, key: str, value: Any, code: int) -> None:
        """Line ``number``'s answer: ``value`` is encoded as it is."""
        if code != ec.OK:
            self.codes.add(code)
        text = "null" if value is None else _encode(value)  # None: a void's hand-off
        self.done[number] = f'{{"line":{number},"{key}":{text}}}'

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        try:
            while True:
                self._print_ready()
                self._send_more()
                if self.eof and not self.waiting and self._held is None:
                    return worst(self.codes)
                self._receive()
        except (Timeout, Closed, Broken, Refused) as exc:
            self._print_ready()
            return self._stopped(exc)

    def _send_more(self) -> None:
        if self.waiting and self.read - self.printed > self.max_in_flight // 2:
            return  # refill in rounds of half the window: fewer, larger writes
        batch: list[bytes] = []
        in_flight = sum(size for _, size in self.waiting.values())
        while self._held is not None or \
                (not self.eof and self.read - self.printed < self.max_in_flight):
            if self._held is None:
                self._held = self._next_call()
                if self._held is None:
                    continue  # the end, a blank line or a bad one (answered)
            number, message = self._held
            if in_flight and in_flight + len(message) > MAX_BYTES_IN_FLIGHT:
                break  # held for a later round; a line larger than the bound goes alone
            self._held = None
            in_flight += len(message)
            self.waiting[f"b{number}"] = (number, len(message))
            batch.append(message)
        if batch:
            self.conn.send_frames(batch)

    def _next_call(self) -> tuple[int, bytes] | None:
        """The next line's call, or None (the end of the input, a blank or a bad line)."""
        raw = self._next_line()
        if raw is None:
            self.eof = True
            return None
        number = self.read
        if not raw.strip():
            self.done[number] = None
            return None
        try:
            return number, self.message(number, raw)
        except UsageError as exc:
            self.answer(number, "error", {"code": "bad_request", "message": str(exc)},
                        ec.USAGE)
            return None

    def _next_line(self) -> bytes | None:
        """The next input line; an over-long one is skipped to its end and answered."""
        while True:
            raw = self.source.readline(DEFAULT_MAX_FRAME_BYTES + 1)
            if not raw:
                return None
            self.read += 1
            if len(raw) <= DEFAULT_MAX_FRAME_BYTES or raw.endswith(b"\n"):
                return raw
            while raw and not raw.endswith(b"\n"):
                raw = self.source.readline(1 << 20)
            self.answer(self.read, "error", {
                "code": "bad_request",
                "message": f"line {self.read} is longer than {DEFAULT_MAX_FRAME_BYTES} bytes"},
                ec.USAGE)

    def _receive(self) -> None:
        """Take every answer that arrived (at least one)."""
        conn = self.conn
        wait_s = self.timeout_ms / 1000 + MARGIN_S if self.heard else GREETING_TIMEOUT_S
        conn.deadline = time.monotonic() + wait_s
        try:
            frames = conn.receive_frames()
        except Timeout:
            if self.heard:
                raise
            raise Broken(f"{conn._where()} accepted the connection but never answered like "
                         f"an iii daemon") from None
        for frame in frames:
            self._take(frame)

    def _take(self, frame: bytes | str) -> None:
        reply = self._decode(frame)
        self.heard = True
        kind, invocation_id = reply.get("type"), reply.get("invocation_id")
        if kind == "error":
            raise Refused(str(reply.get("message")))
        if kind != "invocationresult" or type(invocation_id) is not str:
            return
        sent = self.waiting.pop(invocation_id, None)
        if sent is None:
            return
        number = sent[0]
        error = reply.get("error")
        if error is not None:
            self.answer(number, "error", error, ec.for_error(error))
        else:
            self.answer(number, "result", reply.get("result"), ec.OK)

    def _decode(self, frame: bytes | str) -> dict[str, Any]:
        """A frame as a JSON object.

        Raises:
            Broken: it is not one.
        """
        try:
            text = frame.decode() if type(frame) is bytes else frame
            reply, end = _scan(text, 0)
            if type(reply) is dict and (end == len(text)
                                        or not text[end:].strip(_JSON_SPACE)):
                return reply
        except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
            pass
        raise Broken(f"{self.conn._where()} sent a malformed frame")

    def _print_ready(self) -> None:
        lines = []
        done = self.done
        while self.printed + 1 in done:
            self.printed += 1
            text = done.pop(self.printed)
            if text is not None:
                lines.append(text)
        if lines:
            self.out.write(json_printable("\n".join(lines)) + "\n")
            if self.progress is not None:
                self.progress.update(self.printed)
        if self.waiting or self.eof:
            self.out.flush()  # before we wait: what is done shows at once

    def _stopped(self, exc: Exception) -> int:
        """The connection failed: the calls in flight are answered with why, in order;
        the lines not read yet are not sent (stderr says from where)."""
        if isinstance(exc, Timeout):
            code, error = ec.TIMEOUT, {"code": "TIMEOUT", "message":
                                       f"no answer within {self.timeout_ms} ms"}
        elif isinstance(exc, Broken) and not self.heard:
            code, error = ec.UNREACHABLE, {"code": "daemon_unreachable", "message": str(exc)}
        else:
            code, error = ec.LOST, {"code": "connection_lost", "message":
                                    f"{exc}: the call may or may not have run"}
        for number, _ in sorted(self.waiting.values()):
            self.answer(number, "error", error, code)
        self.waiting.clear()
        self.codes.add(code)
        self._print_ready()
        if not self.eof:
            sys.stderr.write(json_printable(
                f"iii: {error['message']}; lines after {self.read} were not sent") + "\n")
        return worst(self.codes)


def count_lines(path: str) -> int | None:
    """The lines of a regular file (for the progress bar's total); None for a pipe."""
    import os
    import stat

    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None
