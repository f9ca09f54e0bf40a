"""The kit against real implementations: the reference, the original, and unusual writers.

* The reference master and compute node pass in strict mode.
* The original (skyllh==24.1.0) is run to the end and the kit reports exactly
  its known defects, no more and no fewer (see spec/deviations.md).
* Correct but unusual implementations pass: everything in one write, or one
  byte per write.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from skyllh_cluster.conformance.drivers.compute_nodes import ORIGINAL, REFERENCE
from skyllh_cluster.conformance.drivers.original_master import original_master
from skyllh_cluster.conformance.drivers.reference_master import reference_master
from skyllh_cluster.conformance.untested import NOT_ON_THE_WIRE

from kit_runs import KitRun, faulty_cn_command, faulty_master, run_kit

pytestmark = pytest.mark.timeout(600)

#: The original master's real defects, as the kit reports them (spec/deviations.md).
ORIGINAL_MASTER_FAILS = {
    "SEC-1",  # it gives the first frame to pickle.loads: the canary connects back
    "ENC-5",  # a call hidden inside a RegisterCN is run too
    "MST-3",  # RegisterCN with str/float/bool times, extra keys, deep nesting, protocol 0: ACKed
    "MST-4",  # a connection stalled before or in its first frame blocks every other node
    "ERR-1",  # a bad first frame aborts the registration: the next node in the queue is reset
    "SCN-2",  # it stops listening while it serves a node: the next node in the queue is reset
    "FRM-6",  # SHOULD: no limit on the wait for the rest of a frame
    "MST-7",  # SHOULD: no registration timeout
    "MST-9",  # SHOULD: the registered live time is ignored
    "MST-10",  # SHOULD: one node at a time
    "MST-11",  # bytes written together with the RegisterCN are ignored: the node is ACKed
    "ENC-1",  # nothing received is checked: a RegisterCN with bytes after STOP is ACKed
    "ENC-2",  # ... one written with the INT opcode
    "ENC-6",  # ... one nested 300 lists deep
    "CMD-3",  # ... one with float or bool times, extra keys
}

#: The original compute node's real defects.
ORIGINAL_CN_FAILS = {
    "SEC-1",  # every frame goes to pickle.loads: the canary connects back, as ACK and as MSG
    "ENC-5",  # a call hidden inside a MSG value is run
    "CN-10",  # the live time is checked only after a frame arrives: a silent master keeps it forever
    "CN-9",  # SHOULD: an undecodable frame kills it (exit 1)
    "CN-4",  # an ACK with a byte after STOP is taken as the ACK
    "CN-11",  # 10**5000 as a MSG value kills it (str() of the int), before a value is printed
    "SCN-3",  # prints the legacy `Received general message: ...` lines, not `MSG <json>`
    "ENC-1",  # nothing received is checked: it obeys a ShutdownCN with a byte after STOP
    "ENC-2",  # ... a ShutdownCN made with INST
    "ENC-4",  # ... a ShutdownCN that stores BINPUT over an index in use
    "CMD-1",  # ... a ShutdownCN made with NEWOBJ and (1,)
    "CMD-2",  # ... a ShutdownCN with a state
    "CMD-4",  # a MSG whose state has an extra key is taken (its value printed)
}


def _strict(run: KitRun) -> None:
    assert run.status == 0 and not run.failed(), f"failed: {sorted(run.failed())}\n{run.output[-4000:]}"


def test_reference_master_and_compute_node_pass_in_strict_mode() -> None:
    with reference_master() as master:
        run = run_kit(["--target", master.target, "--cn-command", REFERENCE, "--strict-conformance"])
    _strict(run)
    outcomes = run.outcomes()
    assert run.report["target"] == f"{master.target} + {REFERENCE}"
    assert {o for o in outcomes.values()} <= {"passed", "skipped"}
    # only the clauses not observable on the wire are skipped
    assert sum(1 for o in outcomes.values() if o == "passed") == len(outcomes) - len(NOT_ON_THE_WIRE)


@pytest.mark.interop
def test_original_master_reports_exactly_its_defects() -> None:
    with original_master() as master:
        run = run_kit(["--target", master.target])
    assert run.status == 1, run.output[-3000:]
    assert run.failed() == ORIGINAL_MASTER_FAILS, run.output[-6000:]
    assert "canary listener" in run.detail("SEC-1")


@pytest.mark.interop
def test_original_compute_node_reports_exactly_its_defects() -> None:
    run = run_kit(["--cn-command", ORIGINAL])
    assert run.status == 1, run.output[-3000:]
    assert run.failed() == ORIGINAL_CN_FAILS, run.output[-6000:]
    assert "canary listener" in run.detail("SEC-1")


#: Byte-by-byte writing of the 61 KB scenario is slow; these clauses read it whole.
SCENARIO_CLAUSES = "FRM-1,FRM-3,ENC-1,ENC-7,MST-2,MST-5,MST-6,SCN-1,VAL-4"


def _unusual(job: str) -> KitRun:
    if job == "master single-write":
        with faulty_master(write_mode="single-write") as target:
            return run_kit(["--target", target, "--strict-conformance"])
    if job == "master byte-by-byte":
        with faulty_master(write_mode="byte-by-byte") as target:
            return run_kit(["--target", target, "--strict-conformance", "--conformance-clause", SCENARIO_CLAUSES])
    return run_kit(["--cn-command", faulty_cn_command(write_mode="byte-by-byte"), "--strict-conformance"])


def test_unusual_but_correct_writers_pass() -> None:
    jobs = ["master single-write", "master byte-by-byte", "compute node byte-by-byte"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(jobs, pool.map(_unusual, jobs)))
    for job, run in runs.items():
        assert run.status == 0 and not run.failed(), f"{job}: {sorted(run.failed())}\n{run.output[-4000:]}"
