"""The construct grammar: declarations, error conversion, building opcodes, the core behind it."""

from __future__ import annotations

import pickle

import pytest
from construct import Int16ul

from skyllh_cluster.codec import dumps, make_command
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.wire import opcodes as op
from skyllh_cluster.wire.grammar import (
    ARGUMENTS,
    Frame,
    GrammarViolation,
    Opcode,
    Pickle,
    parse_frame,
    parse_opcodes,
    parse_payload,
)

ACK_PAYLOAD = dumps(ACK())


def test_pickle_declaration_parses_the_opcode_list_with_offsets() -> None:
    protocol, ops = parse_opcodes(ACK_PAYLOAD)
    assert protocol == 4
    assert [(o.offset, o.name) for o in ops] == [
        (2, "FRAME"), (11, "SHORT_BINUNICODE"), (36, "MEMOIZE"), (37, "SHORT_BINUNICODE"), (42, "MEMOIZE"),
        (43, "STACK_GLOBAL"), (44, "MEMOIZE"), (45, "EMPTY_TUPLE"), (46, "NEWOBJ"), (47, "MEMOIZE"), (48, "STOP"),
    ]
    assert ops[0].arg == len(ACK_PAYLOAD) - 11 and ops[1].arg == op.COMMAND_MODULE


def test_frame_declaration() -> None:
    assert Frame.parse(b"\x02\x00ab").payload == b"ab"
    assert Frame.build({"length": 3, "payload": b"abc"}) == b"\x03\x00abc"


@pytest.mark.parametrize("code, arg", [
    (op.BININT1, 7), (op.BININT2, 0xBEEF), (op.BININT, -5), (op.LONG1, -(2**70)), (op.LONG4, 2**2100), (op.LONG1, 0),
    (op.BINFLOAT, 2.5), (op.SHORT_BINUNICODE, "é\ud800"), (op.BINUNICODE, "x" * 300), (op.BINUNICODE8, "y"),
    (op.SHORT_BINBYTES, b"\x00"), (op.BINBYTES, b"z" * 300), (op.BINBYTES8, b""), (op.BINGET, 3),
    (op.LONG_BINPUT, 70000), (op.FRAME, 0),
])
def test_opcode_arguments_round_trip(code: int, arg: object) -> None:
    built = Opcode.build({"op": code, "arg": arg}, protocol=5)
    parsed = Opcode.parse(built + b"\x00" * 8 if code == op.FRAME else built, protocol=5)
    assert parsed.op == code and parsed.arg == arg


def test_long_arguments_are_written_minimal_like_pickle() -> None:
    for value in (2**31, -(2**31) - 1, -(2**39), 255 * 256**4, 2**2039, -(2**2039) - 1):
        built = Opcode.build({"op": op.LONG1 if abs(value).bit_length() < 2000 else op.LONG4, "arg": value}, protocol=4)
        assert built == pickle.dumps(value, protocol=2)[2:-1]


def test_every_argument_kind_has_a_construct() -> None:
    assert set(ARGUMENTS) == set(op.ArgKind)


@pytest.mark.parametrize("payload, clause, offset", [
    (b"", "ENC-1", 0),
    (b"N.", "ENC-1", 0),
    (b"\x80", "ENC-1", 1),
    (b"\x80\x01N.", "ENC-1", 1),
    (b"\x80\x04\xff.", "ENC-2", 2),
    (b"\x80\x02\x8c\x01a.", "ENC-2", 2),
    (ACK_PAYLOAD + b"xy", "ENC-1", len(ACK_PAYLOAD)),
    (ACK_PAYLOAD[:-1], "ENC-1", 3),  # the FRAME's length field promises more than is left
    (b"\x80\x04" + ACK_PAYLOAD[11:-1], "ENC-1", len(ACK_PAYLOAD) - 10),
    (b"\x80\x04\x8b\xff\xff\xff\xff.", "ENC-1", 3),
    (b"\x80\x04\x8b\x00\x01\x00\x00.", "ENC-1", 3),
    (b"\x80\x04\x8c\x01\xff.", "ENC-1", 5),
    (b"\x80\x04\x95\x09\x00\x00\x00\x00\x00\x00\x00.", "ENC-1", 3),
])
def test_syntax_errors_name_clause_and_offset(payload: bytes, clause: str, offset: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_payload(payload)
    assert (info.value.clause, info.value.offset) == (clause, offset)


def test_frame_errors_and_offsets_count_from_the_frame() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_frame(b"\x05\x00abc")
    assert info.value.clause == "FRM-1"
    with pytest.raises(ProtocolError) as info:
        parse_frame(b"\x01\x00..")
    assert info.value.clause == "FRM-1"
    with pytest.raises(ProtocolError) as info:
        parse_frame(b"\x03\x00\x80\x04\xff")
    assert (info.value.clause, info.value.offset) == ("ENC-2", 4)


def rebuild(payload: bytes) -> bytes:
    """The payload written again from its parsed opcodes, through the grammar's declarations."""
    protocol, ops = parse_opcodes(payload)
    return Pickle.build({"protocol": protocol, "ops": [{"op": o.code, "arg": o.arg} for o in ops]})


@pytest.mark.parametrize("command", [
    ACK(), ShutdownCN(), RegisterCN(2**40, -3), MSG("hello"), MSG("msg"), MSG("MSG"),
    MSG({i: [i, str(i)] for i in range(1000)}), MSG([b"a" * 300] * 3), MSG((1, 2, 3, 4, (), (5,))), MSG([1.5, None, True]),
])
def test_the_grammar_builds_what_it_parses(command: object) -> None:
    payload = dumps(command)
    assert rebuild(payload) == payload
    assert make_command(*parse_payload(payload)) == command


def test_global_arguments_build_from_str_or_bytes() -> None:
    payload = pickle.dumps(ACK, protocol=2)  # GLOBAL of our own class: the line names its module
    assert rebuild(payload) == payload
    built = Opcode.build({"op": op.GLOBAL, "arg": ("_codecs", b"encode")}, protocol=2)
    assert built == b"c_codecs\nencode\n"
    assert Opcode.parse(built, protocol=2).arg == (b"_codecs", b"encode")


def test_the_grammar_refuses_to_build_outside_the_profile() -> None:
    with pytest.raises(GrammarViolation) as violation:
        Opcode.build({"op": 0xFF, "arg": None}, protocol=4)
    assert violation.value.clause == "ENC-2"
    with pytest.raises(GrammarViolation) as violation:
        Pickle.build({"protocol": 9, "ops": [{"op": op.STOP, "arg": None}]})
    assert violation.value.clause == "ENC-1"


def test_opcode_too_new_for_protocol_is_refused_when_building() -> None:
    with pytest.raises(GrammarViolation) as info:
        Opcode.build({"op": op.MEMOIZE, "arg": None}, protocol=3)
    assert info.value.clause == "ENC-2"


def test_grammar_reads_lengths_as_little_endian() -> None:
    assert Int16ul.parse(b"\x45\x00") == 0x45
