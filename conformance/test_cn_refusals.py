"""Compute-node mode: the node as a receiver (ENC-1 to ENC-4, ENC-6, CMD-1 to CMD-4, VAL-2, VAL-3, CN-4, ERR-1, CN-11).

After the ACK, every invalid frame of the spec's vectors and the kit's own
ShutdownCN-, ACK- and MSG-like violations is sent, each followed by a valid
marker MSG (see :mod:`skyllh_cluster.conformance.refusals`).  Positive
evidence that the node skipped a frame and carried on: it prints the marker's
SCN-3 line and no line for the bad frame, and it shuts down on the kit's final
valid ShutdownCN, not on an invalid one.  A node that prints no MSG lines
gives no such evidence: its rows are inconclusive (and SCN-3 fails).

As the reply to the RegisterCN, one bad frame per clause: the node must not
carry on (CN-4).  Hostile frames and extreme values are in
``test_cn_survival.py``, which runs last.
"""

from __future__ import annotations

from typing import Dict, List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyllh_cluster.codec import dumps, loads_checked
from skyllh_cluster.commands import ACK, MSG, ShutdownCN
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.wire.framing import encode_frame

from skyllh_cluster.conformance.failures import ClauseFailure, Inconclusive
from skyllh_cluster.conformance.refusals import (
    RECEIVER_CLAUSES,
    BadFrame,
    FirstReply,
    Gauntlet,
    ack_cases,
    judge_gauntlet,
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
        _GAUNTLETS[id(kit)] = run_gauntlet(kit, role_cases("cn") + invalid_vectors(), label="bad frames")
    return _GAUNTLETS[id(kit)]


@pytest.mark.parametrize("clause_id", [pytest.param(c, marks=pytest.mark.clause(c), id=c) for c in RECEIVER_CLAUSES])
def test_invalid_frames_are_skipped(kit: Kit, clause_id: str) -> None:
    """Every frame breaking this clause, sent after the ACK, is skipped and not acted on; the node serves on."""
    judge_gauntlet(_gauntlet(kit).for_clause(clause_id), f"frames breaking {clause_id}", clause_id)


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
    if not kit.node_prints_lines():
        raise Inconclusive(f"the node prints no MSG lines (SCN-3), so whether it acted on the MSG after the reply "
                           f"{reply.case.label} cannot be seen", transcripts=[reply.transcript])


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
                judge_gauntlet(run_gauntlet(kit, cases, label="mutated frames", max_nodes=2), "mutated frames", "CN-9")
            finally:
                kit.cleanup()

    skips()
