"""Master mode: what the master sends in the scenario (spec section 9).

Most tests here judge one shared run (the ``master_run`` fixture): one fresh
compute node registers with a canonical RegisterCN in a single write and
reads the whole scenario.  Each test asks that run its own clause's question.
"""

from __future__ import annotations

import time

import pytest

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire.values import values_equal

from skyllh_cluster.conformance.peer import describe
from skyllh_cluster.conformance.scenario_checks import ScenarioRun, order_mismatch, run_master_scenario
from skyllh_cluster.conformance.session import Kit, command_frame


@pytest.mark.clause("FRM-1")
def test_frames_have_little_endian_prefix_and_exact_length(master_run: ScenarioRun) -> None:
    """Every frame is a u16 little-endian length and exactly that many payload bytes."""
    failure = master_run.failure
    if failure is not None and failure.clause == "FRM-1":
        raise failure
    bad = master_run.frames_with_error("FRM-1")
    if bad:
        raise master_run.fail(f"expected a well-framed stream, got {bad[0].describe()}")
    master_run.require_frames("framing")


@pytest.mark.clause("FRM-3")
def test_no_empty_frame(master_run: ScenarioRun) -> None:
    """No frame the master sends is empty."""
    master_run.require_frames("for empty frames")
    bad = master_run.frames_with_error("FRM-3")
    if bad:
        raise master_run.fail(f"expected no empty frame, got one at stream offset {bad[0].offset} (frame {bad[0].index})")


@pytest.mark.parametrize(
    "clause_id",
    [
        pytest.param(c, marks=pytest.mark.clause(c), id=c)
        for c in ("ENC-1", "ENC-2", "ENC-3", "ENC-4", "CMD-1", "CMD-2", "CMD-4", "VAL-2", "VAL-3")
    ],
)
def test_every_frame_passes_the_grammar(master_run: ScenarioRun, clause_id: str) -> None:
    """Every payload the master sends meets this clause of the normative grammar."""
    master_run.require_frames(clause_id)
    bad = master_run.frames_with_error(clause_id)
    if bad:
        raise master_run.fail(f"expected payloads that meet {clause_id}, got {bad[0].describe()}")


@pytest.mark.clause("ENC-7")
def test_canonical_encoding(master_run: ScenarioRun) -> None:
    """Every payload is the canonical encoding of its command (pickle protocol 4 as CPython writes it)."""
    master_run.require_frames("the encoding")
    for frame in master_run.frames:
        if frame.command is None:
            continue
        canonical = dumps(frame.command)
        if frame.payload != canonical:
            at = next((i for i, (a, b) in enumerate(zip(frame.payload, canonical)) if a != b), min(len(frame.payload), len(canonical)))
            raise master_run.fail(
                f"expected frame {frame.index} ({describe(frame.command)}) canonical, got a difference at payload "
                f"offset {at}: {frame.payload[at:at + 8].hex()} instead of {canonical[at:at + 8].hex()} "
                f"({len(frame.payload)} vs {len(canonical)} bytes)"
            )


@pytest.mark.clause("MST-2")
def test_exactly_one_ack_first(master_run: ScenarioRun) -> None:
    """The first frame is an ACK, and no second ACK follows."""
    master_run.require_frames("the ACK")
    first = master_run.frames[0]
    if first.error is not None:
        raise master_run.fail(f"expected an ACK first, got {first.describe()}", clause=first.error.clause)
    if not isinstance(first.command, ACK):
        raise master_run.fail(f"expected an ACK first, got {first.describe()}")
    extra = [f for f in master_run.frames[1:] + master_run.after_shutdown if isinstance(f.command, ACK)]
    if extra:
        raise master_run.fail(f"expected exactly one ACK, got another as frame {extra[0].index}")


@pytest.mark.clause("MST-5")
def test_only_msg_and_shutdown_after_ack_and_nothing_after_shutdown(master_run: ScenarioRun) -> None:
    """After the ACK only MSG and ShutdownCN arrive, and nothing after ShutdownCN."""
    master_run.require_frames("what follows the ACK")
    for frame in master_run.frames[1:]:
        if frame.command is not None and not isinstance(frame.command, (MSG, ShutdownCN)):
            raise master_run.fail(f"expected only MSG or ShutdownCN after the ACK, got {frame.describe()}")
    if master_run.after_shutdown:
        raise master_run.fail(f"expected nothing after ShutdownCN, got {master_run.after_shutdown[0].describe()}")


@pytest.mark.clause("MST-6")
def test_closes_after_shutdown(master_run: ScenarioRun, kit: Kit) -> None:
    """The master closes the connection after ShutdownCN."""
    if not master_run.shutdown_seen:
        master_run.require_complete()
        raise master_run.fail("expected a ShutdownCN, got none", clause="SCN-1")
    if master_run.ending == "open":
        raise master_run.fail(f"expected the master to close after ShutdownCN, got the connection open {kit.timeout:g} s later")


@pytest.mark.clause("SCN-1")
def test_scenario_messages_in_order_then_shutdown(master_run: ScenarioRun) -> None:
    """ACK, then MSG(p) for every scenario payload in order, then ShutdownCN."""
    master_run.require_frames("the scenario")
    master_run.require_decodable()
    mismatch = order_mismatch(master_run.commands())
    if mismatch is None and master_run.failure is not None:
        raise master_run.failure
    if mismatch is not None:
        raise master_run.fail(mismatch)


@pytest.mark.clause("VAL-4")
def test_values_arrive_exactly(master_run: ScenarioRun) -> None:
    """Every scenario value arrives exactly: type, int size, float bits, code points, bytes."""
    master_run.require_frames("the values")
    messages = [f for f in master_run.frames if isinstance(f.command, MSG)]
    if not messages:
        raise master_run.fail("expected MSG frames, got none", clause="SCN-1")
    for frame, expected in zip(messages, SCENARIO_PAYLOADS):
        got = frame.command.msg  # type: ignore[union-attr]
        loosely_same = _loosely_equal(got, expected)
        if loosely_same and not values_equal(got, expected):
            raise master_run.fail(
                f"expected MSG({_short(expected)}) exactly, got MSG({_short(got)}) in frame {frame.index}"
            )


@pytest.mark.clause("SCN-2")
def test_serves_nodes_one_after_another(kit: Kit) -> None:
    """Three nodes, each connecting while the one before is being served, all get the whole scenario."""
    waiting = kit.connect("node 1 of 3")
    for n in range(3):
        conn = waiting
        # The next node connects now, while this one registers and is
        # served: a scenario master keeps listening, so it is served next.
        waiting = kit.connect(f"node {n + 2} of 3") if n < 2 else None
        run = run_master_scenario(conn, command_frame(RegisterCN(int(time.time()), 3600)), stall_clause="SCN-2")
        conn.close()
        if run.failure is not None:
            raise run.failure.with_transcripts(*([waiting.transcript] if waiting else []))
        mismatch = order_mismatch(run.commands())
        if mismatch is not None:
            raise run.fail(f"node {n + 1}: {mismatch}", clause="SCN-1")


def _loosely_equal(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - a comparison of decoded values must not break the kit
        return False


def _short(value: object, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."

