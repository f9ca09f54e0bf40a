"""The kit catches every fault: one injected fault per clause, and the clause's test fails.

For every clause that has a kit test, in each mode where it has one, the
faulty master or compute node (tests/kit_targets/) is run with exactly that
fault, and the kit, restricted to that clause's tests, must report the
clause as failed and exit 1.  The set of clauses with a kit test must equal
the set covered by fault injection, and together with the clauses listed as
not observable it must be the whole clause table (the kit's: the protocol's
clauses and the TLS profile's).  The TLS profile's faults need a target and a
kit in TLS mode: tests/test_kit_tls.py runs them.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import pytest

from skyllh_cluster.conformance.report import CLAUSE_TABLE as CLAUSES
from skyllh_cluster.conformance.untested import NOT_ON_THE_WIRE

from kit_runs import KitRun, clauses_with_kit_tests, faulty_cn_command, faulty_master, run_kit
from kit_targets.faulty_cn import EXTRA_FAULTS as CN_EXTRA_FAULTS
from kit_targets.faulty_cn import FAULTS as CN_FAULTS
from kit_targets.faulty_master import EXTRA_FAULTS as MASTER_EXTRA_FAULTS
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


def _clause_of(fault: str) -> str:
    return fault.split("/", 1)[0]


def _run_fault(mode: str, fault: str) -> KitRun:
    args = ["--conformance-clause", _clause_of(fault), "--strict-conformance", "--conformance-examples", "10"]
    if mode == "master":
        with faulty_master(fault) as target:
            return run_kit(["--target", target, *args])
    return run_kit(["--cn-command", faulty_cn_command(fault), *args])


def _failure_text(output: str) -> str:
    """The part of a kit run's output that explains it: failures and kit errors, not the table."""
    keep = [line for line in output.splitlines() if not line.startswith(("  -  ", "  ok ", "        "))]
    return "\n".join(keep)[-4000:]


def _plain(fault: str) -> bool:
    """The TLS profile's faults need a target and a kit in TLS mode: tests/test_kit_tls.py runs them."""
    return not fault.startswith("TLS-")


JOBS: List[Tuple[str, str]] = (
    [("master", f) for f in [*MASTER_FAULTS, *MASTER_EXTRA_FAULTS] if _plain(f)]
    + [("cn", f) for f in [*CN_FAULTS, *CN_EXTRA_FAULTS] if _plain(f)]
)
_RUNS: Dict[Tuple[str, str], "Future[KitRun]"] = {}
_POOL: List[ThreadPoolExecutor] = []


@pytest.fixture(scope="module")
def fault_runs(request: pytest.FixtureRequest) -> Dict[Tuple[str, str], "Future[KitRun]"]:
    """The kit runs of the selected fault tests, started at once, two at a time, in test order."""
    selected = [
        item.callspec.params["job"]
        for item in request.session.items
        if getattr(item, "callspec", None) is not None and "job" in item.callspec.params
    ]
    pool = ThreadPoolExecutor(max_workers=2)
    _POOL.append(pool)
    for each in selected:
        _RUNS[each] = pool.submit(_run_fault, *each)
    return _RUNS


def teardown_module() -> None:
    for pool in _POOL:
        for future in _RUNS.values():
            future.cancel()
        pool.shutdown(wait=True)


def test_extra_faults_name_clauses_with_a_first_fault() -> None:
    assert {_clause_of(f) for f in MASTER_EXTRA_FAULTS} <= set(MASTER_FAULTS)
    assert {_clause_of(f) for f in CN_EXTRA_FAULTS} <= set(CN_FAULTS)
    assert all(_clause_of(name) == clause for name, (clause, _) in {**MASTER_EXTRA_FAULTS, **CN_EXTRA_FAULTS}.items())


@pytest.mark.parametrize("job", JOBS, ids=[f"{mode}-{fault}" for mode, fault in JOBS])
def test_injected_fault_fails_its_clause(job: Tuple[str, str], fault_runs: Dict[Tuple[str, str], "Future[KitRun]"]) -> None:
    mode, fault = job
    run = fault_runs[job].result()
    clause = _clause_of(fault)
    problem: Optional[str] = None
    if run.status != 1:
        problem = f"exit status {run.status}"
    elif clause not in run.failed():
        problem = f"{clause} reported {run.outcomes().get(clause)}: {run.detail(clause)}"
    assert problem is None, f"{mode} fault {fault}: {problem}\n{_failure_text(run.output)}"
