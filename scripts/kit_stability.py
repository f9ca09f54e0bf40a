"""The kit's verdicts on the ORIGINAL (skyllh==24.1.0) must not depend on the machine's load.

    .venv/bin/python scripts/kit_stability.py [--runs 10] [--burners 1] [--role both]

Runs the kit, strict, against the original master (through
``skyllh_cluster.conformance.drivers.original_master``) and against the
original compute node, ``--runs`` times in a row for each role (default 10;
the two roles side by side), with ``--burners`` CPU burners running beside
(default 1: a ``python3 -c 'while 1: pass'`` process, started here and
killed by its pid at the end).  Prints each run's verdict set (the failed
clauses, and any clause that is inconclusive) and exits 1 if any run of a
role gives a different outcome for any clause than the role's first run,
or if a run's exit status differs; 0 when every run agrees.

It also prints how many clauses each role fails, for comparison with the
known defects of the original (tests/test_kit_targets.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from skyllh_cluster.conformance.drivers.compute_nodes import ORIGINAL
from skyllh_cluster.conformance.drivers.original_master import original_master

#: A kit run that takes longer than this is a hang, not a verdict.
RUN_TIMEOUT = 600


def kit_run(args: List[str]) -> Tuple[int, Dict[str, str], Dict[str, str], float]:
    """One strict kit run; (exit status, clause -> outcome, clause -> detail, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "skyllh_cluster.conformance", "-q", "--strict-conformance",
             "--conformance-report", str(report), *args],
            capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )
        took = time.monotonic() - started
        if not report.exists():
            return proc.returncode, {}, {"kit": (proc.stdout + proc.stderr)[-300:]}, took
        clauses = json.loads(report.read_text())["clauses"]
    return proc.returncode, {c["id"]: c["outcome"] for c in clauses}, {c["id"]: c["detail"] for c in clauses}, took


def role_runs(role: str, runs: int, out: List[Tuple[int, Dict[str, str], Dict[str, str], float]]) -> None:
    """``runs`` kit runs of one role in a row, appended to ``out``."""
    for n in range(runs):
        if role == "master":
            with original_master() as master:
                result = kit_run(["--target", master.target])
        else:
            result = kit_run(["--cn-command", ORIGINAL])
        out.append(result)
        status, outcomes, _, took = result
        print(f"  {role} run {n + 1}: exit {status}, {took:.0f} s: {describe(outcomes)}", flush=True)


def describe(outcomes: Dict[str, str]) -> str:
    failed = sorted(c for c, o in outcomes.items() if o == "failed")
    unsure = sorted(c for c, o in outcomes.items() if o == "inconclusive")
    text = f"{len(failed)} failed {{{', '.join(failed)}}}"
    return text + (f", inconclusive {{{', '.join(unsure)}}}" if unsure else "")


def differences(results: List[Tuple[int, Dict[str, str], Dict[str, str], float]]) -> List[str]:
    """Each way a run differs from the first run of its role."""
    first_status, first, _, _ = results[0]
    found = []
    for n, (status, outcomes, details, _) in enumerate(results[1:], start=2):
        if status != first_status:
            found.append(f"run {n}: exit {status}, run 1: exit {first_status}")
        for clause in sorted(set(first) | set(outcomes)):
            if outcomes.get(clause) != first.get(clause):
                found.append(f"run {n}: {clause} {outcomes.get(clause)} (run 1: {first.get(clause)}): "
                             f"{details.get(clause, '')[:200]}")
    return found


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="kit runs per role (default 10)")
    parser.add_argument("--burners", type=int, default=1, help="CPU burner processes beside the kit (default 1)")
    parser.add_argument("--role", choices=["master", "cn", "both"], default="both")
    args = parser.parse_args(argv)
    roles = ["master", "cn"] if args.role == "both" else [args.role]
    burners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.burners)]
    results: Dict[str, List[Tuple[int, Dict[str, str], Dict[str, str], float]]] = {role: [] for role in roles}
    try:
        threads = [threading.Thread(target=role_runs, args=(role, args.runs, results[role])) for role in roles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(10)
    status = 0
    for role in roles:
        runs = results[role]
        if len(runs) != args.runs:
            print(f"{role}: only {len(runs)} of {args.runs} runs finished")
            status = 1
            continue
        found = differences(runs)
        seconds = sorted(r[3] for r in runs)
        verdict = "the same verdicts in every run" if not found else f"{len(found)} differences"
        print(f"{role}: {args.runs} runs with {args.burners} CPU burner(s) beside, {seconds[0]:.0f}-{seconds[-1]:.0f} s "
              f"each: {verdict}; {describe(runs[0][1])}")
        for line in found:
            print(f"    {line}")
        status |= int(bool(found))
    return status


if __name__ == "__main__":
    sys.exit(main())
