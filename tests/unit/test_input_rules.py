"""The rules that keep bad input out, without I/O: what the CLI reads as JSON, config
values, who a TCP listener lets in, what an id may be, the handler threads."""

from __future__ import annotations

import json
import sys
import threading
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iii_cli.json_input import MAX_NESTING, UsageError, loads, loads_line, loads_or_text
from iii_cli.output import table
from iii_cli.style import unambiguous
from iii_daemon.drivers.access import AccessPolicy
from iii_sdk import config
from iii_sdk.handler_pool import HandlerPool
from iii_sdk.names import FORMAT, MAX_ID_LENGTH, id_problem

# --- JSON the user typed -------------------------------------------------------------------


@pytest.mark.parametrize("text, says", [
    ('"\\ud800"', "lone surrogate"),
    ("NaN", "NaN is not a JSON number"),
    ("[1, -Infinity]", "-Infinity is not a JSON number"),
    ('{"a": 1e999}', "1e999 is too large"),
    ("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), f"more than {MAX_NESTING} levels"),
    ("[" * 5000 + "]" * 5000, f"more than {MAX_NESTING} levels"),  # RecursionError
    ("{", "is not valid JSON"),
])
def test_json_the_wire_cannot_carry_is_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        loads(text, "--json")


def test_json_the_wire_carries_is_taken() -> None:
    deepest = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert loads(deepest, "--json") is not None
    assert loads("null", "--json") is None
    assert loads('{"a": 1.5e300, "b": "caf\\u00e9"}', "--json") == {"a": 1.5e300, "b": "café"}


def test_large_payloads_are_checked_in_the_text_and_walked_only_when_needed() -> None:
    deep = "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)
    wide_deep = "[" + ",".join(["[1]"] * 2000) + "," + deep + "]"  # many brackets, deep
    with pytest.raises(UsageError, match="nested more than"):
        loads(wide_deep, "--json")
    with pytest.raises(UsageError, match="nested more than"):
        loads(wide_deep.encode(), "@file")  # bytes, as read from a file
    # Brackets and escaped quotes inside strings do not count as nesting.
    text = json.dumps({"s": "[" * 2000 + '\\"{' * 500, "n": [[1]] * 1000})
    assert loads(text, "--json")["n"][0] == [1]
    with pytest.raises(UsageError, match="lone surrogate"):
        loads(json.dumps({"n": [[1]] * 1000, "s": "a"}).replace('"a"', '"\\udc80"'), "x")
    assert loads('"\\ud83d\\ude00"', "--json") == "\U0001f600"  # a pair is fine


def _verdict(read: Any) -> tuple[str, Any]:
    try:
        return "value", read()
    except UsageError as exc:
        return "refused", str(exc)


# Lines made of JSON's own pieces, so that most are near-JSON rather than noise.
_PIECES = st.sampled_from(['{', '}', '[', ']', '"a"', '"\\ud800"', '"\\u00e9"', ':', ',',
                           '1', '-0.5', '1e999', 'NaN', 'null', ' ', '\t', '\xa0', 'é'])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(_PIECES, max_size=12).map("".join).map(str.encode),
                 st.binary(max_size=16)))
def test_a_batch_line_is_read_by_the_same_rules_as_any_json_typed(line: bytes) -> None:
    fast = _verdict(lambda: loads_line(line + b"\n", 7))
    assert fast[0] == _verdict(lambda: loads(line + b"\n", "line 7"))[0]
    if fast[0] == "value":
        value, text = fast[1]
        assert json.loads(text) == value == loads(line, "x")
    else:
        assert fast[1] == _verdict(lambda: loads(line + b"\n", "line 7"))[1]


@pytest.mark.parametrize("line", [
    "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), '"\\udc80"', "1 2", "NaN", "\xa01",
])
def test_a_batch_line_the_wire_cannot_carry_is_refused(line: str) -> None:
    with pytest.raises(UsageError, match=r"^line 3\b"):
        loads_line(line.encode(), 3)


