"""The shape of the code: no import cycle in edgekit/, short functions, a short export face.

The import graph is read from the source with `ast`: every `import` statement counts, at module
level or inside a function (a lazy import is still a dependency). A submodule's implicit import
of its parent package is not an edge (every package would be a cycle with its children); an
import by module string (importlib, the format catalog's backends) is not an edge either, which
is what lets the runtime load a backend without depending on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).parent
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """edgekit modules `name` imports; `from pkg import sub` names the submodule."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    mods = sources()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "edgekit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from edgekit import top\n")
    (pkg / "top.py").write_text("")
    known = {"edgekit.sub", "edgekit.sub.leaf", "edgekit.top"}
    assert imports_of("edgekit.sub", pkg / "sub" / "__init__.py", known) == {"edgekit.sub.leaf"}
    assert imports_of("edgekit.sub.leaf", pkg / "sub" / "leaf.py", known) == {"edgekit.top"}


def test_edgekit_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_nothing_below_imports_upward():
    """The runtime (what a Pi runs) and the shared contract never import export, training or
    the benchmark packages: those build on them, not the other way round."""
    upper = ("edgekit.exporting", "edgekit.benchmark", "edgekit.training", "edgekit.loop",
             "edgekit.cli", "edgekit.data", "edgekit.models")
    graph = import_graph()
    lower = [m for m in graph if m.startswith(("edgekit.runtime", "edgekit.manifest",
                                               "edgekit.formats", "edgekit.tasks"))]
    wrong = sorted((m, d) for m in lower for d in graph[m] if d.startswith(upper))
    assert wrong == []


def test_no_function_is_longer_than_80_lines():
    long = []
    for name, path in sources().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_the_export_face_is_short():
    lines = (ROOT / "exporting" / "__init__.py").read_text(encoding="utf-8").count("\n")
    assert lines < 200


def test_no_submodule_shadows_a_public_api_name():
    """`import edgekit.X` sets the package attribute X: a submodule named like an API function
    (edgekit.export, edgekit.training, ...) would replace the function as soon as it is imported."""
    clash = [n for n in edgekit.__all__ if (ROOT / f"{n}.py").exists() or (ROOT / n).is_dir()]
    assert clash == []


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph as Python runs it: importing a.b.c first runs a.b's __init__ (and
    a's), so an edge to a.b.c is also an edge to each package above it, except the packages
    the importer itself sits in (those are already running)."""
    out = {}
    for name, deps in graph.items():
        edges = set(deps)
        for dep in deps:
            parts = dep.split(".")
            for i in range(2, len(parts)):
                package = ".".join(parts[:i])
                if package in graph and not (name + ".").startswith(package + "."):
                    edges.add(package)
        out[name] = edges - {name}
    return out


def test_the_package_graph_counts_the_packages_an_import_runs():
    graph = {"edgekit.a": {"edgekit.b.c"}, "edgekit.b": {"edgekit.b.d"}, "edgekit.b.c": set(),
             "edgekit.b.d": {"edgekit.a"}}
    assert find_cycle(graph) is None  # module by module there is none ...
    assert find_cycle(package_graph(graph)) == ["edgekit.a", "edgekit.b", "edgekit.b.d",
                                                "edgekit.a"]  # ... but importing b runs d


def test_edgekit_has_no_package_level_import_cycle():
    assert find_cycle(package_graph(import_graph())) is None


def test_no_module_is_longer_than_500_lines():
    long = {name: n for name, path in sources().items()
            if (n := path.read_text(encoding="utf-8").count("\n")) > 500}
    assert long == {}


def test_the_export_pipeline_has_at_most_10_modules_at_its_top():
    top = [p.name for p in (ROOT / "exporting").iterdir()
           if p.suffix == ".py" and p.name != "__init__.py" or (p / "__init__.py").is_file()]
    assert len(top) <= 10, sorted(top)


def private_imports(name: str, path: Path, known: set[str]) -> list[str]:
    """`from m import _x` and `m._x` (m an imported edgekit module) in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{name}: from {node.module} import {a.name}")
                elif f"{node.module}.{a.name}" in known:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    return sorted(found)


def test_private_imports_are_seen(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from edgekit.a import _hidden, shown\nfrom edgekit import b\n"
                    "import edgekit.c as c\nb._x(); c._y; shown._z\n")
    known = {"edgekit.a", "edgekit.b", "edgekit.c"}
    assert private_imports("m", path, known) == [
        "m: edgekit.b._x", "m: edgekit.c._y", "m: from edgekit.a import _hidden"]


def test_no_module_imports_a_private_name_from_another():
    mods = sources()
    assert [line for name, path in mods.items()
            for line in private_imports(name, path, set(mods))] == []
