"""Compute-node mode: the registration and a well-behaved scenario (``node_run``).

One node is started and played through the scenario once per run; each test
here asks that run its own clause's question.
"""

from __future__ import annotations

import math

import pytest

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import RegisterCN

from skyllh_cluster.conformance.failures import Inconclusive
from skyllh_cluster.conformance.node_output import judge_output, mixed_forms
from skyllh_cluster.conformance.scenario_checks import NodeRun
from skyllh_cluster.scenario import SCENARIO_PAYLOADS

#: How far, in seconds, cn_start_time may be from the kit's clock (CN-2): the
#: node truncates to whole seconds, and its clock and start-up take a moment.
START_TIME_TOLERANCE = 2


def _registration(node_run: NodeRun) -> RegisterCN:
    command = node_run.require_registration().command
    assert isinstance(command, RegisterCN)
    return command


@pytest.mark.clause("CN-1")
def test_registers_first(node_run: NodeRun) -> None:
    """The node's first frame, sent without waiting for the kit, is a RegisterCN."""
    _registration(node_run)


@pytest.mark.parametrize(
    "clause_id",
    [pytest.param(c, marks=pytest.mark.clause(c), id=c) for c in ("FRM-1", "ENC-1", "ENC-2", "ENC-3", "ENC-4", "CMD-1", "CMD-3")],
)
def test_registration_passes_the_grammar(node_run: NodeRun, clause_id: str) -> None:
    """The RegisterCN frame meets this clause of the framing and the grammar."""
    failure = node_run.failure if node_run.registration is None else None
    if failure is not None and failure.clause == clause_id:
        raise failure.about(clause_id)
    _registration(node_run)


@pytest.mark.clause("FRM-3")
def test_no_empty_frame(node_run: NodeRun) -> None:
    """The node sends no empty frame."""
    failure = node_run.failure if node_run.registration is None else None
    if failure is not None and failure.clause == "FRM-3":
        raise failure
    frames = [node_run.require_registration(), *node_run.later_frames]
    empty = [f for f in frames if not f.payload]
    if empty:
        raise node_run.fail(f"expected no empty frame, got one at stream offset {empty[0].offset}")


@pytest.mark.clause("ENC-7")
def test_registration_is_canonical(node_run: NodeRun) -> None:
    """The RegisterCN payload is the canonical encoding (pickle protocol 4 as CPython writes it)."""
    frame = node_run.require_registration()
    assert frame.command is not None
    canonical = dumps(frame.command)
    if frame.payload != canonical:
        raise node_run.fail(f"expected the canonical payload {canonical.hex()}, got {frame.payload.hex()}")


@pytest.mark.clause("CN-2")
def test_start_time_is_now(node_run: NodeRun) -> None:
    """cn_start_time is the node's start, in whole Unix seconds (within 2 s of the kit's clock)."""
    start = _registration(node_run).cn_start_time
    earliest = math.floor(node_run.launched_at) - START_TIME_TOLERANCE
    latest = math.ceil(node_run.registered_at) + START_TIME_TOLERANCE
    if not earliest <= start <= latest:
        raise node_run.fail(
            f"expected cn_start_time between {earliest} and {latest} (the node was started at "
            f"{node_run.launched_at:.1f}), got {start}"
        )


@pytest.mark.clause("CN-3")
def test_live_time_is_the_configured_one(node_run: NodeRun) -> None:
    """cn_live_time is the live time the node was started with."""
    live = _registration(node_run).cn_live_time
    if live != node_run.live_time:
        raise node_run.fail(f"expected cn_live_time {node_run.live_time}, got {live}")


@pytest.mark.clause("CN-5")
def test_sends_nothing_after_registering(node_run: NodeRun) -> None:
    """After its RegisterCN the node sends nothing: neither before the ACK nor during the scenario."""
    node_run.require_registration()
    if node_run.early_bytes:
        raise node_run.fail(f"expected nothing before the ACK, got {len(node_run.early_bytes)} bytes: {node_run.early_bytes[:16].hex()}")
    if node_run.later_frames:
        raise node_run.fail(f"expected nothing during the scenario, got {node_run.later_frames[0].describe()}")


@pytest.mark.clause("CN-6")
def test_shutdown_closes_and_exits_zero(node_run: NodeRun) -> None:
    """On ShutdownCN (after the scenario's MSGs) the node closes the connection and exits with status 0."""
    node_run.require_registration()
    if node_run.failure is not None:
        raise node_run.failure
    if node_run.closed_after is None:
        raise node_run.fail("expected the node to close the connection after ShutdownCN, got it still open")
    if node_run.exit_status is None:
        raise node_run.fail("expected the node to exit after ShutdownCN, got it still running")
    if node_run.exit_status != 0:
        raise node_run.fail(f"expected exit status 0 after ShutdownCN, got {node_run.exit_status}")


@pytest.mark.clause("CN-7")
def test_shutdown_is_prompt(node_run: NodeRun) -> None:
    """The node closes within 2 s of the ShutdownCN's last byte."""
    node_run.require_registration()
    if node_run.closed_after is None or node_run.closed_after > 2.0:
        took = "more than 5 s" if node_run.closed_after is None else f"{node_run.closed_after:.2f} s"
        raise node_run.fail(f"expected a close within 2 s of ShutdownCN, got one after {took}")


@pytest.mark.clause("CN-11")
def test_scenario_messages_are_taken(node_run: NodeRun) -> None:
    """The node takes every scenario MSG (all types and sizes of the subset) and carries on to ShutdownCN."""
    node_run.require_registration()
    if node_run.failure is not None:
        raise node_run.failure
    if node_run.closed_after is None or node_run.exit_status != 0:
        raise node_run.fail(
            "expected the node to take the scenario's MSGs and end on ShutdownCN with status 0, got "
            + ("no close" if node_run.closed_after is None else f"exit status {node_run.exit_status}")
        )


def _printed_verdict(node_run: NodeRun):  # type: ignore[no-untyped-def]
    node_run.require_registration()
    if node_run.exit_status is None:
        raise Inconclusive("the node had not exited after ShutdownCN, so its output may be incomplete")
    return judge_output(SCENARIO_PAYLOADS, node_run.stdout)


@pytest.mark.clause("SCN-3")
def test_prints_one_line_per_msg(node_run: NodeRun) -> None:
    """For each scenario MSG the node prints one `MSG <json>` line on its standard output."""
    verdict = _printed_verdict(node_run)
    if verdict.failure is not None and verdict.failure[0] == "SCN-3":
        raise node_run.fail(verdict.failure[1])
    mixed = mixed_forms(len(SCENARIO_PAYLOADS), node_run.stdout)
    if mixed is not None:
        raise node_run.fail(mixed)
    if verdict.form == "legacy":
        raise node_run.fail(
            "expected `MSG <json>` lines, got only the original's `Received general message: ...` lines "
            "(spec/deviations.md)"
        )


@pytest.mark.clause("CN-11")
def test_scenario_values_are_decoded_exactly(node_run: NodeRun) -> None:
    """Every scenario value is printed exactly as sent, in order, each once (as far as the legacy form allows)."""
    verdict = _printed_verdict(node_run)
    if verdict.failure is not None:
        clause, evidence = verdict.failure
        if clause == "SCN-3" and verdict.form == "none":
            raise Inconclusive(f"the node printed no value lines, so what it decoded cannot be seen ({evidence})")
        raise node_run.fail(evidence, clause=None if clause == "CN-11" else clause)
    if verdict.inconclusive is not None:
        raise Inconclusive(verdict.inconclusive)
