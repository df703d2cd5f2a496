"""The shape of ``idwall/``: no import cycle, and dependencies that point one way (DESIGN.md "Suggested layout");
and the shape of ``tests/``: one test file per module, named after it, and no test file importing another.

Imports are read from the source with ``ast``, including imports inside functions and under
``TYPE_CHECKING``: a cycle hidden in a function body is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "idwall"

#: the top layer: the command line, the web layer, and what composes them into running processes
TOP = ("idwall.cli", "idwall.web", "idwall.supervisor", "idwall.demo", "idwall.__main__")
#: what may import aiohttp: the web layer, the HTTP clients of the command line and of backend services
AIOHTTP_ALLOWED = ("idwall.web", "idwall.cli", "idwall.upstream", "idwall.demo", "idwall.testing",
                   "idwall.incident.delivery")
#: pure trust logic: no I/O module of ours, no network library
PURE = ("idwall.access", "idwall.policy", "idwall.sessions", "idwall.challenges", "idwall.encoding",
        "idwall.errors", "idwall.httpnorm", "idwall.engine.h1", "idwall.engine.headers",
        "idwall.engine.websocket", "idwall.engine.answers", "idwall.engine.h1_upstream", "idwall.actions",
        "idwall.enrollment", "idwall.self_recovery", "idwall.tokens", "idwall.passkeys", "idwall.jsonbody", "idwall.units", "idwall.pki",
        "idwall.audit", "idwall.audit.sealing", "idwall.audit.jsonl", "idwall.audit.schemas", "idwall.audit.records",
        "idwall.audit.replay", "idwall.audit.replay_devices", "idwall.audit.replay_incidents", "idwall.audit.verify", "idwall.incident.plan",
        "idwall.incident.webhooks", "idwall.incident.inventory", "idwall.incident.readiness", "idwall.incident.report",
        "idwall.incident.recovery",
        "idwall.proxy_protocol", "idwall.action_words", "idwall.sign_requests", "idwall.renewal", "idwall.model")
IO_MODULES = ("idwall.node", "idwall.connections", "idwall.killswitch", "idwall.cluster", "idwall.store.sqlite",
              "idwall.store.postgres",
              "idwall.engine.io", "idwall.engine.edges", "idwall.engine.upstream", "idwall.engine.server",
              "idwall.engine.tunnel", "idwall.engine.proxied", "idwall.relay", "idwall.web",
              "idwall.supervisor", "idwall.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The idwall modules ``name`` imports (the most specific module each import statement names)."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            # "from . import policy" names a module; "from .node import Node" names a module's attribute
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    graph = _graph()
    # a package's __init__ re-exporting its own modules is not a cycle a reader has to untangle
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and t in graph)}
    assert _cycles(graph) == []


def test_nothing_below_the_top_layer_imports_it() -> None:
    offenders = {name: sorted(t for t in targets if _under(t, TOP))
                 for name, targets in _graph().items() if not _under(name, TOP)}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_do_no_io(name: str) -> None:
    modules = _modules()
    assert name in modules, f"{name} is listed as pure but does not exist"
    imported = _imports(name, modules[name], set(modules))
    assert sorted(t for t in imported if _under(t, IO_MODULES)) == []
    source = modules[name].read_text()
    for library in ("aiohttp", "asyncio", "socket", "sqlite3", "uvloop"):
        assert f"import {library}" not in source, f"{name} imports {library}"


def test_only_the_http_layers_import_aiohttp() -> None:
    users = sorted(name for name, path in _modules().items()
                   if ("import aiohttp" in path.read_text() or "from aiohttp" in path.read_text())
                   and not _under(name, AIOHTTP_ALLOWED))
    assert users == []


# -- one request through the code ---------------------------------------------------------------------


def _modules_on_the_path(entry_class: str) -> tuple[set[str], Any]:
    """A profiler that records the idwall modules whose code runs under ``entry_class.data_received``."""
    seen: set[str] = set()
    root = str(PACKAGE) + "/"

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event != "call" or not frame.f_code.co_filename.startswith(root):
            return
        caller = frame
        while caller is not None:
            if caller.f_code.co_name == "data_received" and type(caller.f_locals.get("self")).__name__ == entry_class:
                seen.add(_module_name(Path(frame.f_code.co_filename)))
                return
            caller = caller.f_back

    return seen, profile


async def _steady_requests(port: int, context: Any) -> list[tuple[set[str], set[str]]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    request = b"GET /some/page?q=1 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"

    async def exchange() -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)

    await exchange()  # the first request resolves the connection and prepares its claims: not the steady path
    sides: list[tuple[set[str], set[str]]] = []
    # On a loaded machine a request can leave the steady path (its work resumed from another callback,
    # which the profile does not attribute); a few requests give the steady one a chance to show.
    for _ in range(3):
        request_side, request_profile = _modules_on_the_path("ClientProtocol")
        response_side, response_profile = _modules_on_the_path("UpstreamProtocol")
        sys.setprofile(lambda *args: (request_profile(*args), response_profile(*args)))
        try:
            await exchange()
        finally:
            sys.setprofile(None)
        sides.append((request_side, response_side))
        if "idwall.engine.io" in request_side and "idwall.assertion" in request_side:
            break
    writer.close()
    return sides


async def test_a_proxied_request_crosses_at_most_five_modules(gateway: Any) -> None:
    """Socket to upstream on a resolved connection, as the issue asked: at most five modules of ``idwall/``."""
    device = await gateway.device("alice")
    sides = await _steady_requests(gateway.port, gateway.ssl(device))
    request_side, response_side = sides[-1]
    print(f"\nrequest path: {sorted(request_side)}\nresponse path: {sorted(response_side)}")
    assert "idwall.engine.io" in request_side and "idwall.assertion" in request_side, "the profile saw the request"
    for request_side, response_side in sides:
        assert len(request_side) <= 5, sorted(request_side)
        assert len(response_side) <= 5, sorted(response_side)


def test_no_module_over_600_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 600}
    assert long == {}


# -- one test file per module (issue 13) --------------------------------------------------------------

TESTS = PACKAGE.parent / "tests"
#: package ``__init__`` files with nothing of their own to test, and why; each is checked below to hold no more
#: than a docstring, imports, ``__all__`` and ``__version__``
NO_TEST_FILE = {
    "idwall/__init__.py": "the package docstring and __version__",
    "idwall/__main__.py": "python -m idwall: one call of idwall.cli.main (tests/test_cli.py runs it)",
    "idwall/audit/__init__.py": "re-exports the API of the audit modules (each has its test file)",
    "idwall/config/__init__.py": "re-exports the API of the config modules (each has its test file)",
    "idwall/engine/__init__.py": "the package docstring: a map of the engine's modules",
    "idwall/incident/__init__.py": "the package docstring: a map of the incident modules",
    "idwall/testing/__init__.py": "re-exports idwall.testing.authenticator (tests/test_testing_authenticator.py)",
    "idwall/web/__init__.py": "the package docstring",
}
#: top-level test files named after no single module, and why
NOT_A_MODULE = {
    "test_architecture.py": "the layout of idwall/ as a whole",
}


def _test_file(path: Path) -> str:
    """``idwall/<pkg>/<mod>.py`` -> ``test_<pkg>_<mod>.py``; a package's ``__init__.py`` -> ``test_<pkg>.py``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "test_" + "_".join(parts) + ".py"


