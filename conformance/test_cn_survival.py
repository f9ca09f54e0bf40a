"""Compute-node mode, run last: hostile frames and extreme values must not end the node (ERR-1, CN-11).

Small hostile frames after the ACK (a 5001-digit int key, 10^6 shared
references, thousands of hash-colliding keys, a 65,000-deep tuple key) are
skipped, and the node carries on; valid but extreme values (``10**5000``, a
lone surrogate, a 2 KB value of 340,000 shared references, the most ENC-6 allows) are printed exactly
(SCN-3 allows a cut line beyond 1 MiB), and the node carries on to ShutdownCN.
"""

from __future__ import annotations

from typing import Any, List

import pytest

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import ACK, MSG, ShutdownCN
from skyllh_cluster.wire.framing import encode_frame

from skyllh_cluster.conformance.failures import ClauseFailure, Inconclusive
from skyllh_cluster.conformance.node_output import judge_output
from skyllh_cluster.conformance.refusals import extreme_values, hostile_cases, judge_gauntlet, run_gauntlet
from skyllh_cluster.conformance.session import Kit


@pytest.mark.clause("ERR-1")
def test_hostile_frames_do_not_end_the_node(kit: Kit) -> None:
    """Small hostile frames (a 5001-digit int key, 10^6 shared references, colliding keys, a 65000-deep key) are skipped."""
    # A hostile frame may cost a node a few seconds; that it ends the node is the question here.
    result = run_gauntlet(kit, hostile_cases("cn"), label="hostile frames", patience=4 * kit.timeout)
    judge_gauntlet(result, "hostile frames", "ERR-1")


@pytest.mark.clause("CN-11")
def test_extreme_values_are_printed(kit: Kit) -> None:
    """Valid but extreme values (10**5000, a lone surrogate, 340,000 shared references) are printed exactly, and the node serves on."""
    values: List[Any] = [v for _, v in extreme_values()] + ["after the extreme values"]
    node = kit.start_node(label="extreme values")
    node.register()
    node.send(encode_frame(dumps(ACK())) + b"".join(encode_frame(dumps(MSG(v))) for v in values)
              + encode_frame(dumps(ShutdownCN())))
    try:
        node.conn.wait_closed(max(kit.patience, 5.0))  # printing the extreme values takes a slow node a while
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


