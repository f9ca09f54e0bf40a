"""The kit catches every fault: one injected fault per clause, and the clause's test fails.

For every clause that has a kit test, in each mode where it has one, the
faulty master or compute node (tests/kit_targets/) is run with exactly that
fault, and the kit, restricted to that clause's tests, must report the
clause as failed and exit 1.  The set of clauses with a kit test must equal
the set covered by fault injection, and together with the clauses listed as
not observable it must be the whole clause table.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import pytest

from skyllh_cluster.clauses import CLAUSES
from skyllh_cluster.conformance.untested import NOT_ON_THE_WIRE

from kit_runs import KitRun, clauses_with_kit_tests, faulty_cn_command, faulty_master, run_kit
from kit_targets.faulty_cn import FAULTS as CN_FAULTS
from kit_targets.faulty_master import FAULTS as MASTER_FAULTS

pytestmark = pytest.mark.timeout(600)


def test_every_clause_is_tested_or_listed_as_not_observable() -> None:
    tested = set(clauses_with_kit_tests())
    assert tested | set(NOT_ON_THE_WIRE) == set(CLAUSES)
    assert not tested & set(NOT_ON_THE_WIRE), "a clause with a test is also listed as untestable"


def test_fault_injection_covers_every_tested_clause_in_every_mode() -> None:
    by_mode = clauses_with_kit_tests()
    master = {c for c, modes in by_mode.items() if "master" in modes}
    cn = {c for c, modes in by_mode.items() if "cn" in modes}
    assert master == set(MASTER_FAULTS)
    assert cn == set(CN_FAULTS)


def _run_fault(mode: str, fault: str) -> Tuple[str, str, KitRun]:
    args = ["--conformance-clause", fault, "--strict-conformance", "--conformance-examples", "10"]
    if mode == "master":
        with faulty_master(fault) as target:
            return mode, fault, run_kit(["--target", target, *args])
    return mode, fault, run_kit(["--cn-command", faulty_cn_command(fault), *args])


def _failure_text(output: str) -> str:
    """The part of a kit run's output that explains it: failures and kit errors, not the table."""
    keep = [line for line in output.splitlines() if not line.startswith(("  -  ", "  ok ", "        "))]
    return "\n".join(keep)[-4000:]


def test_each_injected_fault_fails_its_clause() -> None:
    jobs = [("master", f) for f in MASTER_FAULTS] + [("cn", f) for f in CN_FAULTS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: _run_fault(*job), jobs))
    missed: List[str] = []
    for mode, fault, run in results:
        problem: Optional[str] = None
        if run.status != 1:
            problem = f"exit status {run.status}"
        elif fault not in run.failed():
            problem = f"{fault} reported {run.outcomes().get(fault)}: {run.detail(fault)}"
        if problem:
            missed.append(f"{mode} fault {fault}: {problem}\n{_failure_text(run.output)}")
    assert not missed, "\n\n".join(missed)
