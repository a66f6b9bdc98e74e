"""No function in mbbench/ is longer than 60 lines (the brief's rule: short functions, one concept each).

Every module is read with `ast`; a function's length runs from its `def` line to its last line, docstring and nested
functions included. The rule holds in every module, records/ and report/ included (issue 33).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mbbench"
MAX_LINES = 60


def long_functions(source: str, name: str, limit: int = MAX_LINES) -> list[str]:
    """'name:line function (N lines)' for every function of `source` longer than `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def checked_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_function_is_longer_than_sixty_lines():
    found = [long for path in checked_files()
             for long in long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert not found, "functions over 60 lines:\n" + "\n".join(found)


def test_every_package_is_checked():
    checked = {path.relative_to(PACKAGE).parts[0] for path in checked_files()}
    assert {"runner.py", "plan.py", "loading.py", "bench", "engines", "models", "commands", "records",
            "report"} <= checked


def test_the_rule_counts_docstrings_and_nested_functions():
    body = "\n".join(f"    x{i} = {i}" for i in range(57))
    source = f'def f():\n    """Doc."""\n    def g():\n        pass\n{body}\n'
    assert long_functions(source, "m") == ["m:1 f (61 lines)"]
    assert long_functions(source, "m", limit=61) == []
