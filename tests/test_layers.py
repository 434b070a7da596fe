"""The import graph of ``src/htsr``: no cycle at any level, and no import runs upward.

The graph is read from the source with ``ast`` (nothing is imported), with every
``import`` and ``from … import`` inside functions, methods and ``TYPE_CHECKING``
blocks included. A module may import modules of its own layer or of lower ones;
:data:`LAYERS` is the order, drawn in ``docs/DESIGN.md`` ("Layers").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Lowest first. A module imports only from its own layer or from layers before it.
#: A new module goes into one of these lists (and into the drawing in docs/DESIGN.md).
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["htsr._version", "htsr.errors", "htsr.files", "htsr.blas", "htsr.progress", "htsr.config",
                    "htsr.tables"]),
    ("spectral", ["htsr.spectral", "htsr.spectral.*"]),
    ("weights", ["htsr.matrices", "htsr.treatment", "htsr.results", "htsr.hub", "htsr.sources", "htsr.sources.*"]),
    ("pipeline", ["htsr.prepare", "htsr.blocked", "htsr.accel", "htsr.engine", "htsr.cluster", "htsr.combined",
                  "htsr.checkpoint"]),
    ("views", ["htsr.schema", "htsr.report", "htsr.figures", "htsr.pages", "htsr.html", "htsr.plotting",
               "htsr.option_plots", "htsr.texttables", "htsr.verdict", "htsr.loggers", "htsr.monitor_views"]),
    ("front doors", ["htsr.api", "htsr.transforms", "htsr.compare", "htsr.monitor", "htsr.pruning",
                     "htsr.tempbalance"]),
    ("compat", ["htsr.compat", "htsr.compat.*"]),
    ("entry points", ["htsr", "htsr.cli", "htsr.__main__"]),
]

def module_files(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package ``__init__``) for every module under ``src/htsr``."""
    out = {}
    for path in sorted((src / "htsr").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module → the htsr modules it imports anywhere in its source (function-level imports included)."""
    mods = module_files(src)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # ``from . import x``: the submodule x when there is one
                    sub = f"{target}.{alias.name}"
                    targets.add(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def layer_of(module: str) -> int | None:
    """Index of ``module``'s layer in :data:`LAYERS` (None when it is not listed)."""
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if module == pattern or (pattern.endswith(".*") and module.startswith(pattern[:-1])):
                return index
    return None


def find_cycle(graph: dict[str, set[str]], skip: set[tuple[str, str]] = frozenset()) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, …, a]`` (edges in ``skip`` left out), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if (node, nxt) in skip:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "htsr.blocked" in graph["htsr.engine"]  # a module-level import
    assert "htsr.compat.distances" in graph["htsr.compat.watcher"]  # only inside WeightWatcher.distances
    assert "htsr.sources.folders" in graph["htsr.sources"]  # only inside _open_path and open_lora
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_every_module_has_a_layer():
    missing = sorted(m for m in import_graph() if layer_of(m) is None)
    assert not missing, (f"modules without a layer: {', '.join(missing)}: add each to LAYERS in "
                         "tests/test_layers.py and to the layer drawing in docs/DESIGN.md")


def test_no_import_runs_upward():
    upward = []
    for module, targets in sorted(import_graph().items()):
        here = layer_of(module)
        for target in sorted(targets):
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_the_core_never_imports_compat():
    compat = layer_of("htsr.compat")
    assert compat is not None
    core = [m for m, targets in import_graph().items() if (layer_of(m) or 0) < compat
            and any(t == "htsr.compat" or t.startswith("htsr.compat.") for t in targets)]
    assert not core


@pytest.mark.parametrize("module", ["htsr.config", "htsr.engine", "htsr.matrices"])
def test_no_reference_flag_in_the_core(module):
    """The reference's treatment reaches the engine as a Treatment object, never as a flag."""
    path, _ = module_files()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.target.id for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert not {n for n in names if n == "reference" or n.startswith("reference_")}
