"""The package's shape (docs/architecture.md): every `ensemble` module imports without torch, keras or
TensorFlow; every import in `ensemble/` (module level, inside a function or under TYPE_CHECKING) points to
the importer's layer or a lower one; and no modules import each other, directly or round a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ensemble

PACKAGE = Path(ensemble.__file__).parent
ROOT = PACKAGE.parent
BLOCKED = ("torch", "keras", "tensorflow", "tf2onnx")

# Bottom to top; a module imports from its own layer or a lower one. Keys are the first name under
# `ensemble` (a subpackage or a top-level module); `ensemble` is the package's own __init__.
LAYERS = (
    (
        "ensemble",
        "errors",
        "files",
        "course",
        "bounds",
        "optionvalues",
        "extras",
        "machine",
        "capture",
        "timing",
    ),
    ("data", "members", "demo", "submission"),
    ("runtimes",),
    ("inference",),
    ("compiled",),
    ("runs",),
    ("fitting",),
    ("scoring",),
    ("bundle",),
    ("api", "apiargs"),
    ("process",),
    ("cli",),
    ("entry", "__main__"),
)
LAYER = {key: rank for rank, keys in enumerate(LAYERS) for key in keys}
# outside `ensemble/`: only these command modules may load them, inside their functions
OUTSIDE = {"exporters": ("ensemble.cli.export_cmd",), "zoo": ("ensemble.cli.train_cmd",)}


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under `package`."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement in the file, wherever it is.
    `from a import b` names `a.b` when that is a module, else `a`; relative imports are resolved."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}  # TYPE_CHECKING
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                found.append((f"{base}.{alias.name}", node.lineno, id(node) in top))
                found.append((base, node.lineno, id(node) in top))
    return found


def package_edges(package: Path) -> dict[str, dict[str, int]]:
    """Module -> {package module it imports: line}, an import naming a module's attribute counting as
    an import of that module."""
    names = modules(package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in names.items():
        targets = {}
        for target, line, _ in imports(name, path):
            if target in names and target != name and not name.startswith(f"{target}."):
                targets[target] = min(line, targets.get(target, line))
        graph[name] = targets
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for name, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            low, high = layer_of(target), layer_of(name)
            if LAYER[low] > LAYER[high]:
                path = ROOT / (name.replace(".", "/") + ".py")
                where = path if path.exists() else path.with_suffix("") / "__init__.py"
                text = f"{where.relative_to(ROOT)}:{line}: {high!r} imports the higher layer {low!r}"
                problems.append(text)
    return problems


def circles(graph: dict[str, dict[str, int]] | dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_ensemble_module_imports_with_the_frameworks_blocked():
    code = (
        "import importlib, sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        f"for module in {sorted(modules(PACKAGE))!r}: importlib.import_module(module)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('exporters', 'zoo'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_module_has_a_layer():
    assert not [name for name in modules(PACKAGE) if layer_of(name) not in LAYER]


def test_no_import_points_to_a_higher_layer():
    problems = upward_imports(package_edges(PACKAGE))
    assert not problems, "\n".join(problems)


def test_no_import_circle_between_modules():
    for package in (PACKAGE, ROOT / "exporters", ROOT / "zoo"):
        graph = package_edges(package)
        assert not circles(graph), circles(graph)


def test_no_import_circle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for name, targets in package_edges(PACKAGE).items():
        layers = {layer_of(target) for target in targets} - {layer_of(name)}
        graph.setdefault(layer_of(name), set()).update(layers)
    assert not circles(graph), circles(graph)


def test_exporters_and_zoo_load_only_inside_their_commands():
    problems = []
    for name, path in modules(PACKAGE).items():
        for target, line, module_level in imports(name, path):
            outside = target.split(".")[0]
            if outside in OUTSIDE and (module_level or name not in OUTSIDE[outside]):
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not problems, "\n".join(problems)


def test_the_checks_find_an_upward_import_and_a_circle(tmp_path, monkeypatch):
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    fake = tmp_path / "ensemble"
    for folder in ("files", "cli"):
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "files" / "low.py").write_text("def f():\n    from ensemble.cli import app\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    problems = upward_imports(package_edges(fake))
    assert problems == ["ensemble/files/low.py:2: 'files' imports the higher layer 'cli'"]


def test_docs_architecture_lists_the_layers_of_this_test():
    rows = [line.split("|") for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()]
    documented = [
        sorted(name.strip("`/ ") for name in row[2].split(","))
        for row in rows
        if len(row) > 3 and row[1].strip().isdigit()
    ]
    expected = [sorted(key for key in keys if key != "ensemble") for keys in LAYERS]
    assert documented == expected
