"""Smoke test of benchmarks/bench_tls.py with a few nodes (timing is not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from master_peers import subprocess_env

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tls.py"
FIGURES = {
    "registration_s",
    "registration_master_cpu_s",
    "generator_cpu_to_registration_s",
    "broadcast_ms",
    "broadcast_master_cpu_ms",
}

tls_certs = pytest.importorskip("tls_certs")


@pytest.mark.skipif(tls_certs.OPENSSL is None, reason="the openssl command is not installed")
def test_the_tls_benchmark_runs_both_modes_and_reports_every_figure_and_ratio():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--nodes", "30", "--json"],
        capture_output=True,
        encoding="utf-8",
        env=subprocess_env(),
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["nodes"] == 30
    for mode in ("plain", "tls", "tls_over_plain"):
        assert set(figures[mode]) == FIGURES, mode
        assert all(value > 0 for value in figures[mode].values()), figures[mode]
