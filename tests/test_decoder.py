"""The fast tokenizer's edges: templates cut short, every argument overrun, rare refusals.

Each payload here goes through both the fast tokenizer and the grammar, which
must refuse it under the same clause, and, where a template could take it,
through the tokenizer alone (``decode_payload(p, templates=False)``).
"""

from __future__ import annotations

import struct

from typing import Any

import pytest

from skyllh_cluster.codec import dumps, loads, loads_checked
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire import opcodes as op
from skyllh_cluster.codec import make_command
from skyllh_cluster.wire.decoder import decode_payload
from skyllh_cluster.wire.machine import NamedGlobal
from skyllh_cluster.wire.values import values_equal

MSG_HEAD = dumps(MSG(None))[11:56]  # class, NEWOBJ, state dict and key: memo 0..5
ACK_BODY = dumps(ACK())[11:]


def msg_with(value_ops: bytes) -> bytes:
    body = MSG_HEAD + value_ops + b"sb."
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body


def refused_alike(payload: bytes) -> str:
    with pytest.raises(ProtocolError) as fast:
        loads(payload)
    with pytest.raises(ProtocolError) as checked:
        loads_checked(payload)
    assert fast.value.clause == checked.value.clause
    assert fast.value.offset is not None
    return fast.value.clause


ARG_SIZES = {
    op.ArgKind.U8: 1, op.ArgKind.U16: 2, op.ArgKind.I32: 4, op.ArgKind.U32: 4, op.ArgKind.U64: 8,
    op.ArgKind.FLOAT64_BE: 8, op.ArgKind.LONG_U8: 1, op.ArgKind.LONG_I32: 4, op.ArgKind.UTF8_U8: 1,
    op.ArgKind.UTF8_U32: 4, op.ArgKind.UTF8_U64: 8, op.ArgKind.BYTES_U8: 1, op.ArgKind.BYTES_U32: 4,
    op.ArgKind.BYTES_U64: 8, op.ArgKind.TWO_LINES: 1,
}
CUT_ARGUMENTS = [
    (spec.name, bytes((spec.code,)) + b"\x05" * cut)
    for spec in op.PROFILE_OPCODES.values()
    if spec.arg in ARG_SIZES and spec.code != op.PROTO
    for cut in range(ARG_SIZES[spec.arg])
]


@pytest.mark.parametrize("name, ops", CUT_ARGUMENTS, ids=[f"{n}-{len(o) - 1}" for n, o in CUT_ARGUMENTS])
def test_every_argument_cut_short_is_enc_1(name: str, ops: bytes) -> None:
    assert refused_alike(b"\x80\x05" + ops) == "ENC-1"


@pytest.mark.parametrize("name, ops", [
    ("SHORT_BINUNICODE", b"\x8c\x05ab"), ("BINUNICODE", b"X\x05\x00\x00\x00ab"), ("BINUNICODE8", b"\x8d" + b"\x05" + b"\x00" * 7),
    ("SHORT_BINBYTES", b"C\x05ab"), ("BINBYTES", b"B\x05\x00\x00\x00"), ("BINBYTES8", b"\x8e" + b"\x05" + b"\x00" * 7 + b"ab"),
    ("LONG1", b"\x8a\x05\x01"), ("LONG4", b"\x8b\x05\x00\x00\x00\x01"), ("GLOBAL", b"cos\nsys"),
])
def test_data_past_the_end_is_enc_1(name: str, ops: bytes) -> None:
    assert refused_alike(b"\x80\x05" + ops) == "ENC-1"


def test_register_fast_path_cut_inside_an_int_falls_back() -> None:
    head = dumps(RegisterCN(0, 0))[11:75]
    body = head + b"J\x01"
    assert refused_alike(b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body) == "ENC-1"
    body = head + b"K\x01" + b"\x8c\x0d_cn_live_time\x94"
    assert refused_alike(b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body) == "ENC-1"


def test_register_with_long_times_takes_the_general_loop() -> None:
    assert loads(dumps(RegisterCN(2**40, 2**70))) == RegisterCN(2**40, 2**70)


def test_msg_str_fast_path_with_another_tail_falls_back() -> None:
    # Same length as MSG('a') but POP where MEMOIZE was.
    assert refused_alike(msg_with(b"\x8c\x01a0")[:-3] + b"sb.") == "ENC-2"
    assert refused_alike(msg_with(b"\x8c\x02\xc3\x28\x94")) == "ENC-1"


def test_msg_prefix_with_a_frame_past_the_end() -> None:
    payload = msg_with(b"N")
    payload = payload[:3] + struct.pack("<Q", len(payload)) + payload[11:]
    assert refused_alike(payload) == "ENC-1"


def test_msg_prefix_with_a_shorter_frame_is_valid() -> None:
    body = MSG_HEAD + b"N"
    payload = b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body + b"sb."
    assert loads(payload) == loads_checked(payload) == MSG(None)


