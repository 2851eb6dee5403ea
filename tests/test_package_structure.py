"""The shape of the package: no import circle, and the layers that must stay light stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "sparcom"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the sparcom modules it imports anywhere (top level or inside functions), from the source text.

    A package's ``__init__`` runs before any of its submodules, so that implicit edge is not counted: only what a
    module names.
    """
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], base]).strip(".")
                # `from pkg import submodule` depends on the submodule; `from module import name` on the module.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:  # `from a.b import name`: the module a.b
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_inside_the_package():
    graph = import_graph()
    # Every module imports the package itself implicitly; the lazy name table of sparcom/__init__ is not an edge.
    for edges in graph.values():
        edges.discard("sparcom")
    cycle = find_cycle(graph)
    assert cycle is None, " → ".join(cycle)


def test_the_scan_sees_a_circle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "sparcom.models.sites" in graph["sparcom.profile.hooks"]  # the scan reads real imports
    assert "sparcom.models.lora" in graph["sparcom.models.loading"]


def test_analysis_and_the_counts_vocabulary_do_not_import_torch():
    code = ("import sys; import sparcom.analysis, sparcom.analysis.pipeline, sparcom.kinds, sparcom.artifacts.run; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_models_do_not_import_the_layers_above_them():
    graph = import_graph()
    above = ("sparcom.profile", "sparcom.analysis", "sparcom.causal", "sparcom.tune", "sparcom.report", "sparcom.cli")
    for module, edges in graph.items():
        if module.startswith("sparcom.models"):
            assert not [e for e in edges if e.startswith(above)], (module, edges)


def part_of(module: str) -> str:
    """The part of ``sparcom/`` a module belongs to: its folder, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_circle_between_the_parts_of_the_package():
    """Folders (and top-level modules) form a layered graph: data flows one way, imports inside functions count."""
    parts: dict[str, set[str]] = {}
    for module, edges in import_graph().items():
        parts.setdefault(part_of(module), set()).update(part_of(e) for e in edges if e != "sparcom")
    for name, edges in parts.items():
        edges.discard(name)
    cycle = find_cycle(parts)
    assert cycle is None, " → ".join(cycle)


def test_model_access_does_not_import_model_building():
    graph = import_graph()
    for module, edges in graph.items():
        if module.startswith("sparcom.models"):
            assert not [e for e in edges if e.startswith("sparcom.zoo")], (module, edges)
