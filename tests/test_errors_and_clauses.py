"""ProtocolError's contract (ERR-2) and the clause table's invariants."""

from __future__ import annotations

import copy
import pickle

import pytest

from skyllh_cluster.clauses import CLAUSES, Clause, Level, Role
from skyllh_cluster.errors import LocalProtocolError, ProtocolError, RemoteProtocolError


def test_error_names_clause_offset_and_reason() -> None:
    err = ProtocolError("ENC-2", "opcode 0x52 (REDUCE) is not in the profile", 37)
    assert isinstance(err, ValueError)
    assert (err.clause, err.offset, err.reason) == ("ENC-2", 37, "opcode 0x52 (REDUCE) is not in the profile")
    assert str(err) == "[ENC-2] at offset 37: opcode 0x52 (REDUCE) is not in the profile"
    assert repr(err) == "ProtocolError('ENC-2', 'opcode 0x52 (REDUCE) is not in the profile', offset=37)"


def test_error_without_offset() -> None:
    assert str(LocalProtocolError("FRM-2", "too big")) == "[FRM-2]: too big"


def test_unknown_clause_is_a_bug() -> None:
    with pytest.raises(KeyError):
        ProtocolError("NOPE-1", "x")


def test_offset_moves_and_blame_changes() -> None:
    err = ProtocolError("ENC-1", "trailing bytes", 10)
    moved = err.with_offset(2)
    assert type(moved) is ProtocolError and moved.offset == 12
    assert ProtocolError("VAL-1", "x").with_offset(2).offset is None
    remote, local = err.as_remote(), err.as_local()
    assert isinstance(remote, RemoteProtocolError) and remote.offset == 10
    assert isinstance(local, LocalProtocolError) and local.clause == "ENC-1"


def test_errors_survive_pickling_and_copying() -> None:
    # Our own errors cross process boundaries in multiprocessing users' code.
    err = RemoteProtocolError("FRM-5", "cut", 4)
    for clone in (pickle.loads(pickle.dumps(err)), copy.copy(err)):
        assert type(clone) is RemoteProtocolError
        assert (clone.clause, clone.reason, clone.offset) == ("FRM-5", "cut", 4)


def test_clause_table() -> None:
    assert all(isinstance(c, Clause) and c.id == key for key, c in CLAUSES.items())
    assert {c.level for c in CLAUSES.values()} == {Level.MUST, Level.SHOULD}
    assert {c.role for c in CLAUSES.values()} == set(Role)
    assert str(CLAUSES["FRM-6"]).startswith("FRM-6 (SHOULD): ")
    with pytest.raises(KeyError):
        CLAUSES["FRM-0"]