@pytest.mark.parametrize("ops, clause", [
    (b"h\x02\x85", "ENC-3"),  # the class inside a tuple
    (b"h\x03\x85", "CMD-1"),  # the command inside a tuple
    (b"\x8c\x01a\x94" + b"".join(b"(" + (b"h" + bytes((6 + level,))) * 10 + b"t\x94" for level in range(7)), "ENC-6"),
    (b")" * 202 + b"\x85" * 201, "ENC-6"),
    (b"\x8c\x01a\x94" + b"".join((b"h" + bytes((6 + level,))) * 2 + b"\x86\x94" for level in range(18))
     + b"(" + b"}h\x18Ns" * 3 + b"t", "ENC-6"),
    (b"c_codecs\nencode\nK\x01\x85R", "ENC-3"),
    (b"c_codecs\nencode\n\x8c\x01aK\x01\x86R", "ENC-3"),
    (b"cbuiltins\nbytes\n)R", None),  # b'' spelled as protocol 2 does: valid
    (b"c__builtin__\nbytes\n)R", None),
    (b"c_codecs\nencode\n\x8c\x02\xc3\xbf\x8c\x06latin1\x86R", None),
    (b"\x8c\x01a\x8c\x01b\x93", "ENC-3"),
    (b"cskyllh.cluster.commands\nACK\n)\x81", "CMD-1"),
    (b"K\x01K\x02\x81", "ENC-3"),
])
def test_rare_shapes(ops: bytes, clause: str) -> None:
    payload = msg_with(ops)
    if clause is None:
        assert loads(payload) == loads_checked(payload)
    else:
        assert refused_alike(payload) == clause


@pytest.mark.parametrize("payload, clause", [
    (b"\x80\x04\x93.", "ENC-1"),
    (b"\x80\x04N\x81.", "ENC-1"),
    (b"\x80\x04NR.", "ENC-1"),
    (b"\x80\x04Nb.", "ENC-1"),
    (b"\x80\x04Na.", "ENC-1"),
    (b"\x80\x04NNs.", "ENC-1"),
    (b"\x80\x04N\x86.", "ENC-1"),
    (b"\x80\x04Nt.", "ENC-1"),
    (b"\x80\x04(]e.", "ENC-1"),
    (b"\x80\x04]\x94(e.", "CMD-1"),  # an empty APPENDS is fine; a list is no command
    (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00" + ACK_BODY, None),
    (b"\x80\x04" + ACK_BODY[:-1] + b"\x95\x01\x00\x00\x00\x00\x00\x00\x00.", None),
    (b"\x80\x04" + ACK_BODY[:-1] + b"h\x03\x93.", "ENC-3"),
])
def test_stack_shapes(payload: bytes, clause: str) -> None:
    if clause is None:
        assert loads(payload) == loads_checked(payload) == ACK()
    else:
        assert refused_alike(payload) == clause


def test_newobj_of_the_command_itself_names_it() -> None:
    payload = b"\x80\x04" + ACK_BODY[:-1] + b"h\x03)\x81."
    assert refused_alike(payload) == "ENC-3"
    with pytest.raises(ProtocolError, match="ACK command"):
        loads(payload)


def test_named_global_repr() -> None:
    assert repr(NamedGlobal("os", "system", op.GlobalRole.EMPTY_BYTES)) == "NamedGlobal(os.system)"


# --- templates and the tokenizer: the same result, or the same refusal --------------


def templated(payload: bytes) -> Any:
    return make_command(*decode_payload(payload)).msg


def core(payload: bytes) -> Any:
    return make_command(*decode_payload(payload, templates=False)).msg


SHARED = [1]
FAST_VALUES = [
    *SCENARIO_PAYLOADS,
    {"trial": 3, "seed": None, "grid": [[i * 0.5, str(i), (i, -i)] for i in range(8)], "tag": b"\x00\xff"},
    list(range(100)),
    list(range(300)) * 2,
    [f"s{i}" for i in range(50)],
    {f"k{i}": i * 0.25 for i in range(20)},
    [(i, None) for i in range(250)],  # more containers than MAX_DEPTH, yet shallow
    {(i, "k"): [{i: (i, True)}] for i in range(80)},  # tuple keys, dicts and lists below a dict
    ["a", "b", 1, "c"],
    [[1], {"k": "v"}, (1,), (1, 2, 3), (1, 2, 3, 4), ()],  # APPEND, SETITEM, every TUPLE opcode
    "x" * 5000,  # BINUNICODE decoded from a view
    ["msg", "MSG", "skyllh.cluster.commands"],  # the header's strs, fetched from the memo
    "\ud800", b"x" * 300, 2**70, -(2**2000), 1.5, True, None,
]


@pytest.mark.parametrize("value", FAST_VALUES, ids=range(len(FAST_VALUES)))
def test_templates_and_the_tokenizer_decode_alike(value: Any) -> None:
    payload = dumps(MSG(value))
    fast = templated(payload)
    assert values_equal(fast, value) and values_equal(fast, core(payload))
    assert loads(payload) == loads_checked(payload) == MSG(value)
    assert dumps(loads(payload)) == dumps(make_command(*decode_payload(payload, templates=False)))  # the same sharing


@pytest.mark.parametrize("value", [
    [SHARED, SHARED],  # a memo reference to a container
    ("\ud800", "\udfff"),  # surrogates: decoded with surrogatepass
    [2**70, -(2**2000)],  # LONG1 and LONG4
    [[[[i] for i in range(3)]] for _ in range(70)],  # 280 containers, 4 deep
])
def test_shared_and_rare_values_keep_their_sharing(value: Any) -> None:
    payload = dumps(MSG(value))
    decoded = loads(payload)
    assert decoded == loads_checked(payload) == MSG(value)
    assert dumps(decoded) == payload  # the sharing survives


def test_shared_containers_stay_shared() -> None:
    decoded = loads(dumps(MSG([SHARED, SHARED]))).msg
    assert decoded[0] is decoded[1]


def nested_lists(depth: int) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)