def _only_reexports(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id in ("__all__", "__version__")
                                                for t in node.targets):
            continue
        return False
    return True


def test_every_module_has_its_test_file() -> None:
    missing = sorted(f"{path.relative_to(PACKAGE.parent)} -> tests/{_test_file(path)}"
                     for path in PACKAGE.rglob("*.py")
                     if str(path.relative_to(PACKAGE.parent)) not in NO_TEST_FILE
                     and not (TESTS / _test_file(path)).exists())
    assert missing == []


@pytest.mark.parametrize("name", sorted(NO_TEST_FILE))
def test_a_module_without_a_test_file_has_nothing_of_its_own(name: str) -> None:
    path = PACKAGE.parent / name
    assert path.exists(), f"{name} is exempt from having a test file but does not exist"
    if path.name == "__main__.py":
        assert [line for line in path.read_text().splitlines() if line and not line.startswith(("#", '"""', "from"))] \
            == ["raise SystemExit(main())"], f"{name} does more than call idwall.cli.main"
        return
    assert _only_reexports(path), f"{name} defines something of its own: it needs tests/{_test_file(path)}"


def test_every_top_level_test_file_is_named_after_a_module() -> None:
    modules = {_test_file(path) for path in PACKAGE.rglob("*.py")}
    strays = sorted(path.name for path in TESTS.glob("test_*.py")
                    if path.name not in modules and path.name not in NOT_A_MODULE)
    assert strays == [], "name it after the module it tests, or move an end-to-end suite to tests/e2e/"


def test_no_test_module_imports_another_test_module() -> None:
    """Shared code lives in tests/helpers/ (and its fixtures in tests/conftest.py), never in a test file."""
    test_modules = {path.stem for path in TESTS.rglob("test_*.py")}
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." * node.level + (node.module or "")]
            else:
                continue
            offenders += [f"{path.relative_to(TESTS.parent)}: {name}" for name in names
                          if name.startswith(".") or name.split(".")[0] in test_modules
                          or (name.split(".")[0] == "tests" and not name.startswith("tests.helpers"))]
    assert offenders == []


def test_the_architecture_map_names_every_module() -> None:
    """docs/architecture.md must match the tree: each module is named by its path, or by its file name in the row
    of its package (``idwall/web/`` ... ``api_admin.py``)."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = doc.splitlines()
    unnamed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        package = path.parent.relative_to(PACKAGE.parent).as_posix() + "/"
        if rel in doc or (path.name == "__init__.py" and f"`{package}`" in doc):
            continue
        if not any(f"`{package}`" in row and path.name in row for row in rows):
            unnamed.append(rel)
    assert unnamed == []


def test_records_live_in_the_model_and_no_one_outside_the_store_names_a_backend() -> None:
    """One model module for the records the parts pass each other (not under ``idwall/store``), and callers keep
    to the ``Store`` interface: only ``idwall/store`` itself (and ``open_store``'s callers through it) knows
    which backend is in use."""
    modules = _modules()
    stray = [name for name, path in modules.items() if name.startswith("idwall.store")
             and "@dataclass" in path.read_text()]
    assert stray == [], "records belong in idwall/model.py"
    backend_users = sorted(name for name, path in modules.items() if not name.startswith("idwall.store")
                           and any(word in path.read_text() for word in ("SQLiteStore", "PostgresStore",
                                                                         "store.sqlite", "store.postgres")))
    assert backend_users == []
