"""A pytest plugin for the self-tests: write clauses.json, the kit's clause markers by mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Set

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    found: Dict[str, Set[str]] = {}
    for item in session.items:
        marker = item.get_closest_marker("clause")
        if marker is None:
            continue
        name = Path(str(item.path)).name
        mode = "master" if name.startswith("test_master_") else "cn"
        found.setdefault(marker.args[0], set()).add(mode)
    Path("clauses.json").write_text(json.dumps({k: sorted(v) for k, v in found.items()}))
