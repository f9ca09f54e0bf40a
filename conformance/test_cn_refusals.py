"""Compute-node mode: the node as a receiver (ENC-1 to ENC-4, ENC-6, CMD-1 to CMD-4, VAL-2, VAL-3, CN-4, ERR-1, CN-11).

After the ACK, every invalid frame of the spec's vectors and the kit's own
ShutdownCN-, ACK- and MSG-like violations is sent, each followed by a valid
marker MSG (see :mod:`skyllh_cluster.conformance.refusals`).  Positive
evidence that the node skipped a frame and carried on: it prints the marker's
SCN-3 line and no line for the bad frame, and it shuts down on the kit's final
valid ShutdownCN, not on an invalid one.  A node that prints no MSG lines
gives no such evidence: its rows are inconclusive (and SCN-3 fails).

As the reply to the RegisterCN, one bad frame per clause: the node must not
carry on (CN-4).  Hostile but small frames must not end the node (ERR-1), and
extreme but valid values must be printed exactly (CN-11).
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyllh_cluster.codec import dumps, loads_checked
from skyllh_cluster.commands import ACK, MSG, ShutdownCN
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.wire.framing import encode_frame

from skyllh_cluster.conformance.failures import ClauseFailure, Inconclusive
from skyllh_cluster.conformance.node_output import judge_output
from skyllh_cluster.conformance.refusals import (
    RECEIVER_CLAUSES,
    BadFrame,
    FirstReply,
    Gauntlet,
    ack_cases,
    extreme_values,
    hostile_cases,
    invalid_vectors,
    role_cases,
    run_first_replies,
    run_gauntlet,
)
from skyllh_cluster.conformance.session import Kit
from skyllh_cluster.conformance.strategies import payload_mutations

#: A node process costs this many plain examples (see Kit.settings).
PROCESS_COST = 5

_GAUNTLETS: Dict[int, Gauntlet] = {}
_REPLIES: Dict[int, List[FirstReply]] = {}


def _gauntlet(kit: Kit) -> Gauntlet:
    if id(kit) not in _GAUNTLETS:
        _GAUNTLETS.clear()
        _GAUNTLETS[id(kit)] = run_gauntlet(kit, invalid_vectors() + role_cases("cn"), label="bad frames")
    return _GAUNTLETS[id(kit)]


def _judge_gauntlet(result: Gauntlet, what: str, own_clause: str) -> None:
    """Raise what a gauntlet's result shows: acting on a bad frame breaks its clause, stopping CN-9."""
    if result.acted:
        case, evidence = result.acted[0]
        raise ClauseFailure(
            f"expected the node to skip {case.label} (it breaks {case.clause}) and not act on it, got: {evidence}",
            clause=case.clause if case.clause != own_clause else None,
            transcripts=result.transcripts[-1:],
        )
    if result.stopped:
        case, evidence = result.stopped[0]
        raise ClauseFailure(
            f"expected the node to skip {case.label} and serve on, got: {evidence}",
            clause="CN-9" if own_clause != "ERR-1" else None,
            transcripts=result.transcripts[-1:],
        )
    if result.no_shutdown is not None:
        raise ClauseFailure(f"expected the node to serve on after {what}, got: {result.no_shutdown}",
                            clause="CN-9" if own_clause != "ERR-1" else None, transcripts=result.transcripts[-1:])
    if result.unknown:
        case, evidence = result.unknown[0]
        raise Inconclusive(f"{len(result.unknown)} of the frames ({case.label} first) were not judged: {evidence}")
    if not result.skipped:
        raise Inconclusive(f"no frame was judged for {what}")


@pytest.mark.parametrize("clause_id", [pytest.param(c, marks=pytest.mark.clause(c), id=c) for c in RECEIVER_CLAUSES])
def test_invalid_frames_are_skipped(kit: Kit, clause_id: str) -> None:
    """Every frame breaking this clause, sent after the ACK, is skipped and not acted on; the node serves on."""
    _judge_gauntlet(_gauntlet(kit).for_clause(clause_id), f"frames breaking {clause_id}", clause_id)


@pytest.mark.clause("ERR-1")
def test_hostile_frames_do_not_end_the_node(kit: Kit) -> None:
    """Small hostile frames (a 5001-digit int key, 10^6 shared references, colliding keys, a 65000-deep key) are skipped."""
    # A hostile frame may cost a node a few seconds; that it ends the node is the question here.
    result = run_gauntlet(kit, hostile_cases("cn"), label="hostile frames", patience=4 * kit.timeout)
    _judge_gauntlet(result, "hostile frames", "ERR-1")


