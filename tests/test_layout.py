"""The package's shape, read from its source: no import cycles, no private names across modules,
and the layers in order (runtime knows nothing of export, bench or distill)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ekd_edge"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """module -> the ekd_edge modules it imports (anywhere in the file), and private names imported."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                base = node.module
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [node.module])
                if not base.startswith("ekd_edge"):
                    continue
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    if target in modules and target != name:
                        graph[name].add(target)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((name, base, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules and alias.name != name:
                        graph[name].add(alias.name)
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_cycle_and_a_private_import(tmp_path, monkeypatch):
    pkg = tmp_path / "ekd_edge"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from ekd_edge.b import _g\n")
    (pkg / "b.py").write_text("from ekd_edge import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    graph, private = import_graph()
    assert cycles(graph) == [["ekd_edge.a", "ekd_edge.b"]]
    assert private == [("ekd_edge.a", "ekd_edge.b", "_g")]


def test_no_import_cycles():
    assert cycles(import_graph()[0]) == []


def test_no_private_names_imported_across_modules():
    assert import_graph()[1] == []


def test_runtime_depends_on_data_and_models_only():
    graph, _ = import_graph()
    for module, targets in graph.items():
        if module.startswith("ekd_edge.runtime"):
            higher = [t for t in targets if t.startswith(("ekd_edge.export", "ekd_edge.bench", "ekd_edge.distill",
                                                          "ekd_edge.cli", "ekd_edge.pipeline"))]
            assert higher == [], (module, higher)
