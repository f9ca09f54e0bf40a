"""Smoke test of benchmarks/bench_master.py with a few nodes (timing is not judged here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from master_peers import subprocess_env

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_master.py"


def test_the_master_benchmark_runs_and_reports_every_figure():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--nodes", "40", "--big", "60", "--rounds", "1", "--broadcasts", "2"],
        capture_output=True,
        encoding="utf-8",
        env=subprocess_env(),
        timeout=240,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: a ratio was missed, which tiny runs may do
    out = done.stdout
    assert re.search(r"register 40 nodes \(ms\) +[\d.]+ +[\d.]+ +[\d.]+ +<= 1\.00", out)
    assert re.search(r"MSG of 100 chars to 40 nodes, latency \(ms\) +[\d.]+ +[\d.]+ +[\d.]+ +<= 0\.50", out)
    assert re.search(r"load generator CPU: registration / MSG \(ms\) +\d+ / +\d+ +\d+ / +\d+", out)
    assert re.search(r"master CPU: registration / MSG \(ms\) +\d+ / +\d+ +\d+ / +\d+", out)
    assert re.search(r"ours, register 60 nodes \(ms\) +[\d.]+", out)
    assert re.search(r"memory per node, registered \(bytes, tracemalloc\) +\d+ +\d+", out)
    before, after = re.search(r"open fds before / after shutdown +(\d+) / (\d+)", out).groups()
    assert before == after
    missed = [line for line in out.splitlines() if line.startswith("REQUIREMENT NOT MET")]
    assert (done.returncode == 1) == bool(missed)