def test_a_batch_line_is_sent_as_it_was_written_when_it_may_be() -> None:
    assert loads_line(b' {"a": [1, 2]}\r\n', 1) == ({"a": [1, 2]}, '{"a": [1, 2]}')
    # What only the full rules take is sent as they read it.
    assert loads_line(b"\xef\xbb\xbf[1]\n", 1) == ([1], "[1]")  # a UTF-8 BOM


def test_pair_values_are_json_else_text_but_never_a_number_json_lacks() -> None:
    assert loads_or_text("3", "n") == 3 and loads_or_text("bob", "name") == "bob"
    assert loads_or_text("NaNa", "x") == "NaNa"
    with pytest.raises(UsageError, match=r"quote it for the string \(n='\"NaN\"'\)"):
        loads_or_text("NaN", "n")
    with pytest.raises(UsageError, match=r"the value of k is not valid UTF-8 \(byte 0xff\)"):
        loads_or_text("\udcff", "k")  # how Python hands over a non-UTF-8 argument


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, says", [
    ("websocket.port", 99999, "must be from 0 to 65535, got 99999"),
    ("http.port", -1, "must be from 0 to 65535"),
    ("max_frame_bytes", 10, "must be from 1024"),
    ("call_timeout_ms", 0, "must be from 1"),
    ("history.events", True, "must be int"),
    ("websocket.host", " ", "must not be empty"),
    ("queues.mail.concurrency", 0, "must be from 1 to 100000"),
    ("queues.mail.backoff", "linear", "must be exponential or fixed"),
    ("queues.mail.type", "lifo", "must be standard or fifo"),
    ("websocket.allowed_origins", ["a", 1], "list of strings"),
    ("nonsense", 1, "unknown config key"),
])
def test_config_values_outside_their_rule_are_refused(key: str, value: Any, says: str) -> None:
    problem = config.value_problem(key, value)
    assert problem is not None and says in problem


def test_config_values_inside_their_rule_pass() -> None:
    for key, value in (("websocket.port", 0), ("http.port", 65535), ("autostart", True),
                       ("queues.mail.max_retries", 0), ("socket", "/tmp/x.sock")):
        assert config.value_problem(key, value) is None, key


def test_environment_overrides_follow_the_same_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_WS_PORT", "70000")
    with pytest.raises(config.ConfigError, match=r"\$III_WS_PORT: .* got 70000"):
        config.env_value("websocket.port")
    monkeypatch.setenv("III_WS_PORT", "x")
    with pytest.raises(config.ConfigError, match="takes a whole number"):
        config.env_value("websocket.port")
    monkeypatch.setenv("III_WS_PORT", "0")
    assert config.env_value("websocket.port") == 0
    monkeypatch.delenv("III_HTTP_PORT")
    assert config.env_value("http.port") is None


# --- who a TCP listener lets in ------------------------------------------------------------


def check(headers: dict[str, list[str]], origins: frozenset[str] = frozenset()) -> Any:
    policy = AccessPolicy("http", "127.0.0.1", allowed_origins=origins,
                          peer_uid=lambda peer, local: __import__("os").getuid())
    got = {name.lower(): values for name, values in headers.items()}
    return policy.check(lambda name: got.get(name.lower(), []), ("127.0.0.1", 5000),
                        ("127.0.0.1", 3111))


def test_a_deciding_header_given_twice_is_a_400() -> None:
    for name in ("Host", "Origin", "Referer", "Sec-Fetch-Site", "Authorization"):
        refusal = check({"Host": ["127.0.0.1"], name: ["a", "b"]} if name != "Host"
                        else {"Host": ["127.0.0.1", "evil.example"]})
        assert refusal is not None and refusal.status == 400, name
        assert f"the {name} header is given 2 times" in refusal.reason


