"""Running the conformance kit from the self-tests: one kit session per subprocess.

Every run writes the JSON report, and the self-tests judge the report and
the exit status, exactly as a user of the kit would.  Targets are started
here and stopped by pid when the run ends.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from skyllh_cluster.conformance.drivers.process import MasterProcess, address_pattern

HERE = Path(__file__).resolve().parent
FAULTY_MASTER = HERE / "kit_targets" / "faulty_master.py"
FAULTY_CN = HERE / "kit_targets" / "faulty_cn.py"

#: A kit run may take this long before the self-test gives up on it.
RUN_TIMEOUT = 480


@dataclass
class KitRun:
    """The outcome of one kit session."""

    status: int
    report: Dict
    output: str

    def outcomes(self) -> Dict[str, str]:
        """Clause ID -> passed / failed / inconclusive / skipped."""
        return {c["id"]: c["outcome"] for c in self.report.get("clauses", [])}

    def failed(self) -> set:
        return {cid for cid, outcome in self.outcomes().items() if outcome == "failed"}

    def detail(self, clause_id: str) -> str:
        return next(c["detail"] for c in self.report["clauses"] if c["id"] == clause_id)


def run_kit(
    args: Sequence[str], timeout: float = RUN_TIMEOUT, *, pythonpath: Optional[Path] = None,
    env_extra: Optional[Dict[str, str]] = None,
) -> KitRun:
    """Run ``python -m skyllh_cluster.conformance ARGS`` with a JSON report; return the result.

    ``pythonpath`` is put on ``PYTHONPATH`` (for ``-p`` plugins of the self-tests);
    ``env_extra`` is added to the environment.
    """
    env = {**_env(), **(env_extra or {})}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        proc = subprocess.run(
            [sys.executable, "-m", "skyllh_cluster.conformance", "-q", "--tb=short", "-p", "no:randomly",
             "--conformance-report", str(report_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return KitRun(proc.returncode, report, proc.stdout + proc.stderr)


@contextmanager
def faulty_master(fault: Optional[str] = None, write_mode: str = "normal", extra: Sequence[str] = ()) -> Iterator[str]:
    """Run the faulty master (with ``extra`` arguments, e.g. its TLS files); yield its ``HOST:PORT``."""
    argv = [sys.executable, str(FAULTY_MASTER), "--write-mode", write_mode, *extra]
    if fault:
        argv += ["--fault", fault]
    with MasterProcess(argv, address_pattern("listening on")) as master:
        yield master.target


def faulty_cn_command(fault: Optional[str] = None, write_mode: str = "normal", extra: Sequence[str] = ()) -> str:
    """The ``--cn-command`` template of the faulty compute node (with ``extra`` arguments, e.g. its TLS files)."""
    words = [sys.executable, str(FAULTY_CN), "{host}", "{port}", "--live-time", "{live_time}", "--write-mode", write_mode, *extra]
    if fault:
        words += ["--fault", fault]
    return " ".join(shlex.quote(w) if "{" not in w else w for w in words)


def clauses_with_kit_tests() -> Dict[str, List[str]]:
    """Clause ID -> the kit's modes ("master", "cn") that have a test for it, from a collect-only run."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly",
             "--pyargs", "skyllh_cluster.conformance", "--target", "127.0.0.1:9", "--cn-command", "true",
             "--junitxml", str(Path(tmp) / "j.xml"), "-p", "kit_collect_probe"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp,
            env={**_env(), "PYTHONPATH": str(HERE)},
        )
        found = Path(tmp) / "clauses.json"
        if not found.exists():
            raise AssertionError(f"collect-only run wrote no clause list:\n{proc.stdout}\n{proc.stderr}")
        return json.loads(found.read_text())


def _env() -> Dict[str, str]:
    import os

    return dict(os.environ)
