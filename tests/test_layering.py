"""Layering and import cycles of the installed package tree, read from the source with ``ast``.

The tree is ``samkit/`` plus the top-level folders that install under ``samkit.`` (pyproject's
``package-dir``): ``adapters/`` -> ``samkit.adapters``, ``pipelines/`` -> ``samkit.pipelines``,
``demos/`` -> ``samkit.demos``, ``engine/`` -> ``samkit.engine``. Every ``import`` and
``from ... import`` counts, at module level or inside functions; relative imports are resolved
to absolute names; ``from pkg import name`` where ``pkg.name`` is a module imports that module.

Layers (dependencies point down; DESIGN.md): core (``samkit.*`` outside the groups below) <
``samkit.adapters`` < ``samkit.pipelines`` < ``samkit.engine`` < front ends (``samkit.cli``,
``samkit.cli_*``, ``samkit.__main__`` (``python -m samkit``), ``samkit.demos``).

Rules:

* the core never imports adapters, pipelines, engine or a front end;
* nothing but a front end imports a front end;
* a layer never imports a layer above it (adapters -> pipelines / engine, pipelines -> engine);
* no import cycle among the package's modules: the strongly connected components of the
  module graph have one module each. Package ``__init__`` edges: an edge from a package's
  ``__init__`` to its own submodules (a re-export) is left out, since the submodule imported
  first finds the package already being initialised; an edge from a module to a package
  ``__init__`` stays, so a module reading names from its own package's ``__init__`` while that
  ``__init__`` (transitively) imports it back is a cycle too. Imports under
  ``if TYPE_CHECKING:`` never run: they count for the layer rules, not for cycles.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = {"samkit": "samkit", "adapters": "samkit.adapters", "pipelines": "samkit.pipelines",
         "demos": "samkit.demos", "engine": "samkit.engine"}
UPPER_GROUPS = ("samkit.adapters", "samkit.pipelines", "samkit.engine")
LAYER_ORDER = {"samkit.adapters": 1, "samkit.pipelines": 2, "samkit.engine": 3}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved, inside the package)
    where: str  # file:line
    runs: bool  # False under `if TYPE_CHECKING:`


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package __init__)."""
    found = {}
    for folder, package in TREES.items():
        base = ROOT / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            is_init = parts[-1] == "__init__"
            name = ".".join((package, *(parts[:-1] if is_init else parts)))
            found[name] = (path, is_init)
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes inside `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`) bodies."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for child in node.body:
                    inside.update(id(n) for n in ast.walk(child))
    return inside


def _resolve(module: str, is_init: bool, level: int, name: str | None) -> str:
    package = module if is_init else module.rpartition(".")[0]
    parts = package.split(".")
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def _internal(name: str) -> str | None:
    """The longest prefix of ``name`` that is a module of the tree (None when outside it)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _imports() -> list[Import]:
    out = []
    for module, (path, is_init) in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        guarded = _type_checking_nodes(tree)
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_init, node.level, node.module) if node.level else node.module or ""
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
                # names that are not submodules come from the package (or module) itself
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            for target in targets:
                resolved = _internal(target)
                if resolved is not None and resolved != module:
                    out.append(Import(module, resolved, f"{rel}:{node.lineno}", id(node) not in guarded))
    return out


IMPORTS = _imports()


def is_front_end(module: str) -> bool:
    return (module in ("samkit.cli", "samkit.__main__") or module.startswith(("samkit.cli.", "samkit.cli_"))
            or module == "samkit.demos" or module.startswith("samkit.demos."))


def group(module: str) -> str:
    """'front end', one of UPPER_GROUPS, or 'core'."""
    if is_front_end(module):
        return "front end"
    return next((g for g in UPPER_GROUPS if module == g or module.startswith(g + ".")), "core")


def _report(bad: list[Import]) -> str:
    return "\n".join(f"  {i.where}: {i.source} imports {i.target}" for i in sorted(bad, key=lambda i: i.where))


def test_the_tree_is_found():
    assert {"samkit", "samkit.modeling.sam", "samkit.weights", "samkit.adapters", "samkit.pipelines"} <= set(MODULES)
    assert any(i.source == "samkit.modeling.sam" and i.target == "samkit.modeling.config" for i in IMPORTS)


def test_core_imports_no_upper_layer_or_front_end():
    bad = [i for i in IMPORTS if group(i.source) == "core" and group(i.target) != "core"]
    if bad:
        pytest.fail(f"{len(bad)} core modules import adapters/pipelines/engine/front ends:\n{_report(bad)}",
                    pytrace=False)


def test_only_front_ends_import_front_ends():
    bad = [i for i in IMPORTS if is_front_end(i.target) and not is_front_end(i.source)]
    if bad:
        pytest.fail(f"{len(bad)} imports of a front end from outside the front ends:\n{_report(bad)}", pytrace=False)


def test_layers_point_down():
    bad = [i for i in IMPORTS if group(i.source) in LAYER_ORDER and group(i.target) in LAYER_ORDER
           and LAYER_ORDER[group(i.target)] > LAYER_ORDER[group(i.source)]]
    if bad:
        pytest.fail(f"{len(bad)} imports of a higher layer:\n{_report(bad)}", pytrace=False)


def _is_reexport(edge: Import) -> bool:
    return MODULES[edge.source][1] and edge.target.startswith(edge.source + ".")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components of more than one module, sorted."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        result.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(result)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
])
def test_strongly_connected(graph, expected):
    assert strongly_connected(graph) == expected


def test_no_import_cycles():
    edges = [i for i in IMPORTS if i.runs and not _is_reexport(i)]
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for edge in edges:
        graph[edge.source].add(edge.target)
    cycles = strongly_connected(graph)
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("  cycle: " + " <-> ".join(component))
        lines += [f"    {i.where}: {i.source} imports {i.target}" for i in edges
                  if i.source in members and i.target in members]
    if cycles:
        pytest.fail(f"{len(cycles)} import cycles:\n" + "\n".join(lines), pytrace=False)
