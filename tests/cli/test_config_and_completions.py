from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import IIIBIN, REPO, DaemonProcess, ThreadDaemon, child_env, run_iii


def test_config_path_set_show(short_tmp: Path) -> None:
    path = Path(run_iii(short_tmp, "config", "path").stdout.strip())
    assert path == short_tmp / "config.toml"
    assert run_iii(short_tmp, "config", "set", "websocket.port", "5000").returncode == 0
    assert run_iii(short_tmp, "config", "set", "autostart", "true").returncode == 0
    assert run_iii(short_tmp, "config", "set", "queues.mail.max_retries", "5").returncode == 0
    assert tomllib.loads(path.read_text()) == {
        "websocket": {"port": 5000}, "autostart": True, "queues": {"mail": {"max_retries": 5}}}
    env = child_env(short_tmp)
    del env["III_WS_PORT"], env["III_HTTP_PORT"]
    shown = tomllib.loads(run_iii(short_tmp, "config", "show", env=env).stdout)
    assert shown["websocket"] == {"enabled": True, "host": "127.0.0.1", "port": 5000,
                                  "allowed_origins": [], "allowed_hosts": [],
                                  "listeners": []}
    assert shown["http"]["port"] == 3111


@pytest.mark.parametrize("args, fragment", [
    (["nonsense", "1"], "unknown config key 'nonsense'"),
    (["websocket.port", "many"], "whole number"),
    (["autostart", "maybe"], "true or false"),
])
def test_config_set_refuses_bad_input(short_tmp: Path, args: list[str], fragment: str) -> None:
    proc = run_iii(short_tmp, "config", "set", *args)
    assert proc.returncode == 2 and fragment in proc.stderr
    assert not (short_tmp / "config.toml").exists()


def test_a_broken_config_file_names_the_file_and_line(short_tmp: Path) -> None:
    (short_tmp / "config.toml").write_text('socket = "/tmp/x"\n[websocket\nport = 1\n')
    proc = run_iii(short_tmp, "config", "show")
    assert proc.returncode == 2
    assert str(short_tmp / "config.toml") in proc.stderr and "line 2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_keys_are_warned_about_not_fatal(short_tmp: Path) -> None:
    (short_tmp / "config.toml").write_text('colour = "blue"\n[http]\nprot = 1\n')
    proc = run_iii(short_tmp, "config", "show")
    assert proc.returncode == 0
    assert "unknown config key 'colour'" in proc.stderr
    assert "unknown config key 'http.prot'" in proc.stderr


def test_socket_precedence_flag_env_file_default(daemon: DaemonProcess, math_worker: Any,
                                                  short_tmp: Path) -> None:
    env = child_env(daemon.tmp)
    del env["III_SOCKET"]
    config = daemon.tmp / "config.toml"
    config.write_text(f'socket = "{daemon.socket_path}"\n')

    def trigger(*extra: str, environ: dict[str, str]) -> int:
        return subprocess.run([IIIBIN, "trigger", "math::add", "a=1", "b=1", *extra],
                              capture_output=True, env=environ).returncode

    assert trigger(environ=env) == 0                          # file
    env_bad = dict(env, III_SOCKET="/nonexistent/a.sock")
    assert trigger(environ=env_bad) == 3                      # env beats file
    assert trigger("--socket", str(daemon.socket_path), environ=env_bad) == 0  # flag wins
    config.unlink()
    env_default = dict(env, XDG_RUNTIME_DIR=str(short_tmp))
    assert trigger(environ=env_default) == 3                  # default: nothing there


def test_the_daemon_reads_the_config_file(short_tmp: Path) -> None:
    (short_tmp / "config.toml").write_text(f'socket = "{short_tmp / "from-config.sock"}"\n')
    env = child_env(short_tmp)
    del env["III_SOCKET"]
    proc = subprocess.run([IIIBIN, "daemon", "start"], capture_output=True, text=True, env=env)
    try:
        assert proc.returncode == 0, proc.stderr
        assert (short_tmp / "from-config.sock").exists()
    finally:
        subprocess.run([IIIBIN, "daemon", "stop"], env=env, capture_output=True)


