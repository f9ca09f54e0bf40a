"""The fast path of ``loads``: a hand-written tokenizer over the semantic core.

:func:`decode_payload` reads a payload's opcodes and arguments itself (the
syntax of ``spec/encoding-profile.md`` sections 1 and 2, checked byte by
byte) and hands each to :data:`~skyllh_cluster.wire.machine.HANDLERS`, the
one place that gives opcodes meaning.  The normative grammar
(:mod:`~skyllh_cluster.wire.grammar`) tokenizes independently and calls the
same handlers.

Before the tokenizer, *templates* recognise the canonical shapes that carry
most traffic and build their result without a loop: the constant ACK and
ShutdownCN payloads, the canonical RegisterCN with two small ints, and the
canonical MSG holding one scalar.  A canonical MSG holding anything else
starts the tokenizer after its fixed 56-byte header, on a machine set up as
the header leaves it.  A template never refuses: anything it does not match
exactly goes to the tokenizer, which reports the clause and offset.  Property
tests hold every template equal to ``decode_payload(data, templates=False)``.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

from ..errors import ProtocolError
from . import opcodes as op
from .machine import HANDLERS, CommandToken, Decoded, Machine, NamedGlobal, Refusal, finish, push_argument

__all__ = ["decode_payload", "CANONICAL_ACK", "CANONICAL_SHUTDOWN_CN", "REGISTER_HEAD", "MSG_HEAD"]

_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_F64 = struct.Struct(">d").unpack_from

# Argument kinds by how the tokenizer reads them, the common ones first.
_A = op.ArgKind
_NO_ARG, _BYTE, _SHORT_STR, _FLOAT, _FRAME, _TWO_LINES, _NOT_ALLOWED = 0, 1, 2, 3, 4, 5, -1
# The rest: (width of the field or length prefix, how to read it, what the bytes become).
_RARE: Dict[op.ArgKind, Tuple[int, str, str]] = {
    _A.U16: (2, "<H", "field"),
    _A.I32: (4, "<i", "field"),
    _A.U32: (4, "<I", "field"),
    _A.LONG_U8: (1, "<B", "int"),
    _A.LONG_I32: (4, "<i", "int"),
    _A.UTF8_U32: (4, "<I", "str"),
    _A.UTF8_U64: (8, "<Q", "str"),
    _A.BYTES_U8: (1, "<B", "bytes"),
    _A.BYTES_U32: (4, "<I", "bytes"),
    _A.BYTES_U64: (8, "<Q", "bytes"),
}
_RARE_KINDS = list(_RARE)
_COMMON = {_A.NONE: _NO_ARG, _A.U8: _BYTE, _A.UTF8_U8: _SHORT_STR, _A.FLOAT64_BE: _FLOAT, _A.TWO_LINES: _TWO_LINES}


def _kind_table(protocol: int) -> List[int]:
    table = [_NOT_ALLOWED] * 256
    for code, spec in op.PROFILE_OPCODES.items():
        if protocol in spec.protocols:
            if code == op.FRAME:
                table[code] = _FRAME
            else:
                table[code] = _COMMON[spec.arg] if spec.arg in _COMMON else 16 + _RARE_KINDS.index(spec.arg)
    return table


_KINDS = {protocol: _kind_table(protocol) for protocol in range(op.MIN_PROTOCOL, op.MAX_PROTOCOL + 1)}
_HANDLER_LIST = [HANDLERS.get(code) for code in range(256)]
_RARE_READERS = [(width, struct.Struct(fmt).unpack_from, result) for width, fmt, result in _RARE.values()]
# Strings this long are decoded from a view of the payload, without a copy.
_VIEW_SIZE = 1024


def _overrun(code: int, offset: int) -> NoReturn:
    name = op.opcode_name(code)
    raise ProtocolError("ENC-1", f"the argument of {name} runs past the end of the payload or of its frame", offset)


def _utf8(data: bytes, pos: int, end: int) -> str:
    try:
        if end - pos < _VIEW_SIZE:
            return data[pos:end].decode("utf-8", "surrogatepass")
        with memoryview(data) as view:
            return str(view[pos:end], "utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise ProtocolError("ENC-1", f"the string is not valid UTF-8: {exc.reason}", pos + exc.start) from None


def _read_rare(data: bytes, pos: int, end: int, kind: int, code: int, start: int) -> Tuple[Any, int]:
    """The argument of a less common opcode at ``pos``: (argument, next position)."""
    width, read, result = _RARE_READERS[kind - 16]
    if pos + width > end:
        _overrun(code, start)
    field = read(data, pos)[0]
    pos += width
    if result == "field":
        return field, pos
    if field < 0:
        raise ProtocolError("ENC-1", f"LONG4 with a negative byte count ({field})", start)
    if pos + field > end:
        _overrun(code, start)
    if result == "str":
        return _utf8(data, pos, pos + field), pos + field
    if result == "int":
        return int.from_bytes(data[pos : pos + field], "little", signed=True), pos + field
    return data[pos : pos + field], pos + field


def _read_global(data: bytes, pos: int, end: int, start: int) -> Tuple[Tuple[bytes, bytes], int]:
    newline = data.find(b"\n", pos, end)
    second = data.find(b"\n", newline + 1, end) if newline >= 0 else -1
    if second < 0:
        raise ProtocolError("ENC-1", "GLOBAL needs two lines, module and name", start)
    return (data[pos:newline], data[newline + 1 : second]), second + 1


def _not_allowed(code: int, protocol: int, offset: int) -> NoReturn:
    if code in op.PROFILE_OPCODES:
        raise ProtocolError("ENC-2", f"{op.opcode_name(code)} is not allowed in a protocol {protocol} payload", offset)
    raise ProtocolError("ENC-2", f"opcode {op.opcode_name(code)} is not in the profile", offset)


def _run(data: bytes, m: Machine, pos: int, protocol: int, frame_end: int) -> Decoded:
    """Tokenize from ``pos`` to STOP, giving each opcode to its handler."""
    size = len(data)
    kinds = _KINDS[protocol]
    handlers = _HANDLER_LIST
    # The end of the current frame, or of the payload; frame_end stays where
    # the last FRAME ended, to refuse a FRAME inside a frame.
    end = frame_end if frame_end > pos else size
    start = pos
    try:
        while True:
            if pos >= end:
                if pos >= size:
                    raise ProtocolError("ENC-1", "the payload ends without STOP", pos)
                end = size  # left a frame exactly at its end
            start = pos
            code = data[pos]
            kind = kinds[code]
            pos += 1
            if kind == _NO_ARG:
                if code == op.STOP:
                    if pos != size:
                        raise ProtocolError("ENC-1", f"{size - pos} bytes after STOP", pos)
                    return finish(m)
                handlers[code](m, None)
                continue
            if kind == _BYTE:
                if pos >= end:
                    _overrun(code, start)
                arg: Any = data[pos]
                pos += 1
            elif kind == _SHORT_STR:
                if pos >= end:
                    _overrun(code, start)
                length = data[pos]
                pos += 1
                if pos + length > end:
                    _overrun(code, start)
                try:
                    arg = data[pos : pos + length].decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    _utf8(data, pos, pos + length)  # to report it
                pos += length
            elif kind == _FLOAT:
                if pos + 8 > end:
                    _overrun(code, start)
                arg = _F64(data, pos)[0]
                pos += 8
            elif kind >= 16:
                arg, pos = _read_rare(data, pos, end, kind, code, start)
            elif kind == _FRAME:
                if start < frame_end:
                    raise ProtocolError("ENC-1", "FRAME inside a frame", start)
                if pos + 8 > size:
                    _overrun(code, start)
                length = _U64(data, pos)[0]
                pos += 8
                if pos + length > size:
                    raise ProtocolError("ENC-1", f"FRAME of {length} bytes runs past the end of the payload", start)
                frame_end = end = pos + length
                continue
            elif kind == _TWO_LINES:
                arg, pos = _read_global(data, pos, end, start)
            else:
                _not_allowed(code, protocol, start)
            handler = handlers[code]
            if handler is push_argument:  # the most common meaning, without the call
                m.stack.append(arg)
            else:
                handler(m, arg)
    except Refusal as refusal:
        raise ProtocolError(refusal.clause, refusal.reason, start) from None


# --- templates --------------------------------------------------------------------
# Literal bytes of the canonical encodings (spec section 3, ENC-7); the tests
# check them against the encoder.
_PROTO4_FRAME = b"\x80\x04\x95"
CANONICAL_ACK = bytes.fromhex(
    "80049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e"
)
CANONICAL_SHUTDOWN_CN = bytes.fromhex(
    "8004952d000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a53687574646f776e434e"
    "9493942981942e"
)
_CONSTANTS = {CANONICAL_ACK: "ACK", CANONICAL_SHUTDOWN_CN: "ShutdownCN"}
_CONSTANT_SIZE = max(map(len, _CONSTANTS))
# Bytes 11.. of the canonical RegisterCN up to its first int, and of the MSG up to its value.
REGISTER_HEAD = bytes.fromhex(
    "8c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a5265676973746572434e9493942981947d9428"
    "8c0e5f636e5f73746172745f74696d6594"
)
_REGISTER_LIVE_KEY = b"\x8c\x0d_cn_live_time\x94"
MSG_HEAD = bytes.fromhex("8c17736b796c6c682e636c75737465722e636f6d6d616e6473948c034d53479493942981947d948c036d736794")
_MSG_VALUE_AT = 11 + len(MSG_HEAD)  # 56: decode_payload writes the figures out, for speed
_SHORT_BINUNICODE, _MEMOIZE = op.SHORT_BINUNICODE, op.MEMOIZE
_BININT1, _BININT2, _BININT = op.BININT1, op.BININT2, op.BININT
_MSG_GLOBAL = NamedGlobal(op.COMMAND_MODULE, "MSG", op.GlobalRole.COMMAND_CLASS)
_SMALL_INTS: Dict[int, Tuple[int, Callable[[bytes, int], Any]]] = {
    op.BININT1: (2, lambda data, at: data[at]),
    op.BININT2: (3, lambda data, at: _U16(data, at)[0]),
    op.BININT: (5, lambda data, at: _I32(data, at)[0]),
}
# A MSG holding one scalar of a fixed size: its opcode -> (size with the opcode, reader).
_FIXED_SCALARS: Dict[int, Tuple[int, Callable[[bytes, int], Any]]] = {
    op.NONE: (1, lambda data, at: None),
    op.NEWTRUE: (1, lambda data, at: True),
    op.NEWFALSE: (1, lambda data, at: False),
    op.BINFLOAT: (9, lambda data, at: _F64(data, at)[0]),
    **_SMALL_INTS,
}
_TEXT = {op.SHORT_BINUNICODE: (1, True), op.BINUNICODE: (4, True), op.SHORT_BINBYTES: (1, False), op.BINBYTES: (4, False)}
_NO_MATCH: Any = object()
# How many bytes a scalar of fixed size takes in a canonical MSG (between the header and "sb.")
_SCALAR_SIZES = {code: size for code, (size, _) in _FIXED_SCALARS.items()}
_SCALAR_SIZES.update({code: -1 for code in range(256) if code not in _SCALAR_SIZES and code not in (*_TEXT, op.LONG1)})


def _small_int(data: bytes, pos: int) -> Tuple[Any, int]:
    """A BININT1, BININT2 or BININT at ``pos``: (value, next position), or (None, pos)."""
    code = data[pos]
    if code == _BININT1:
        return data[pos + 1], pos + 2
    if code == _BININT:
        return _I32(data, pos + 1)[0], pos + 5
    if code == _BININT2:
        return _U16(data, pos + 1)[0], pos + 3
    return None, pos


def _register(data: bytes, size: int) -> Optional[Decoded]:
    """The canonical RegisterCN with ints of BININT1/BININT2/BININT, else None."""
    try:
        start_time, pos = _small_int(data, 75)
        if start_time is None or data[pos : pos + 16] != _REGISTER_LIVE_KEY:
            return None
        live_time, pos = _small_int(data, pos + 16)
    except (IndexError, struct.error):
        return None
    if live_time is None or pos + 3 != size or data[pos:] != b"ub.":
        return None
    return "RegisterCN", {"_cn_start_time": start_time, "_cn_live_time": live_time}


def _one_scalar(data: bytes, end: int) -> Any:
    """The value of a canonical MSG whose value (bytes 56 to ``end``) is one scalar, else _NO_MATCH."""
    code = data[_MSG_VALUE_AT]
    at = _MSG_VALUE_AT + 1
    fixed = _FIXED_SCALARS.get(code)
    if fixed is not None:
        return fixed[1](data, at) if at - 1 + fixed[0] == end else _NO_MATCH
    if code == op.LONG1:
        return int.from_bytes(data[at + 1 : end], "little", signed=True) if at + 1 + data[at] == end else _NO_MATCH
    text = _TEXT.get(code)
    if text is None or end < at + text[0] + 1 or data[end - 1] != op.MEMOIZE:
        return _NO_MATCH
    length = data[at] if text[0] == 1 else _U32(data, at)[0]
    if at + text[0] + length + 1 != end:
        return _NO_MATCH
    if not text[1]:
        return data[at + text[0] : end - 1]
    try:
        return _utf8(data, at + text[0], end - 1)
    except ProtocolError:
        return _NO_MATCH


# The strs of the MSG header as the core would decode them: objects of their
# own, never the interned literals, so that re-encoding shares what the
# payload shared and nothing more.
_HEADER_STRS = ("".join(op.COMMAND_MODULE), "".join(("M", "SG")), "".join(("m", "sg")))


def _msg_machine() -> Machine:
    """A machine as the canonical MSG header (bytes 0 to 56) leaves it."""
    command = CommandToken("MSG")
    state: Dict[Any, Any] = {}
    module, class_name, key = _HEADER_STRS
    m = Machine([command, state, key], {0: module, 1: class_name, 2: _MSG_GLOBAL, 3: command, 4: state, 5: key}, command)
    m.figures[id(state)] = (1, 1)
    return m


def decode_payload(data: bytes, *, templates: bool = True) -> Decoded:
    """Decode one payload into ``(class_name, state)``.

    Raises :class:`~skyllh_cluster.errors.ProtocolError` for anything outside
    the profile.  ``templates=False`` skips the templates (a test hook: the
    property tests compare both ways).
    """
    size = len(data)
    if templates and size <= _CONSTANT_SIZE:  # hashing a long payload would cost more than decoding it
        constant = _CONSTANTS.get(data)
        if constant is not None:
            return constant, {}
    if templates and size > 59 and data[:3] == _PROTO4_FRAME and _U64(data, 3)[0] == size - 11:
        if data[11:56] == MSG_HEAD and data[-3:] == b"sb.":
            if data[56] == _SHORT_BINUNICODE and data[57] + 62 == size and data[-4] == _MEMOIZE:
                try:  # the most common MSG of all, one short str, without a call
                    return "MSG", {"msg": data[58:-4].decode("utf-8", "surrogatepass")}
                except UnicodeDecodeError:
                    pass  # the tokenizer reports it
            if _SCALAR_SIZES.get(data[56], size - 59) == size - 59:  # a fixed size must fit, or any size
                value = _one_scalar(data, size - 3)
                if value is not _NO_MATCH:
                    return "MSG", {"msg": value}
            return _run(data, _msg_machine(), _MSG_VALUE_AT, op.CANONICAL_PROTOCOL, size)
        if data[11:75] == REGISTER_HEAD:
            registered = _register(data, size)
            if registered is not None:
                return registered
    if not data:
        raise ProtocolError("ENC-1", "the payload is empty", 0)
    if data[0] != op.PROTO:
        raise ProtocolError("ENC-1", f"a payload starts with PROTO, not {op.opcode_name(data[0])}", 0)
    if size < 2:
        _overrun(op.PROTO, 0)
    if not op.MIN_PROTOCOL <= data[1] <= op.MAX_PROTOCOL:
        raise ProtocolError("ENC-1", f"pickle protocol {data[1]} is not one of 2 to 5", 0)
    return _run(data, Machine(), 2, data[1], -1)
