"""Master mode: the master as a receiver (ENC-1 to ENC-4, ENC-6, CMD-1 to CMD-4, VAL-2, VAL-3, MST-11).

Every invalid frame of the spec's vectors, and the kit's own RegisterCN-like
violations, is sent as a first frame, each on its own connection (many at
once, in bounded batches: see :mod:`skyllh_cluster.conformance.refusals`).
The master must send nothing on it and close it; the close is the positive
evidence that it read and refused the frame.  After them an honest node must
still get its ACK.  Each clause's row judges the frames the normative grammar
refuses under that clause.

Bytes written together with the RegisterCN get no ACK (MST-11).  Hostile
frames are in ``test_master_survival.py``, which runs last: a master they
bring down would otherwise fail every later row.
"""

from __future__ import annotations

import time
from typing import Dict

import pytest

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import ACK, RegisterCN
from skyllh_cluster.wire.framing import encode_frame

from skyllh_cluster.conformance.failures import Inconclusive, NoReply
from skyllh_cluster.conformance.refusals import (
    RECEIVER_CLAUSES,
    first_frame_text,
    MasterSweep,
    invalid_vectors,
    role_cases,
    sweep_master,
)
from skyllh_cluster.conformance.session import Kit

#: One sweep per run, shared by the clause rows (keyed by the kit object).
_SWEEPS: Dict[int, MasterSweep] = {}


def _sweep(kit: Kit) -> MasterSweep:
    if id(kit) not in _SWEEPS:
        _SWEEPS.clear()
        _SWEEPS[id(kit)] = sweep_master(kit, invalid_vectors() + role_cases("master"))
    return _SWEEPS[id(kit)]


@pytest.mark.parametrize("clause_id", [pytest.param(c, marks=pytest.mark.clause(c), id=c) for c in RECEIVER_CLAUSES])
def test_invalid_first_frames_are_refused(kit: Kit, clause_id: str) -> None:
    """Every first frame that breaks this clause (spec vectors and the kit's RegisterCN cases) gets nothing back and is closed."""
    sweep = _sweep(kit).for_clause(clause_id)
    if sweep.answered:
        case, conn, got = sweep.answered[0]
        raise conn.fail(
            f"expected no reply to a first frame breaking {clause_id} ({case.label}), got {first_frame_text(got)}"
            + (f"; {len(sweep.answered) - 1} more such frames were answered too" if len(sweep.answered) > 1 else "")
        )
    if sweep.left_open:
        case, conn = sweep.left_open[0]
        raise conn.fail(
            f"expected the master to close the connection after a first frame breaking {clause_id} ({case.label}), "
            f"got it open after {kit.patience:g} s ({len(sweep.left_open)} such connections)",
            clause="MST-3",
            kind=NoReply,
        )
    if sweep.honest is not None:
        raise sweep.honest
    if sweep.unsent:
        case, why = sweep.unsent[0]
        raise Inconclusive(f"the kit could not send {case.label}: {why}")
    if not sweep.refused:
        raise Inconclusive(f"no frame breaking {clause_id} was sent")


#: What a compute node sends after its RegisterCN, against the rules (MST-11).
AFTER_REGISTRATION = {
    "an ACK frame": lambda: encode_frame(dumps(ACK())),
    "a second RegisterCN": lambda: encode_frame(dumps(RegisterCN(int(time.time()), 3600))),
    "one byte": lambda: b"\x00",
}


@pytest.mark.parametrize("extra", list(AFTER_REGISTRATION))
@pytest.mark.clause("MST-11")
def test_bytes_after_the_registration_end_the_connection(kit: Kit, extra: str) -> None:
    """Bytes written together with the RegisterCN, after its frame, get no ACK, and the connection is closed."""
    with kit.connect(f"RegisterCN and {extra}") as conn:
        conn.send(encode_frame(dumps(RegisterCN(int(time.time()), 3600))) + AFTER_REGISTRATION[extra]())
        try:
            frames = conn.wait_closed(kit.patience)  # a correct master closes at once; only one that never does fails
        except NoReply:
            raise conn.fail(
                f"expected the master to close the connection after a RegisterCN followed by {extra} in one write, "
                f"got it open after {kit.patience:g} s ({conn.frames_read} frames arrived)",
                kind=NoReply,
            ) from None
        if frames:
            raise conn.fail(f"expected no reply to a RegisterCN followed by {extra} in one write, got {frames[0].describe()}")
