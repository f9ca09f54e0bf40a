"""The layers contract (pyproject.toml, [tool.importlinter]) holds: `lint-imports` finds nothing.

The kit's source lives in conformance/ but is installed as skyllh_cluster.conformance;
import-linter reads the package from one directory, so the test lays out a copy of
the installed tree (reference/skyllh_cluster with conformance/ inside it) and runs
lint-imports on that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
