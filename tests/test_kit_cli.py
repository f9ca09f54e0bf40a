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

from skyllh_cluster.conformance.report import CLAUSE_TABLE as CLAUSES  # the protocol's clauses and the TLS profile's
from skyllh_cluster.conformance.drivers.reference_master import reference_master

from kit_runs import faulty_master

pytestmark = pytest.mark.timeout(300)

KIT = [sys.executable, "-m", "skyllh_cluster.conformance"]
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}
REPO = Path(__file__).resolve().parent.parent


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
        started = time.monotonic()
        deadline = started + 120
        while time.monotonic() < deadline:  # one progress line per decided clause
            line = proc.stdout.readline()
            seen.append(f"{time.monotonic() - started:.1f} s: {line}")
            if line.startswith("✓ ") or not line:
                break
        assert any(line.split(": ", 1)[1].startswith("✓ ") for line in seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, f"SIGINT sent after:\n{''.join(seen)[-2000:]}\nthen:\n{out[-3000:]}"
    assert "INTERRUPTED" in out
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and data["exit_status"] == 2
    time.sleep(0.5)
    assert _processes_with(marker) == []


#: What pytest itself prints around a run, which the kit's console leaves out.
PYTEST_NOISE = ("test session starts", "collected ", "deselected", "conformance/test_", "[100%]", " passed in ",
                " failed in ", "short test summary", "= FAILURES =", "Traceback", "platform linux", "rootdir:")


def _noise(text: str) -> List[str]:
    return [word for word in PYTEST_NOISE if word in text]


def test_default_output_is_progress_lines_then_table_then_verdict() -> None:
    # Two tests of MST-3 (chosen by -k out of its twelve) fail, MST-6 passes: the progress line of a clause
    # comes when the last of its *selected* tests is done.
    selection = ["--conformance-clause", "MST-3,MST-6", "-k", "str and times or shutdown"]
    with faulty_master("MST-3") as target:
        kit = _kit("--target", target, *selection)
        plain_pytest = subprocess.run([sys.executable, "-m", "pytest", "conformance", "--target", target, *selection],
                                      capture_output=True, text=True, timeout=120, env=ENV, cwd=REPO)
        quiet = _kit("--target", target, "-q", *selection)
        verbose = _kit("--target", target, "-v", *selection)
    for proc in (kit, plain_pytest):
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert _noise(proc.stdout) == [], proc.stdout
        lines = proc.stdout.strip().splitlines()
        assert lines[0].split()[:4] == ["×", "MST-3", "MUST", "failed"], lines[:3]
        progress = lines[: lines.index("")]
        assert [line.split()[:4] for line in progress if not line.startswith(" ")] == [
            ["×", "MST-3", "MUST", "failed"], ["✓", "MST-6", "SHOULD", "passed"]]
        # under the failed clause: the evidence, where to read the clause and the bytes that show it
        assert "-> expected no reply to a first frame that is" in progress[1]
        assert "read the clause: spec/protocol.md#mst-3" in progress[2]
        assert any(line.strip().startswith("-> 0000 +") for line in progress)
        assert any(line.strip().startswith("<- 0000 +") for line in progress)
        table = lines[len(progress) + 1:]
        assert table[0] == f"SkyLLH cluster protocol conformance of {target}"
        assert table[-1] == "verdict: DOES NOT CONFORM: MST-3 failed (exit status 1)"
        assert table[-3].startswith(f"{len(CLAUSES)} clauses: 1 passed, 1 failed")
    # -q: no progress lines, only the table and the verdict
    assert quiet.returncode == 1 and _noise(quiet.stdout) == [], quiet.stdout
    assert quiet.stdout.strip().splitlines()[0].startswith("SkyLLH cluster protocol conformance of")
    assert quiet.stdout.strip().splitlines()[-1].startswith("verdict: DOES NOT CONFORM")
    # -v: pytest's own report is back, beside the kit's lines
    assert verbose.returncode == 1
    assert "test session starts" in verbose.stdout and "= FAILURES =" in verbose.stdout
    assert "×  MST-3" in verbose.stdout and "verdict: DOES NOT CONFORM" in verbose.stdout


def test_tb_option_brings_back_the_failed_tests_tracebacks() -> None:
    with faulty_master("MST-3") as target:
        proc = _kit("--target", target, "--conformance-clause", "MST-3", "-k", "str and times", "--tb=short")
    assert proc.returncode == 1
    assert "= FAILURES =" in proc.stdout and "test session starts" not in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("verdict: DOES NOT CONFORM")


def test_ctrl_c_while_the_sessions_start_still_says_interrupted() -> None:
    # SIGINT before a session could write its report (still starting up): the run still
    # ends as interrupted, with what was decided or a line saying nothing was.
    node = f"{sys.executable} -m skyllh_cluster.compute_node {{host}} {{port}} --live-time {{live_time}}"
    with reference_master() as master:
        proc = subprocess.Popen([*KIT, "--target", master.target, "--cn-command", node],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-3000:]
    assert "INTERRUPTED" in out, out[-3000:]
