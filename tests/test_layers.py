"""The layers contract (pyproject.toml, [tool.importlinter]) holds: `lint-imports` finds nothing;
and no function in reference/ is longer than 80 lines, tables of data not counted.

The kit's source lives in conformance/ but is installed as skyllh_cluster.conformance;
import-linter reads the package from one directory, so the test lays out a copy of
the installed tree (reference/skyllh_cluster with conformance/ inside it) and runs
lint-imports on that.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")


def test_lint_imports_finds_no_broken_layer(tmp_path: Path) -> None:
    package = tmp_path / "skyllh_cluster"
    shutil.copytree(ROOT / "reference" / "skyllh_cluster", package, ignore=IGNORE)
    shutil.copytree(ROOT / "conformance", package / "conformance", ignore=IGNORE)
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


# --- function length -----------------------------------------------------------------

#: The longest a function in reference/ may be, in lines, not counting tables of data.
MAX_FUNCTION_LINES = 80


def _is_data(node: ast.AST) -> bool:
    """A literal made of constants only (a str, or a list, tuple, set or dict of them): a table."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_data(item) for item in node.elts)
    if isinstance(node, ast.Dict):
        return all(key is not None and _is_data(key) and _is_data(value) for key, value in zip(node.keys, node.values))
    return False


def code_lines(function: ast.AST) -> int:
    """The lines of ``function``, less those that only continue a table of data (its first line counts)."""
    lines = set(range(function.lineno, function.end_lineno + 1))  # type: ignore[attr-defined]
    for node in ast.walk(function):
        if node is not function and _is_data(node) and node.end_lineno > node.lineno:  # type: ignore[attr-defined]
            lines -= set(range(node.lineno + 1, node.end_lineno + 1))  # type: ignore[attr-defined]
    return len(lines)


def long_functions(root: Path) -> List[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node) > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({code_lines(node)} lines)")
    return found


def test_no_function_in_reference_is_longer_than_80_lines() -> None:
    assert long_functions(ROOT / "reference") == []


def test_the_length_check_counts_code_and_not_tables(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    table = "    return [\n" + "".join(f"        {i},\n" for i in range(200)) + "    ]"
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "table.py").write_text(f"def table():\n{table}\n")
    (tmp_path / "short.py").write_text(f"def short():\n{body[: body.rfind(chr(10))]}\n")
    found = long_functions(tmp_path)
    assert len(found) == 1 and " long " in found[0]
