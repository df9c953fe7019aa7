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


#: The pure side of the daemon: the core and the daemon's own functions.
PURE = ("iii_daemon.core", "iii_daemon.functions")
#: What the core never touches: I/O, threads and event loops belong to the drivers.
IMPURE = {"sqlite3", "asyncio", "socket", "selectors", "ssl", "websockets", "uvloop",
          "threading", "queue", "subprocess", "os", "aiohttp"}


def test_the_layout_shows_the_layers() -> None:
    """Every daemon module lives in one of the layers (or is the package's entry)."""
    layers = (*PURE, "iii_daemon.drivers", "iii_daemon.lifecycle")
    loose = [name for name in module_graph() if name.startswith("iii_daemon.")
             and not name.startswith(layers) and name != "iii_daemon.__main__"]
    assert loose == []


def test_the_core_is_pure() -> None:
    """architecture.md: core/ and functions/ import no sockets, asyncio or sqlite3, and
    nothing from drivers/ or lifecycle/, so their unit tests run with no database file
    and no socket."""
    graph = module_graph()
    pure = {name for name in graph if name.startswith(PURE)}
    assert "iii_daemon.core.router" in pure and "iii_daemon.core.triggers.cron" in pure
    assert "iii_daemon.functions.state" in pure
    offences = []
    for name in sorted(pure):
        path = REPO / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = REPO / name.replace(".", "/") / "__init__.py"
        for root in imported_roots(path) & IMPURE:
            offences.append(f"{name} imports {root}")
        for dep in sorted(graph[name]):
            if dep.startswith("iii_daemon.") and not dep.startswith(PURE):
                offences.append(f"{name} imports {dep}, outside the pure layers")
    assert offences == []
    code = ("import sys, json, iii_daemon.core.router; "
            "print(json.dumps(sorted(sys.modules)))")
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


def _code_lines(source: list[str], node: ast.ClassDef) -> int:
    """Lines of code in a class: not blank, not comments, not docstrings."""
    docstrings: set[int] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
                and inner.body and isinstance(inner.body[0], ast.Expr) \
                and isinstance(inner.body[0].value, ast.Constant) \
                and isinstance(inner.body[0].value.value, str):
            first = inner.body[0]
            docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return sum(1 for number in range(node.lineno, (node.end_lineno or node.lineno) + 1)
               if number not in docstrings and source[number - 1].strip()
               and not source[number - 1].strip().startswith("#"))


def test_no_class_has_over_300_lines_of_code() -> None:
    """Small classes with one job (issue 25): none over 300 lines of code in the three
    packages (docstrings, comments and blank lines do not count)."""
    too_big = []
    for package in ("iii_daemon", "iii_sdk", "iii_cli"):
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text()
            lines = text.splitlines()
            for node in ast.walk(ast.parse(text, str(path))):
                if isinstance(node, ast.ClassDef) and _code_lines(lines, node) > 300:
                    too_big.append(f"{path.relative_to(REPO)}:{node.name} "
                                   f"({_code_lines(lines, node)})")
    assert not too_big, too_big