@pytest.mark.parametrize("headers, allowed", [
    ({}, True),  # no browser: curl, the SDKs
    ({"Sec-Fetch-Site": ["none"]}, True),  # typed into the address bar
    ({"Sec-Fetch-Site": ["same-origin"], "Referer": ["http://127.0.0.1:3111/"]}, True),
    ({"Referer": ["http://127.0.0.1:3111/x"]}, True),  # this listener's own page
    ({"Sec-Fetch-Site": ["cross-site"], "Referer": ["http://evil.example/"]}, False),
    ({"Sec-Fetch-Site": ["cross-site"]}, False),
    ({"Sec-Fetch-Site": ["same-site"], "Referer": ["http://127.0.0.1:8000/"]}, False),
    ({"Referer": ["http://evil.example/"]}, False),
    ({"Sec-Fetch-Site": ["cross-site"], "Referer": ["http://app.example/p"]}, True),
])
def test_a_cross_site_browser_request_needs_an_allowed_origin(
        headers: dict[str, list[str]], allowed: bool) -> None:
    refusal = check({"Host": ["127.0.0.1:3111"], **headers}, frozenset({"http://app.example"}))
    assert (refusal is None) == allowed, refusal


# --- ids ---------------------------------------------------------------------------------


def test_the_format_pattern_is_unicodes_category_cf() -> None:
    cf = {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"}
    assert {c for c in cf if not FORMAT.fullmatch(c)} == set()
    # And nothing else, as far as this interpreter's tables know the code points.
    extra = {c for c in map(chr, range(sys.maxunicode + 1)) if FORMAT.fullmatch(c)} - cf
    assert all(unicodedata.category(c) == "Cn" for c in extra)


@pytest.mark.parametrize("value, says", [
    (" f", "starts or ends with whitespace"),
    ("f\u3000", "starts or ends with whitespace"),
    ("f\u200d", "invisible format character U+200D"),
    ("\ufefff", "invisible format character U+FEFF"),
    ("f" * (MAX_ID_LENGTH + 1), f"ids are at most {MAX_ID_LENGTH}"),
    ("f\x1b", "control character U+001B"),
])
def test_ids_that_could_pass_for_others_are_refused(value: str, says: str) -> None:
    problem = id_problem("function id", value)
    assert problem is not None and says in problem
    assert all(c.isascii() for c in problem)  # the id is quoted with escapes


def test_ids_in_other_scripts_and_inner_spaces_are_fine() -> None:
    for value in ("café", "関数::追加", "a b", "f" * MAX_ID_LENGTH):
        assert id_problem("function id", value) is None


def test_tables_never_show_two_ids_alike() -> None:
    ids = ["pay", "p\u0430y", "p\\u0430y", "a\u00a0b", "a b", "x" * 90 + "1", "x" * 90 + "2"]
    assert len({unambiguous(i) for i in ids}) == len(ids)
    shown = table([{"function_id": i, "description": "d" * 50} for i in ids],
                  [("function_id", "FUNCTION"), ("description", "DESCRIPTION")], width=60)
    cells = [line.split("  ")[0] for line in shown.splitlines()[1:]]
    assert len(set(cells)) == len(ids) and not any("…" in c for c in cells)


# --- handler threads ---------------------------------------------------------------------


def test_the_pool_starts_a_thread_while_others_are_stuck_and_keeps_its_cap() -> None:
    pool = HandlerPool(4, name="pool-under-test")  # other tests' workers have threads too
    release = threading.Event()
    done: list[Any] = []
    finished = threading.Semaphore(0)

    def record(result: Any, exc: BaseException | None) -> None:
        done.append(result if exc is None else type(exc).__name__)
        finished.release()

    for _ in range(3):
        pool.submit(release.wait, (), record)
    pool.submit(lambda: "free", (), record)  # the 4th thread, though 3 are stuck
    assert finished.acquire(timeout=10) and done == ["free"]
    pool.submit(lambda: 1 / 0, (), record)  # the idle 4th takes it: errors reach done()
    assert finished.acquire(timeout=10) and done[-1] == "ZeroDivisionError"
    ours = [t for t in threading.enumerate() if t.name.startswith("pool-under-test")]
    assert len(ours) == 4 and all(t.daemon for t in ours)
    release.set()
    for _ in range(3):
        assert finished.acquire(timeout=10)
    pool.close()
