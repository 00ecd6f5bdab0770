"""Small modules and short functions: no module in `ensemble/` over MAX_MODULE_LINES lines and no
function body over MAX_BODY_LINES lines. A body is measured from its first statement after the docstring
to its last, so a CLI command's option declarations (its signature) do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import ensemble

PACKAGE = Path(ensemble.__file__).parent
MAX_MODULE_LINES = 300
MAX_BODY_LINES = 80


def sources() -> dict[str, str]:
    """Path under `ensemble/` -> text of every module."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found[path.relative_to(PACKAGE).as_posix()] = path.read_text(encoding="utf-8")
    return found


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the last one."""
    body = node.body[1:] if ast.get_docstring(node, clean=False) is not None else node.body
    if not body:
        return 0
    return body[-1].end_lineno - body[0].lineno + 1


def long_functions(name: str, text: str) -> list[str]:
    """`file:line function (N lines)` for every function or method of `text` whose body is too long."""
    found = []
    for node in ast.walk(ast.parse(text, name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = body_lines(node)
            if length > MAX_BODY_LINES:
                found.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_modules_are_small():
    lines = {name: len(text.splitlines()) for name, text in sources().items()}
    long = [f"{name} ({count} lines)" for name, count in lines.items() if count > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}; split them by concept"


def test_function_bodies_are_short():
    long = [entry for name, text in sources().items() for entry in long_functions(name, text)]
    assert not long, f"function bodies over {MAX_BODY_LINES} lines: {long}; move the work into helpers"


def test_measure_skips_signature_and_docstring():
    text = (
        "def command(\n" + "".join(f"    option_{i}: int = {i},\n" for i in range(100)) + ") -> None:\n"
        '    """Doc\n\n    more doc.\n    """\n'
        "    first = 1\n"
        "    return first\n"
    )
    (node,) = ast.parse(text).body
    assert body_lines(node) == 2
    assert long_functions("cmd.py", text) == []
    long = "def f():\n" + "    x = 1\n" * (MAX_BODY_LINES + 1)
    assert long_functions("f.py", long) == [f"f.py:1 f ({MAX_BODY_LINES + 1} lines)"]
