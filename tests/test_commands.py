"""The command classes: seed API names, value equality, validation."""

from __future__ import annotations

import pytest

from skyllh_cluster.commands import ACK, COMMAND_CLASSES, MSG, Command, RegisterCN, ShutdownCN
from skyllh_cluster.errors import LocalProtocolError


def test_the_four_commands_by_wire_name() -> None:
    assert COMMAND_CLASSES == {"ACK": ACK, "MSG": MSG, "ShutdownCN": ShutdownCN, "RegisterCN": RegisterCN}
    assert all(issubclass(cls, Command) for cls in COMMAND_CLASSES.values())


def test_is_same_as_takes_a_class_or_an_instance() -> None:
    assert ACK().is_same_as(ACK) and ACK().is_same_as(ACK())
    assert not MSG(1).is_same_as(ShutdownCN)
    assert RegisterCN(1, 2).is_same_as(RegisterCN)


def test_register_cn_casts_like_the_original() -> None:
    reg = RegisterCN(1732560000.9, "7200")
    assert (reg.cn_start_time, reg.cn_live_time) == (1732560000, 7200)
    assert reg.__dict__ == {"_cn_start_time": 1732560000, "_cn_live_time": 7200}
    with pytest.raises(TypeError, match="cn_live_time property must be castable to type int"):
        reg.cn_live_time = "soon"
    with pytest.raises(TypeError, match="cn_start_time"):
        RegisterCN(None, 1)


def test_equality_is_by_class_and_exact_state() -> None:
    assert ACK() == ACK() and ShutdownCN() == ShutdownCN()
    assert ACK() != ShutdownCN()
    assert MSG([1, "a"]) == MSG([1, "a"])
    assert MSG(1) != MSG(True) and MSG(1) != MSG(1.0)
    assert RegisterCN(1, 2) == RegisterCN(1, 2) != RegisterCN(1, 3)
    assert ACK() != "ACK"
    with pytest.raises(TypeError):
        hash(ACK())


def test_repr_reads_like_a_constructor_call() -> None:
    assert repr(ACK()) == "ACK()"
    assert repr(MSG("hi")) == "MSG(msg='hi')"
    assert repr(RegisterCN(5, 6)) == "RegisterCN(cn_start_time=5, cn_live_time=6)"


def test_msg_refuses_a_value_it_could_never_send() -> None:
    with pytest.raises(LocalProtocolError) as info:
        MSG({1, 2})
    assert info.value.clause == "VAL-1"


def test_repr_is_bounded_for_any_value_a_peer_can_send() -> None:
    # repr(10**5000) raises under the interpreter's int digit limit, and a value of
    # 10^6 shared references would repr to megabytes; a command's repr is at most
    # about 200 characters a field, and says what it cut.
    assert repr(MSG("hello")) == "MSG(msg='hello')"
    assert repr(MSG({"a": (1, 2.5, None, b"x")})) == "MSG(msg={'a': (1, 2.5, None, b'x')})"
    assert repr(MSG(10**5000)) == "MSG(msg=<cut: 1 omitted>)"
    shared = repr(MSG([["zz"] * 1000] * 340))
    assert len(shared) <= 220 and "omitted>" in shared
    odd = MSG("x")
    odd.msg = {1, 2}  # outside the subset: named by type
    assert repr(odd) == "MSG(msg=<set>)"


def test_describe_gives_the_whole_value_within_its_limit() -> None:
    assert MSG(10**5000).describe(10_000) == "MSG(msg=1" + "0" * 5000 + ")"
    assert MSG("x" * 300).describe(1000) == "MSG(msg='" + "x" * 300 + "')"
    assert MSG("x" * 300).describe() == "MSG(msg=<cut: 1 omitted>)"
    assert RegisterCN(5, 6).describe(3) == "RegisterCN(cn_start_time=5, cn_live_time=6)"