@pytest.mark.parametrize("ops, clause", [
    (b"}\x94(Ne", "ENC-1"),  # APPENDS onto a dict
    (b"]\x94(NNu", "ENC-1"),  # SETITEMS onto a list
    (b"}\x94(Nu", "ENC-1"),  # SETITEMS with an odd number of items
    (b"]NNs", "ENC-1"),  # SETITEM onto a list
    (b"}Na", "ENC-1"),  # APPEND onto a dict
    (b"}\x94(]Nu", "VAL-2"),  # an unhashable key
    (b"(e", "ENC-1"),  # APPENDS with nothing below its MARK
    (b"](\x94", "ENC-1"),  # MEMOIZE right after a MARK
    (b"N\x86", "ENC-1"),  # TUPLE2 with one item
    (b"\x8c\x02\xc3\x28\x94", "ENC-1"),  # bad UTF-8, with more after it
    (b"\x8c\x09abc", "ENC-1"),  # a str that runs into the command's tail
    (b"K\x01K", "ENC-2"),  # an int that runs into the tail: BUILD then meets an int
    (b"X\x00\x10\x00\x00ab", "ENC-1"),  # a long str past the end
    (b"NN", "ENC-1"),  # two values
    (b"(N", "ENC-1"),  # an open MARK
    (b"h\x03", "CMD-1"),  # the command inside its own state
    (b"h\x09", "ENC-4"),  # a memo index never stored
    (b"q\x06", "ENC-1"),  # BINPUT with nothing to store
    (nested_lists(201), "ENC-6"),  # 201 lists, one in the other: too deep
    (b"\x80\x04", "ENC-1"),  # PROTO inside the value
])
def test_templates_leave_refusals_to_the_tokenizer(ops: bytes, clause: str) -> None:
    payload = msg_with(ops)
    assert refused_alike(payload) == clause
    with pytest.raises(ProtocolError) as info:
        decode_payload(payload, templates=False)
    assert info.value.clause == clause


def test_lists_nested_to_the_limit_are_measured_and_accepted() -> None:
    payload = msg_with(nested_lists(200))
    assert values_equal(templated(payload), core(payload))
    assert loads(payload) == loads_checked(payload)


@pytest.mark.parametrize("ops, value", [
    (b"NN\x86", (None, None)),  # tuples need no MEMOIZE
    (b"K\x01\x85", (1,)),
    (b"]\x8c\x01aa", ["a"]),  # a str without MEMOIZE
    (b"\x8c\x01a", "a"),  # one str without MEMOIZE: not the template's shape
    (b"C\x01a", b"a"),
    (b"X\x01\x00\x00\x00a", "a"),
    (b"\x8a\x00", 0),  # LONG1 of no bytes
])
def test_valid_shapes_cpython_does_not_write(ops: bytes, value: Any) -> None:
    payload = msg_with(ops)
    assert values_equal(templated(payload), value) and values_equal(core(payload), value)
    assert loads(payload) == loads_checked(payload) == MSG(value)


def test_long_binput_is_valid() -> None:
    payload = msg_with(b"Nr\x06\x00\x00\x00")
    assert loads(payload) == loads_checked(payload) == MSG(None)


def test_template_constants_are_the_encoders() -> None:
    from skyllh_cluster.wire import decoder

    assert decoder.CANONICAL_ACK == dumps(ACK()) and decoder.CANONICAL_SHUTDOWN_CN == dumps(ShutdownCN())
    assert decoder.REGISTER_HEAD == dumps(RegisterCN(0, 0))[11:75]
    assert decoder.MSG_HEAD == dumps(MSG(None))[11:56]
