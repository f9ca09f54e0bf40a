"""The kit as a pytest plugin: options, exit statuses, reports, reproducibility.

Each test runs the kit in a subprocess (as its users do) against a target
started here: the faulty test master, or a silent listener.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from skyllh_cluster.conformance.report import CLAUSE_TABLE as CLAUSES  # the protocol's clauses and the TLS profile's

from kit_runs import faulty_cn_command, faulty_master, run_kit

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent


HERE = Path(__file__).resolve().parent


def _clause(report: dict, clause_id: str) -> dict:
    return next(c for c in report["clauses"] if c["id"] == clause_id)


def _pytest(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *args], capture_output=True, text=True, cwd=cwd, timeout=240)


def test_no_target_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "skyllh_cluster.conformance"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4
    assert "needs a target: --target HOST:PORT" in proc.stderr


def test_pytest_conformance_from_the_clone_needs_a_target_too() -> None:
    proc = _pytest("conformance", "-q")
    assert proc.returncode == 4
    assert "needs a target" in proc.stderr


def test_plugin_is_inert_for_other_tests(tmp_path: Path) -> None:
    (tmp_path / "test_other.py").write_text("def test_ok():\n    assert True\n")
    proc = _pytest("-q", "-p", "no:cacheprovider", str(tmp_path / "test_other.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "SkyLLH cluster conformance" not in proc.stdout


def test_disabled_plugin_is_refused_clearly() -> None:
    proc = _pytest("conformance", "-q", "-p", "no:skyllh_cluster_conformance", "--collect-only")
    assert proc.returncode == 4
    assert "plugin is disabled" in proc.stderr


def test_unreachable_target_is_a_usage_error() -> None:
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = run_kit(["--target", f"127.0.0.1:{port}"])
    assert run.status == 4
    assert "nothing accepts connections there" in run.output


def test_listen_address_in_use_is_a_configuration_error() -> None:
    with socket.socket() as taken:  # the kit cannot listen where asked: a configuration error, not a verdict
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        run = run_kit(["--cn-command", faulty_cn_command(), "--listen", f"127.0.0.1:{port}", "--conformance-clause", "CN-3"])
    assert run.status == 4
    assert "cannot listen" in run.output and "KIT ERROR" not in run.output
    assert run.report == {}


def test_kit_failure_is_not_a_verdict() -> None:
    # kit_sabotage makes the kit's own connect() raise inside one test: a bug of the kit, never a verdict.
    with faulty_master() as target:
        run = run_kit(["--target", target, "--conformance-clause", "SCN-2", "-p", "kit_sabotage"], pythonpath=HERE)
    assert run.status == 3
    assert "KIT ERROR" in run.output and "sabotaged" in run.output
    assert run.outcomes()["SCN-2"] == "skipped" and "the kit itself failed" in run.detail("SCN-2")


def test_report_lists_every_clause_and_junit_carries_clause_properties(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    with faulty_master("SCN-1") as target:
        run = run_kit(["--target", target, "--conformance-clause", "SCN-1,MST-6", "--junitxml", str(junit)])
    assert run.status == 1
    report = run.report
    assert set(report) == {"schema", "kit", "target", "modes", "strict", "started", "duration_s", "interrupted",
                           "exit_status", "summary", "clauses"}
    assert report["schema"] == 2 and report["target"] == target and report["modes"] == ["master"]
    assert report["exit_status"] == 1 and report["interrupted"] is False and report["strict"] is False
    assert report["kit"].startswith("skyllh-cluster ") and report["started"].endswith("Z") and report["duration_s"] > 0
    assert [c["id"] for c in report["clauses"]] == list(CLAUSES)
    assert sum(report["summary"].values()) == len(CLAUSES)
    for entry in report["clauses"]:
        assert set(entry) == {"id", "level", "title", "outcome", "detail", "tests"}
        assert entry["level"] == CLAUSES[entry["id"]].level.value and entry["title"] == CLAUSES[entry["id"]].title
        assert entry["outcome"] in ("passed", "failed", "inconclusive", "skipped") and entry["detail"]
    assert run.outcomes()["SCN-1"] == "failed" and run.outcomes()["MST-6"] == "passed"
    failed_test = next(t for t in _clause(report, "SCN-1")["tests"] if t["outcome"] == "failed")
    assert failed_test["nodeid"].endswith("test_scenario_messages_in_order_then_shutdown")
    entries = failed_test["transcripts"][0]["entries"]
    sent = bytes.fromhex("".join(e["hex"] for e in entries if e["direction"] == "sent"))
    assert sent[:2] == len(sent[2:]).to_bytes(2, "little")  # the whole RegisterCN frame, not cut
    assert {e["direction"] for e in entries} == {"sent", "received", "note"}
    assert "expected command 1 to be MSG(msg='conformance'), got MSG(msg='ünïcødé ✓')" in run.detail("SCN-1")
    assert run.outcomes()["FRM-2"] == "skipped" and run.detail("FRM-2").startswith("no test")
    assert run.detail("CN-1") == "not tested: needs --cn-command CMD"
    cases = ET.parse(junit).getroot().iter("testcase")
    props = [{p.get("name"): p.get("value") for p in case.iter("property")} for case in cases]
    assert props and all(p.get("clause") in ("SCN-1", "MST-6") and p.get("level") in ("MUST", "SHOULD") for p in props)


def test_should_failure_fails_only_in_strict_mode() -> None:
    with faulty_master("MST-6") as target:
        lenient = run_kit(["--target", target, "--conformance-clause", "MST-6"])
        strict = run_kit(["--target", target, "--conformance-clause", "MST-6", "--strict-conformance"])
    assert lenient.failed() == strict.failed() == {"MST-6"}
    assert (lenient.status, strict.status) == (0, 1)


def test_silent_target_stops_at_the_pre_flight() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        host, port = silent.getsockname()
        run = run_kit(["--target", f"{host}:{port}", "--conformance-timeout", "0.5"])
    assert run.status == 1
    assert "got no reply within 2.5 s" in run.detail("MST-1")  # the pre-flight waits 5 timeouts
    assert "passed" not in run.outcomes().values()
    assert f"--target {host}:{port} does not speak the SkyLLH cluster protocol" in run.output


def test_failure_is_shrunk_to_a_transcript_and_reproducible_by_seed() -> None:
    outputs = []
    with faulty_master("MST-1") as target:
        for _ in range(2):
            run = run_kit(["--target", target, "--conformance-clause", "MST-1", "--hypothesis-seed", "1234"])
            assert run.status == 1 and run.failed() == {"MST-1"}
            outputs.append(run.detail("MST-1"))
    assert outputs[0] == outputs[1]
    assert "expected an ACK to RegisterCN(now" in outputs[0]
    # The minimal failing example: the smallest live time over the fault's limit of 100000 s.
    assert outputs[0].endswith("100001), got the connection closed")


def test_failure_message_carries_the_byte_transcript() -> None:
    with faulty_master("MST-3") as target:
        run = run_kit(["--target", target, "--conformance-clause", "MST-3", "-k", "str and times"])
    assert run.status == 1
    assert "transcript first frame: RegisterCN with str times:" in run.output
    assert "-> 0000 +" in run.output and "<- 0000 +" in run.output


def test_pyargs_runs_the_installed_kit(tmp_path: Path) -> None:
    with faulty_master() as target:
        proc = _pytest("--pyargs", "skyllh_cluster.conformance", "--target", target, "--conformance-clause", "SCN-1", "-q",
                       "-p", "no:cacheprovider", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "SkyLLH cluster protocol conformance of" in proc.stdout


def test_report_is_valid_json_file(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    with faulty_master() as target:
        proc = _pytest("conformance", "--target", target, "--conformance-clause", "FRM-3", "-q",
                       "--conformance-report", str(report))
    assert proc.returncode == 0
    data = json.loads(report.read_text())
    assert next(c for c in data["clauses"] if c["id"] == "FRM-3")["outcome"] == "passed"
