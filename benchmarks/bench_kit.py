"""The conformance kit's wall time: a full run of both roles against the reference.

Starts the reference master exactly as the README does (``skyllh-cluster
master --scenario conformance --host 127.0.0.1 --port 0``, every default),
then runs ``python -m skyllh_cluster.conformance --target HOST:PORT
--cn-command <reference compute node> --strict-conformance`` with every other
default, ``--rounds`` times (default 3), and prints each run's wall time, the
kit's own per-phase durations (the slowest tests) and the median.  Exits 1
if a run does not pass, or if the median exceeds the budget of 10 s.

The figure depends on the machine's load: it is printed beside the kit's
pre-flight latency (how long the reference master took to ACK), so that a
slow run can be told from a slow kit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

from skyllh_cluster.conformance.drivers.compute_nodes import REFERENCE
from skyllh_cluster.conformance.drivers.process import MasterProcess, address_pattern

#: A full run of both roles must take at most this many seconds (median).
BUDGET = 10.0
#: A line of pytest's --durations table: "2.11s call     conformance/test_x.py::test_y".
_DURATION = re.compile(r"^\d+\.\d+s (call|setup|teardown) ")


def _master_argv() -> List[str]:
    return [sys.executable, "-m", "skyllh_cluster", "master", "--scenario", "conformance", "--host", "127.0.0.1", "--port", "0"]


def one_run() -> Tuple[float, int, List[str]]:
    """One full kit run against the reference; (seconds, exit status, slowest tests)."""
    with MasterProcess(_master_argv(), address_pattern("listening on")) as master, tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "skyllh_cluster.conformance", "--target", master.target, "--cn-command", REFERENCE,
             "--strict-conformance", "--durations=5", "-q", "--conformance-report", str(report)],
            capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        took = time.monotonic() - started
        slowest = [" ".join(line.split()[::2]) for line in proc.stdout.splitlines() if _DURATION.match(line)]
        if proc.returncode != 0:
            failed = []
            if report.exists():
                failed = [c["id"] for c in json.loads(report.read_text())["clauses"] if c["outcome"] in ("failed", "inconclusive")]
            print(f"  run exit {proc.returncode}; not passed: {failed}\n{proc.stdout[-2000:]}{proc.stderr[-1000:]}")
        return took, proc.returncode, slowest


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    times: List[float] = []
    status = 0
    for n in range(args.rounds):
        took, code, slowest = one_run()
        times.append(took)
        status |= int(code != 0)
        print(f"  run {n + 1}: {took:.1f} s, exit {code}; slowest: {'; '.join(slowest[:3])}", flush=True)
    median = statistics.median(times)
    verdict = "within" if median <= BUDGET else "OVER"
    print(f"kit, both roles against the reference, every default, strict: median {median:.1f} s "
          f"over {len(times)} runs ({verdict} the {BUDGET:g} s budget)")
    return 1 if status or median > BUDGET else 0


if __name__ == "__main__":
    sys.exit(main())
