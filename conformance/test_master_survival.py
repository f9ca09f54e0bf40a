"""Master mode, run last: small hostile first frames must not stop the master serving others (MST-4).

A 5001-digit int key, a key of 10^6 shared references, thousands of
hash-colliding keys and a 65,000-deep tuple key, each in a RegisterCN's
state: the master refuses the frame, and the node that registers next gets
the whole scenario.  This file runs after the others (pytest takes the files
in name order), so that a master these frames bring down fails only here.
"""

from __future__ import annotations

import time

import pytest

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import RegisterCN
from skyllh_cluster.wire.framing import encode_frame

from skyllh_cluster.conformance.failures import ClauseFailure, NoReply
from skyllh_cluster.conformance.refusals import first_frame_text, hostile_cases
from skyllh_cluster.conformance.scenario_checks import order_mismatch, run_master_scenario
from skyllh_cluster.conformance.session import Kit


@pytest.mark.parametrize("index", range(4), ids=["5001-digit-int-key", "10^6-shared-references", "colliding-keys", "65000-deep-key"])
@pytest.mark.clause("MST-4")
def test_hostile_first_frame_does_not_stop_others(kit: Kit, index: int) -> None:
    """A small hostile first frame is refused, and a node that registers next is served the whole scenario."""
    case = hostile_cases("master")[index]
    bad = kit.connect(f"hostile: {case.label}")
    try:
        bad.send(case.data)
    except ClauseFailure:
        pass  # a master may close before it has read a frame it has already refused
    good = kit.connect("node registering after a hostile frame")
    run = run_master_scenario(good, encode_frame(dumps(RegisterCN(int(time.time()), 3600))), stall_clause="MST-4")
    if run.failure is not None:
        raise ClauseFailure(
            f"{run.failure.evidence} (while another connection sent {case.label})",
            clause=run.failure.clause if run.failure.clause not in (None, "MST-1") else "MST-4",
            transcripts=[run.transcript, bad.transcript],
        )
    mismatch = order_mismatch(run.commands())
    if mismatch is not None:
        raise run.fail(mismatch, clause="SCN-1")
    try:
        frames = bad.wait_closed(kit.timeout)
    except NoReply:
        raise bad.fail(f"expected the master to close the connection after {case.label}, got it open", clause="MST-3", kind=NoReply) from None
    if frames or bad.transcript.bytes_in("<-"):
        raise bad.fail(f"expected no reply to {case.label}, got {first_frame_text(bad.transcript.bytes_in('<-'))}", clause=case.clause)


