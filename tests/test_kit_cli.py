"""``python -m skyllh_cluster.conformance`` as a person meets it: help, typos, --list, --explain, progress, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import List

import pytest

from skyllh_cluster.clauses import CLAUSES
from skyllh_cluster.conformance.drivers.reference_master import reference_master

pytestmark = pytest.mark.timeout(300)

KIT = [sys.executable, "-m", "skyllh_cluster.conformance"]
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


def _kit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KIT, *args], capture_output=True, text=True, timeout=120, env=ENV)


def test_help_shows_the_kit_only_on_one_screen() -> None:
    proc = _kit("--help")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) <= 60, len(lines)
    for option in ("--target", "--cn-command", "--strict-conformance", "--list", "--explain", "--help-pytest"):
        assert option in proc.stdout
    for code in range(6):
        assert any(line.startswith(f"  {code}  ") for line in lines), code
    assert proc.stdout.count("python -m skyllh_cluster.conformance --") >= 2  # two examples
    assert "--junit-xml" not in proc.stdout and "pytest.main()" not in proc.stdout


def test_help_pytest_shows_pytest_options() -> None:
    proc = _kit("--help-pytest")
    assert proc.returncode == 0 and "--junit-xml" in proc.stdout


def test_mistyped_option_gets_did_you_mean() -> None:
    proc = _kit("--taget", "127.0.0.1:9999")
    assert proc.returncode == 4
    assert "did you mean --target?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_list_names_clauses_and_tests_without_touching_a_target() -> None:
    started = time.monotonic()
    proc = _kit("--list", "--target", "127.0.0.1:9")  # nothing listens there: --list must not connect
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "clauses and tests for master mode" in proc.stdout
    assert "test_master_registration.py::test_silent_connection_is_closed_in_time" in proc.stdout
    assert "test_cn_" not in proc.stdout
    assert all(cid in proc.stdout for cid in CLAUSES)
    assert time.monotonic() - started < 60


def test_explain_prints_the_clause_and_where_to_read_it() -> None:
    proc = _kit("--explain", "mst-7")
    assert proc.returncode == 0
    assert "MST-7" in proc.stdout and "read it in:" in proc.stdout
    unknown = _kit("--explain", "MST-77")
    assert unknown.returncode == 4 and "no clause" in unknown.stderr


def _processes_with(marker: str) -> List[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_progress_lines_then_ctrl_c_gives_a_partial_table_and_leaves_nothing_running(tmp_path: Path) -> None:
    marker = f"SKYLLH_KIT_SIGINT_{uuid.uuid4().hex}"
    node = f"env {marker}=1 {sys.executable} -m skyllh_cluster.compute_node {{host}} {{port}} --live-time {{live_time}}"
    report = tmp_path / "r.json"
    with reference_master() as master:
        proc = subprocess.Popen(
            [*KIT, "--target", master.target, "--cn-command", node, "--conformance-report", str(report)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
        )
        assert proc.stdout is not None
        seen: List[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # one progress line per decided clause
            line = proc.stdout.readline()
            seen.append(line)
            if line.startswith("✓ ") or not line:
                break
        assert any(line.startswith("✓ ") for line in seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-3000:]
    assert "INTERRUPTED" in out
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and data["exit_status"] == 2
    time.sleep(0.5)
    assert _processes_with(marker) == []
