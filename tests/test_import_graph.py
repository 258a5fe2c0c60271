"""The package's import graph: arrows point down, and there are no circles.

Read from the source with ``ast`` (nothing is imported). Every ``import`` and
``from … import`` of an ``idlegrid`` module is an arrow, wherever it stands: at
module level, inside a function (a lazy import is an arrow that is merely late)
and under ``if TYPE_CHECKING:`` (a type a module names is something it depends
on, and a circle through type hints is a circle a reader has to untangle). The
only import not counted is the implicit one of a module's parent package: a
package's ``__init__`` may gather its own modules. A program started as a
subprocess (``localnet`` runs ``python -m idlegrid.cli.main``) is not an import.

The layers, lowest first. A layer may import itself, the layers it stands on
(``over``) and, transitively, what they stand on; nothing else. A module belongs
to the layer of the longest prefix that names it::

    base        errors, faults, version         the standard library only
    protocol    the wire models                 over base
    catalog     hardware catalog                over protocol
    core        PURE rules                      over catalog
    relay       the overlay's relay             over core
    identity    keypair files                   over base
    orm         the declarative Base, chunks    over base
    sim         the market simulator            over core
    ledger      book, tables, chain, outbox     over core, orm
    sdk         the HTTP client                 over core, identity
    worker      the agent and its duties        over sdk
    server.db   tables, engine, migrations      over ledger
    server      settings, auth, liveness, …     over core, identity
    services    one transaction each            over server.db, server
    state       the app's wiring, hot path      over services
    routes      the JSON API                    over state
    explorer    the HTML pages                  over state   (beside routes)
    app         the composition root            over routes, explorer
    localnet    a network of subprocesses       over worker, identity
    cli         the commands                    over localnet, sdk, relay
    cli.main    the entry point                 over cli, app, worker
    package     ``idlegrid.Client``             over sdk

So cli → sdk → (HTTP) → server → services → core and ledger, and worker → sdk →
protocol: the worker never imports the server; the server never the sdk or the
worker; nothing in the server below its app imports a route or an explorer page;
the CLI's commands reach the server only over HTTP (``cli.main`` alone starts a
server or an agent in its own process); and core/ imports nothing with I/O in it
(``test_core_imports_no_io``).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "idlegrid"


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]  # module prefixes: "idlegrid.server" names idlegrid.server.*
    over: tuple[str, ...]  # the layers it stands on directly


SERVER_BASE = (
    "idlegrid.server",  # the package, and any server module not placed higher
    "idlegrid.server.settings",
    "idlegrid.server.serve",
    "idlegrid.server.middleware",
    "idlegrid.server.auth",
    "idlegrid.server.liveness",
    "idlegrid.server.idle",
    "idlegrid.server.metrics",
    "idlegrid.server.ratelimit",
    "idlegrid.server.group_verify",
    "idlegrid.server.openapi",
    "idlegrid.server.params",
)

LAYERS: tuple[Layer, ...] = (
    Layer("base", ("idlegrid.errors", "idlegrid.faults", "idlegrid.version"), ()),
    Layer("protocol", ("idlegrid.protocol",), ("base",)),
    Layer("catalog", ("idlegrid.catalog",), ("protocol",)),
    Layer("core", ("idlegrid.core",), ("catalog",)),
    Layer("relay", ("idlegrid.relay",), ("core",)),
    Layer("identity", ("idlegrid.identity",), ("base",)),
    Layer("orm", ("idlegrid.orm",), ("base",)),
    Layer("sim", ("idlegrid.sim",), ("core",)),
    Layer("ledger", ("idlegrid.ledger",), ("core", "orm")),
    Layer("sdk", ("idlegrid.sdk",), ("core", "identity")),
    Layer("worker", ("idlegrid.worker",), ("sdk",)),
    Layer("server.db", ("idlegrid.server.db",), ("ledger",)),
    Layer("server", SERVER_BASE, ("core", "identity")),
    Layer("services", ("idlegrid.server.services",), ("server.db", "server")),
    Layer(
        "state",
        ("idlegrid.server.state", "idlegrid.server.hotpath", "idlegrid.server.loops"),
        ("services",),
    ),
    Layer("routes", ("idlegrid.server.routes",), ("state",)),
    Layer("explorer", ("idlegrid.explorer",), ("state",)),
    Layer("app", ("idlegrid.server.app",), ("routes", "explorer")),
    Layer("localnet", ("idlegrid.localnet",), ("worker", "identity")),
    Layer("cli", ("idlegrid.cli",), ("localnet", "sdk", "relay")),
    Layer("cli.main", ("idlegrid.cli.main",), ("cli", "app", "worker")),
    Layer("package", ("idlegrid",), ("sdk",)),
)

# What core/ may import besides itself and the layers beneath it: the standard library
# and libraries of pure values and arithmetic. No database, HTTP, Ray, GPU or clock.
CORE_LIBRARIES = frozenset({"numpy", "orjson", "solders"})


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{_path(self.source)}:{self.line}: {self.text}"


def _path(module: str) -> str:
    return str(_modules()[module].relative_to(PACKAGE.parent))


@cache
def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _nearest_module(name: str) -> str | None:
    """The module ``name`` is or is in (``idlegrid.x.Thing`` → ``idlegrid.x``)."""
    modules = _modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, list[str]]]:
    """Every import statement in the module, anywhere, with the absolute names it imports."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(), package)


