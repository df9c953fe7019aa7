"""The import rules of architecture.md: which package may import what.

Checked two ways: statically over every module (lazy imports inside functions count),
and by importing each package in a fresh interpreter and looking at ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "iii_sdk": {"iii_daemon", "iii_cli", "typer", "textual"},
    "iii_daemon": {"iii_cli", "typer", "textual"},
}
#: The one deliberate exception: the SDK's test helper runs a real daemon in-process.
ALLOWED = {("iii_sdk/testing.py", "iii_daemon")}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_forbidden_package(package: str) -> None:
    offences = []
    for path in sorted((REPO / package).rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        for root in imported_roots(path) & FORBIDDEN[package]:
            if (relative, root) not in ALLOWED:
                offences.append(f"{relative} imports {root}")
    assert offences == []


@pytest.mark.parametrize("package", ["iii_sdk", "iii_daemon", "iii_daemon.__main__"])
def test_importing_a_package_loads_nothing_forbidden(package: str) -> None:
    code = f"import sys, json, {package}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert loaded & FORBIDDEN[package.split(".")[0]] == set()


def test_the_protocol_module_alone_does_not_load_asyncio() -> None:
    """The CLI's fast path imports the protocol; asyncio costs ~30 ms it must not pay."""
    code = "import sys, json, iii_sdk.protocol; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert "asyncio" not in json.loads(out)


def module_graph() -> dict[str, set[str]]:
    """Every module of our packages and the modules of ours it imports, TYPE_CHECKING
    imports included. ``from pkg import sub`` counts as importing ``pkg.sub`` only (our
    package __init__ files load their names lazily)."""
    modules = {}
    for package in ("iii_sdk", "iii_daemon", "iii_cli"):
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{alias.name}" for alias in node.names}
                deps.update(subs & modules.keys() or {node.module})
        graph[name] = {dep for dep in deps if dep in modules and dep != name}
    return graph


def test_no_import_circles() -> None:
    graph = module_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(
                [*path[path.index(module):], module]))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_every_public_name_resolves() -> None:
    import iii_sdk

    for name in iii_sdk.__all__:
        assert getattr(iii_sdk, name) is not None
    assert sorted(iii_sdk.__all__) == sorted(iii_sdk._WHERE)


#: The daemon's drivers: everything else under iii_daemon is the pure core.
DRIVERS = {"iii_daemon.__main__", "iii_daemon.daemon", "iii_daemon.hub",
           "iii_daemon.unix_listener", "iii_daemon.ws_listener", "iii_daemon.access",
           "iii_daemon.store", "iii_daemon.store_writer", "iii_daemon.http_listener",
           "iii_daemon.channels", "iii_daemon.http_caller", "iii_daemon.data_lock"}
#: What the core never touches: I/O, threads and event loops belong to the drivers.
IMPURE = {"sqlite3", "asyncio", "socket", "selectors", "ssl", "websockets", "uvloop",
          "threading", "queue", "subprocess", "os", "aiohttp"}


def test_the_core_is_pure() -> None:
    """architecture.md: the core imports no sockets, asyncio or sqlite3 (nor any driver
    module), so its unit tests run with no database file and no socket."""
    graph = module_graph()
    core = {name for name in graph if name.startswith("iii_daemon") and name not in DRIVERS}
    assert "iii_daemon.router" in core and "iii_daemon.triggers.cron" in core
    offences = []
    for name in sorted(core):
        path = REPO / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = REPO / name.replace(".", "/") / "__init__.py"
        for root in imported_roots(path) & IMPURE:
            offences.append(f"{name} imports {root}")
        for dep in graph[name] & DRIVERS:
            offences.append(f"{name} imports the driver {dep}")
    assert offences == []
    code = "import sys, json, iii_daemon.router; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert {"sqlite3", "asyncio", "socket"} & set(json.loads(out)) == set()


def test_only_the_tui_imports_textual() -> None:
    """architecture.md: nothing but iii_cli/tui imports Textual, and the CLI loads it
    only when `iii tui` runs."""
    offences = [str(path.relative_to(REPO)) for path in sorted((REPO / "iii_cli").rglob("*.py"))
                if "tui" not in path.relative_to(REPO / "iii_cli").parts
                and "textual" in imported_roots(path)]
    assert offences == []
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, iii_cli.app; "
                               "print(any(m.startswith('textual') for m in sys.modules))"],
        capture_output=True, text=True, cwd=REPO, check=True)
    assert loaded.stdout.strip() == "False"