@pytest.mark.clause("CN-11")
def test_extreme_values_are_printed(kit: Kit) -> None:
    """Valid but extreme values (10**5000, a lone surrogate, 10^6 shared references) are printed exactly, and the node serves on."""
    values: List[Any] = [v for _, v in extreme_values()] + ["after the extreme values"]
    node = kit.start_node(label="extreme values")
    node.register()
    node.send(encode_frame(dumps(ACK())) + b"".join(encode_frame(dumps(MSG(v))) for v in values)
              + encode_frame(dumps(ShutdownCN())))
    try:
        node.conn.wait_closed(max(kit.timeout, 5.0))
    except ClauseFailure:
        raise node.fail("expected the node to close after ShutdownCN, having printed the extreme values; got it still open") from None
    status = node.exits_within(kit.timeout, "after ShutdownCN")
    verdict = judge_output(values, node.process.stdout_bytes(limit=64 << 20))
    if verdict.failure is not None and verdict.form == "none" and status != 0:
        raise node.fail(f"expected the node to take the extreme values and exit 0 at ShutdownCN, got exit status {status} "
                        "with no value printed")
    if verdict.failure is not None:
        clause, evidence = verdict.failure
        raise node.fail(evidence, clause=None if clause == "CN-11" else clause)
    if status != 0:
        raise node.fail(f"expected exit status 0 after ShutdownCN, got {status}", clause="CN-6")
    if verdict.inconclusive is not None:
        raise Inconclusive(verdict.inconclusive)


def _first_reply_cases() -> List[BadFrame]:
    """ACK-like bad frames (what a lax node would take for its ACK), and one deep MSG (ENC-6)."""
    deep = next(c for c in role_cases("cn") if c.clause == "ENC-6")
    return ack_cases() + [deep]


@pytest.mark.parametrize("index", range(len(_first_reply_cases())), ids=[c.label.replace(" ", "-") for c in _first_reply_cases()])
@pytest.mark.clause("CN-4")
def test_invalid_reply_stops_the_node(kit: Kit, index: int) -> None:
    """A reply to the RegisterCN that is an invalid frame (an ACK with a flaw) makes the node stop: it closes, exits non-zero, prints no MSG."""
    if id(kit) not in _REPLIES:
        _REPLIES.clear()
        _REPLIES[id(kit)] = run_first_replies(kit, _first_reply_cases())
    reply = _REPLIES[id(kit)][index]
    if reply.problem is not None:
        raise ClauseFailure(
            f"expected the node not to carry on after the reply {reply.case.label} (it breaks {reply.case.clause}), "
            f"got: {reply.problem}",
            transcripts=[reply.transcript],
        )
    if reply.unknown is not None:
        raise Inconclusive(reply.unknown)


def _valid_payloads() -> st.SearchStrategy[bytes]:
    return st.sampled_from([dumps(ShutdownCN()), dumps(ACK()), dumps(MSG("hello")), dumps(MSG({"k": [1, 2.5, None]}))])


@st.composite
def _mutated_frames(draw: st.DrawFn) -> List[bytes]:
    out: List[bytes] = []
    for payload in draw(st.lists(payload_mutations(_valid_payloads()), min_size=4, max_size=16)):
        try:
            loads_checked(payload)
        except ProtocolError:
            out.append(payload)
    return out


@pytest.mark.clause("CN-9")
def test_mutated_frames_are_skipped(kit: Kit) -> None:
    """Valid frames with random edits that the grammar refuses are skipped and not acted on; the node serves on."""

    @kit.settings(cost=PROCESS_COST)
    @given(payloads=_mutated_frames())
    def skips(payloads: List[bytes]) -> None:
        cases = []
        for payload in payloads:
            if not payload:
                continue
            try:
                loads_checked(payload)
            except ProtocolError as error:
                label = f"a mutated frame {payload[:24].hex()}... ({error.clause}: {error.reason[:60]})"
                cases.append(BadFrame(label, error.clause, encode_frame(payload), b"ShutdownCN" in payload))
        if cases:
            try:
                _judge_gauntlet(run_gauntlet(kit, cases, label="mutated frames"), "mutated frames", "CN-9")
            finally:
                kit.cleanup()

    skips()