def _imports_in(
    source: str, package: str
) -> Iterator[tuple[ast.Import | ast.ImportFrom, list[str]]]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node, [f"{base}.{alias.name}" for alias in node.names]


@cache
def _arrows() -> tuple[Arrow, ...]:
    arrows = set()
    for module in _modules():
        for node, names in _imports(module):
            for name in names:
                if name != "idlegrid" and not name.startswith("idlegrid."):
                    continue
                target = _nearest_module(name)
                if target is not None and target != module:
                    arrows.add(Arrow(module, target, node.lineno, ast.unparse(node)))
    return tuple(sorted(arrows, key=lambda a: (a.source, a.line, a.target)))


def _layer_of(module: str) -> Layer | None:
    best: tuple[int, Layer] | None = None
    for layer in LAYERS:
        for prefix in layer.modules:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), layer)
    return best[1] if best else None


def _reachable() -> dict[str, frozenset[str]]:
    """Each layer's name → the layers it may import (itself and all beneath it)."""
    reach: dict[str, frozenset[str]] = {}
    for layer in LAYERS:  # each stands only on layers listed before it
        reach[layer.name] = frozenset({layer.name}).union(*(reach[o] for o in layer.over))
    return reach


def test_the_layer_table_is_a_ladder() -> None:
    """Each layer stands only on layers listed before it, so the layers have no circle."""
    seen: set[str] = set()
    for layer in LAYERS:
        missing = [o for o in layer.over if o not in seen]
        assert not missing, f"{layer.name} stands on {missing}, which are not beneath it"
        seen.add(layer.name)


def test_every_module_has_a_layer() -> None:
    homeless = [m for m in _modules() if _layer_of(m) is None]
    assert not homeless, f"modules in no layer (add them to LAYERS): {homeless}"


def test_no_arrow_points_up() -> None:
    reach = _reachable()
    wrong = []
    for arrow in _arrows():
        source, target = _layer_of(arrow.source), _layer_of(arrow.target)
        assert source is not None and target is not None
        if target.name not in reach[source.name]:
            wrong.append(f"{arrow}   ({source.name} → {target.name})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_circles() -> None:
    """No module reaches itself through imports (Tarjan's strongly connected components)."""
    edges: dict[str, list[Arrow]] = {m: [] for m in _modules()}
    for arrow in _arrows():
        edges[arrow.source].append(arrow)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for arrow in edges[module]:
            if arrow.target not in index:
                visit(arrow.target)
                low[module] = min(low[module], low[arrow.target])
            elif arrow.target in on_stack:
                low[module] = min(low[module], index[arrow.target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges)))
    try:
        for module in edges:
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    described = []
    for circle in circles:
        members = set(circle)
        inside = [str(a) for m in circle for a in edges[m] if a.target in members]
        described.append(" ↔ ".join(circle) + "\n    " + "\n    ".join(inside))
    assert not circles, "import circles:\n" + "\n".join(described)


def test_core_imports_no_io() -> None:
    """core/ imports core, the layers beneath it, the standard library and CORE_LIBRARIES."""
    wrong = []
    for module in _modules():
        if not (module == "idlegrid.core" or module.startswith("idlegrid.core.")):
            continue
        for node, names in _imports(module):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # relative: inside the package, checked by the layering
            for name in names:
                top = name.partition(".")[0]
                if top == "idlegrid" or top == "__future__":
                    continue
                if top not in sys.stdlib_module_names and top not in CORE_LIBRARIES:
                    wrong.append(f"{_path(module)}:{node.lineno}: {ast.unparse(node)}")
    assert not wrong, "core/ is pure; these imports are not:\n" + "\n".join(sorted(set(wrong)))


def test_the_reader_sees_every_kind_of_import() -> None:
    """A guard on the reader itself: each way of writing an import yields its arrow."""
    source = """
import idlegrid.errors
from idlegrid.core import ledger as book_rules
from . import sibling
from ..server.db import models

def lazy():
    from idlegrid.worker.agent import Agent

if TYPE_CHECKING:
    from idlegrid.sdk import Client
"""
    names = [n for _, found in _imports_in(source, "idlegrid.ledger") for n in found]
    assert sorted(names) == [
        "idlegrid.core.ledger",
        "idlegrid.errors",
        "idlegrid.ledger.sibling",
        "idlegrid.sdk.Client",
        "idlegrid.server.db.models",
        "idlegrid.worker.agent.Agent",
    ]
    assert _nearest_module("idlegrid.sdk.Client") == "idlegrid.sdk"
    assert _nearest_module("idlegrid.worker.agent.Agent") == "idlegrid.worker.agent"
    assert len(_modules()) > 50 and len(_arrows()) > 200
