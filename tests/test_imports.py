"""The package's shape: every `ensemble` module imports without torch, keras or TensorFlow, and no two
modules import each other (directly or in a loop) at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ensemble

PACKAGE = Path(ensemble.__file__).parent
ROOT = PACKAGE.parent
BLOCKED = ("torch", "keras", "tensorflow", "tf2onnx")


def modules(package: Path) -> list[str]:
    """Dotted names of every module under `package`."""
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_ensemble_module_imports_with_the_frameworks_blocked():
    code = (
        "import importlib, sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        f"for module in {modules(PACKAGE)!r}: importlib.import_module(module)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('exporters', 'zoo'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (not inside functions)."""
    names = set(modules(package))
    graph: dict[str, set[str]] = {}
    for name in names:
        path = ROOT.joinpath(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                targets |= {c for c in candidates if c in names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in names}
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    for package in (PACKAGE, ROOT / "exporters", ROOT / "zoo"):
        graph = import_graph(package)
        assert find_cycle(graph) is None, find_cycle(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