@pytest.mark.parametrize("shell, filename", [("bash", "iii.bash"), ("zsh", "_iii"),
                                             ("fish", "iii.fish")])
def test_checked_in_completions_match_the_cli(short_tmp: Path, shell: str,
                                              filename: str) -> None:
    generated = run_iii(short_tmp, "completions", shell).stdout
    assert generated == (REPO / "completions" / filename).read_text(), (
        f"completions/{filename} drifted: regenerate with `iii completions {shell} > "
        f"completions/{filename}`")


def complete(tmp: Path, words: str, **env_vars: str) -> list[str]:
    env = dict(child_env(tmp), _III_COMPLETE="complete_bash", COMP_WORDS=words,
               COMP_CWORD=str(len(words.split()) - 1), **env_vars)
    proc = subprocess.run([IIIBIN], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0 and proc.stderr == ""
    return proc.stdout.split()


def test_function_ids_complete_from_the_running_daemon(daemon: DaemonProcess,
                                                       math_worker: Any) -> None:
    assert complete(daemon.tmp, "iii trigger math::d") == ["math::divide"]
    assert set(complete(daemon.tmp, "iii trigger math::")) == {
        "math::add", "math::divide", "math::sleep", "math::echo", "math::is_positive",
        "math::http_add", "math::count_bytes"}
    assert "list" in complete(daemon.tmp, "iii li")
    # III_URL wins over the socket, as for every command that talks to the daemon.
    elsewhere = {"III_SOCKET": "/nonexistent/elsewhere.sock"}
    assert complete(daemon.tmp, "iii trigger math::d", **elsewhere) == []
    assert complete(daemon.tmp, "iii trigger math::d", **elsewhere,
                    III_URL=f"unix://{daemon.socket_path}") == ["math::divide"]


def test_no_daemon_no_suggestions_no_error(short_tmp: Path) -> None:
    assert complete(short_tmp, "iii trigger ma") == []
    assert not (short_tmp / "iii.sock").exists()  # completion never starts a daemon


def bash_complete(tmp: Path, line: str) -> list[str]:
    """Run the shipped bash function with the variables bash sets for ``line`` (cursor at
    its end): COMP_WORDS split at COMP_WORDBREAKS, so ``math::d`` is ``math : : d``."""
    import shlex

    script = (
        f"source {REPO / 'completions' / 'iii.bash'}\n"
        f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
        # bash's own word splitting, COMP_WORDBREAKS included
        "COMP_WORDS=(); w=''\n"
        "for ((i = 0; i < ${#COMP_LINE}; i++)); do c=${COMP_LINE:i:1}\n"
        "  if [[ $c == ' ' ]]; then [[ -n $w ]] && COMP_WORDS+=(\"$w\"); w=''\n"
        "  elif [[ $COMP_WORDBREAKS == *$c* ]]; then [[ -n $w ]] && COMP_WORDS+=(\"$w\")\n"
        "    COMP_WORDS+=(\"$c\"); w=''\n"
        "  else w+=$c; fi; done\n"
        "COMP_WORDS+=(\"$w\"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        "_iii_completion iii\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = child_env(tmp)
    env["PATH"] = f"{Path(IIIBIN).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completes_function_ids_past_their_colons(daemon: DaemonProcess,
                                                       math_worker: Any) -> None:
    """``iii trigger math::d<TAB>``: bash replaces only ``d`` (after the last ':'), so the
    answer is ``ivide``'s word, ``divide``; the line becomes ``math::divide``."""
    assert bash_complete(daemon.tmp, "iii trigger math::d") == ["divide"]
    assert set(bash_complete(daemon.tmp, "iii trigger math::")) >= {"add", "divide", "echo"}
    assert bash_complete(daemon.tmp, "iii trigger math::a") == ["add"]
    assert "trigger" in bash_complete(daemon.tmp, "iii tri")
    assert bash_complete(daemon.tmp, "iii trigger ") != []  # every id, no file names


def shell(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is needed for its completion test (.ci/run installs it)"
    return found


ZSH_TAB = r"""
zmodload zsh/zpty
zpty -b z 'zsh -f -i'
zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -D; source COMPLETIONS/_iii'
zpty -n -w z $'iii trigger math::d\t'
out=""
for i in {1..200}; do  # poll for up to 10 s: the line as completed, or what was drawn
  while zpty -r -t z chunk; do out+=$chunk; done
  [[ $out == *"math::divide"* ]] && break
  sleep 0.05
done
print -r -- $out
zpty -d z
"""


def test_zsh_and_fish_complete_function_ids_for_real(daemon: DaemonProcess,
                                                     math_worker: Any) -> None:
    """The shipped scripts in the real shells: TAB in an interactive zsh (on a zpty, with
    compinit), and fish's own `complete -C`."""
    env = child_env(daemon.tmp)
    env["PATH"] = f"{Path(IIIBIN).parent}{os.pathsep}{env['PATH']}"
    script = ZSH_TAB.replace("COMPLETIONS", str(REPO / "completions"))
    zsh = subprocess.run([shell("zsh"), "-f", "-c", script], capture_output=True, text=True,
                         env=env, timeout=30)
    assert "iii trigger math::divide" in zsh.stdout.replace("\r", ""), zsh.stdout[-500:]
    fish = subprocess.run([shell("fish"), "-c", f"source {REPO / 'completions' / 'iii.fish'}; "
                           "complete -C 'iii trigger math::d'"], capture_output=True,
                          text=True, env=env, timeout=30)
    assert fish.stdout.split() == ["math::divide"], fish.stdout + fish.stderr


def test_zsh_and_fish_get_whole_ids(daemon: DaemonProcess, math_worker: Any) -> None:
    env = dict(child_env(daemon.tmp), _III_COMPLETE="complete_zsh",
               _TYPER_COMPLETE_ARGS="iii trigger math::d")
    zsh = subprocess.run([IIIBIN], capture_output=True, text=True, env=env).stdout
    # One value, its colons escaped from _arguments' value:description split.
    assert '(("math\\\\:\\\\:divide"))' in zsh, zsh
    env.update(_III_COMPLETE="complete_fish", _TYPER_COMPLETE_FISH_ACTION="get-args")
    fish = subprocess.run([IIIBIN], capture_output=True, text=True, env=env).stdout
    assert fish.split()[0] == "math::divide", fish


def test_the_daemon_keeps_as_many_events_as_configured(short_tmp: Path) -> None:
    from tests.helpers import RawClient

    (short_tmp / "config.toml").write_text("[history]\nevents = 3\n")
    daemon = ThreadDaemon(short_tmp).start()
    try:
        client = RawClient(daemon.socket_path)
        client.call("engine::register_trigger", {"id": "t", "type": "subscribe",
                                                 "function_id": "nobody",
                                                 "config": {"topic": "x"}})
        for _ in range(5):
            client.call("publish", {"topic": "x"})
        events = client.call("engine::events::list", {"limit": 100})["result"]["events"]
        assert len(events) == 3
    finally:
        daemon.stop()


def test_dash_h_works_wherever_dash_dash_help_does(short_tmp: Path) -> None:
    for argv in (["-h"], ["list", "-h"], ["daemon", "-h"], ["daemon", "status", "-h"],
                 ["queue", "list", "-h"], ["state", "get", "-h"], ["trigger", "-h"],
                 ["watch", "-h"], ["config", "set", "-h"]):
        short = run_iii(short_tmp, *argv)
        long = run_iii(short_tmp, *argv[:-1], "--help")
        assert (short.returncode, short.stdout) == (0, long.stdout), argv
        assert "Usage" in short.stdout or "usage" in short.stdout, argv
