"""The engine's modules import one another without a circle (docs/app.md, "How it is built").

Checked statically: every module under robult_engine/ is parsed with `ast` (nothing is imported), and every import
of another engine module is collected, at module level and inside functions, methods and `if`/`try` blocks alike,
relative and absolute; `from . import x` counts as an import of the submodule `x` when there is one. A package's
`__init__` is a module of its own (importing a submodule runs its package's `__init__` first; that step is no edge,
so a package may import its own submodules). Only imports under `if TYPE_CHECKING:` are left out: they never run.
An edge A → B means "A imports B"; the graph must be acyclic, so a function-level import cannot hide a circle.
That the engine imports no Qt, SQLite or app module is tests/engine/test_boundary.py's.
"""
from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import robult_engine

ROOT = Path(robult_engine.__file__).parent
PACKAGE = "robult_engine"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def engine_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _runtime_imports(tree: ast.AST):
    """Every Import/ImportFrom node that can run: all of them except those under `if TYPE_CHECKING:`
    (the `else:` branch of such an `if` does run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (before its imported names are looked at)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The engine modules that `module` (its source at `path`) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            source = _resolve(module, is_package, node)
            # `from pkg import name` imports the submodule pkg.name when there is one, else takes a name of pkg
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                     for alias in node.names]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                while name not in known and "." in name:  # `import a.b.c`: the longest prefix that is a module
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    targets.add(name)
    return targets


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[str, frozenset[str]]:
    """{engine module: the engine modules it imports}."""
    modules = engine_modules()
    known = set(modules)
    return {name: frozenset(imports_of(name, path, known)) for name, path in modules.items()}


def strongly_connected(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every circle of imports
    lies inside one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:  # the graph has ~60 nodes: recursion depth is no concern
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def shortest_cycle(component: list[str], graph) -> list[str]:
    """A shortest closed path through the component's first module (breadth-first, inside the component)."""
    members = set(component)
    start = component[0]
    parent: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(set(graph[v]) & members):
                if w == start:
                    path, node = [], v
                    while node is not None:
                        path.append(node)
                        node = parent[node]
                    return path[::-1] + [start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{component} is not strongly connected")


def find_cycles(graph) -> list[list[str]]:
    """One closed path per strongly connected component, e.g. ["a", "b", "a"]."""
    return [shortest_cycle(c, graph) for c in strongly_connected(graph)]


def test_graph_sees_every_kind_of_import(tmp_path):
    """The collector sees what the rule is about: relative imports of one and two levels, `from . import module`,
    imports inside functions; and leaves out only what never runs (`if TYPE_CHECKING:`)."""
    graph = import_graph()
    assert "robult_engine.data.base" in graph["robult_engine.data"]       # `from .base import ...` in __init__
    assert "robult_engine.data.formats" in graph["robult_engine.data"]    # inside load_dataset()
    assert "robult_engine.paths" in graph["robult_engine"]                # a package's __init__ is a module
    assert "robult_engine.paths" in graph["robult_engine.data.mfeat"]     # `from ..paths import` in a function
    assert "robult_engine.sweep" in graph["robult_engine.compare"]        # `from . import sweep`
    assert "robult_engine.distributed" in graph["robult_engine.cli"]      # `from . import distributed`, in a function
    src = tmp_path / "probe.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "import robult_engine.models.robult\n"
                   "if TYPE_CHECKING:\n    from .trainer import Trainer\nelse:\n    from . import events\n"
                   "def f():\n    if True:\n        from robult_engine import stats, __version__\n"
                   "    from .data import load_dataset\n", encoding="utf-8")
    assert imports_of("robult_engine.probe", src, set(engine_modules())) == {
        "robult_engine.models.robult", "robult_engine.events", "robult_engine.stats", "robult_engine",
        "robult_engine.data"}


def test_cycle_finder_reports_a_closed_path():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "d"}, "b": {"a"}, "d": set()}) == [["a", "b", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_engine_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40, sorted(graph)
    report = []
    for component in strongly_connected(graph):
        report.append("  " + " → ".join(shortest_cycle(component, graph))
                      + (f"  (circle among {', '.join(component)})" if len(component) > 2 else ""))
    assert not report, ("import cycles in robult_engine (A → B: A imports B); move the code both sides need to "
                        "a module of its own instead of importing inside a function:\n" + "\n".join(report))


def test_command_line_and_shared_modules_load_no_torch():
    """The modules that keep their torch-loading imports inside functions (docs/app.md, "How it is built") load
    without torch."""
    light = ["cli", "cli_common", "compare", "config", "errors", "explain.cli", "methods", "missing_spec", "stats",
             "sweep", "tune", "workers"]
    script = ("import sys; " + "; ".join(f"import robult_engine.{m}" for m in light)
              + "; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
