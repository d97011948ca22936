"""Small files on one topic, short functions: no file over 400 lines and no function over 60 lines
in ``seg/`` and ``export/`` (the design guide's aim; a test so it stays true)."""

from __future__ import annotations

import ast

from .import_graph import modules

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_no_file_over_400_lines() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert long == {}, f"split these modules (lines): {long}"


def test_no_function_over_60_lines() -> None:
    long = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = length
    assert long == {}, f"split these functions (lines, docstring included): {long}"
