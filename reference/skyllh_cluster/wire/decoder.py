"""The fast path of ``loads``: a hand-written tokenizer over the semantic core.

:func:`decode_payload` reads a payload's opcodes and arguments itself (the
syntax of ``spec/encoding-profile.md`` sections 1 and 2, checked byte by
byte) and hands each to :data:`~skyllh_cluster.wire.machine.HANDLERS`, the
one place that gives opcodes meaning.  The normative grammar
(:mod:`~skyllh_cluster.wire.grammar`) tokenizes independently and calls the
same handlers.

Before the tokenizer, *templates* recognise the canonical shapes that carry
most traffic and build their result without the core: the constant ACK and
ShutdownCN payloads (:data:`CONSTANT_PAYLOADS`), the canonical RegisterCN
with two small ints (one struct per int width, :func:`register_times`), and
the canonical MSG whose value has at most two container levels, str dict
keys and no memo reference (:func:`msg_value`: a short str without a call,
else value by value, one reader per shape of CPython's output).  Such a
value meets every limit of ENC-6 by construction (see the comment above
:func:`_items`), so a template has nothing to count.  A canonical MSG
holding anything else starts the tokenizer after its fixed 56-byte header,
on a machine set up as the header leaves it (:func:`decode_untemplated`).
A template never refuses: anything it does not match exactly goes to the
tokenizer, which reports the clause and offset.  Property tests hold every
template equal to ``decode_payload(data, templates=False)`` and to the
grammar, on generated values and on their bytes mutated.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

from ..errors import ProtocolError
from . import opcodes as op
from .framing import MAX_PAYLOAD
from .machine import HANDLERS, CommandToken, Decoded, Machine, NamedGlobal, Refusal, finish, push_argument

__all__ = [
    "decode_payload",
    "decode_untemplated",
    "msg_value",
    "register_times",
    "NO_MATCH",
    "CONSTANT_PAYLOADS",
    "CONSTANT_SIZE",
    "CLASS_NAME_SIZE_AT",
    "CANONICAL_ACK",
    "CANONICAL_SHUTDOWN_CN",
    "REGISTER_HEAD",
    "MSG_HEAD",
]

_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_F64 = struct.Struct(">d").unpack_from

# Argument kinds by how the tokenizer reads them, the common ones first.
_A = op.ArgKind
_NO_ARG, _BYTE, _SHORT_STR, _FLOAT, _FRAME, _TWO_LINES, _INT32, _UINT16, _NOT_ALLOWED = 0, 1, 2, 3, 4, 5, 6, 7, -1
# The rest: (width of the field or length prefix, how to read it, what the bytes become).
_RARE: Dict[op.ArgKind, Tuple[int, str, str]] = {
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
_COMMON = {
    _A.NONE: _NO_ARG,
    _A.U8: _BYTE,
    _A.UTF8_U8: _SHORT_STR,
    _A.FLOAT64_BE: _FLOAT,
    _A.TWO_LINES: _TWO_LINES,
    _A.I32: _INT32,
    _A.U16: _UINT16,
}


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


def _frame_end(data: bytes, pos: int, start: int) -> int:
    """Where the frame whose FRAME opcode is at ``start`` ends (its contents start at ``pos``)."""
    if pos > len(data):
        _overrun(op.FRAME, start)
    length = _U64(data, pos - 8)[0]
    if pos + length > len(data):
        raise ProtocolError("ENC-1", f"FRAME of {length} bytes runs past the end of the payload", start)
    return pos + length


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
    stop, push = op.STOP, push_argument  # bound once: this loop runs per opcode
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
                if code == stop:
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
            elif kind == _INT32:
                if pos + 4 > end:
                    _overrun(code, start)
                arg = _I32(data, pos)[0]
                pos += 4
            elif kind == _UINT16:
                if pos + 2 > end:
                    _overrun(code, start)
                arg = data[pos] | data[pos + 1] << 8
                pos += 2
            elif kind >= 16:
                arg, pos = _read_rare(data, pos, end, kind, code, start)
            elif kind == _FRAME:
                if start < frame_end:
                    raise ProtocolError("ENC-1", "FRAME inside a frame", start)
                pos += 8
                frame_end = end = _frame_end(data, pos, start)
                continue
            elif kind == _TWO_LINES:
                arg, pos = _read_global(data, pos, end, start)
            else:
                _not_allowed(code, protocol, start)
            handler = handlers[code]
            if handler is push:  # the most common meaning, without the call
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
#: The payloads whose meaning is constant: their exact bytes -> the class name.
CONSTANT_PAYLOADS: Dict[bytes, str] = {CANONICAL_ACK: "ACK", CANONICAL_SHUTDOWN_CN: "ShutdownCN"}
#: The longest of them: a longer payload is not looked up (hashing it would cost more than decoding it).
CONSTANT_SIZE = max(map(len, CONSTANT_PAYLOADS))
# Bytes 11.. of the canonical RegisterCN up to its first int, and of the MSG up to its value.
REGISTER_HEAD = bytes.fromhex(
    "8c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a5265676973746572434e9493942981947d9428"
    "8c0e5f636e5f73746172745f74696d6594"
)
_REGISTER_LIVE_KEY = b"\x8c\x0d_cn_live_time\x94"
MSG_HEAD = bytes.fromhex("8c17736b796c6c682e636c75737465722e636f6d6d616e6473948c034d53479493942981947d948c036d736794")
_MSG_VALUE_AT = 11 + len(MSG_HEAD)  # 56
_MSG_TAIL = b"sb."
#: Where a canonical payload has the length of its class name (3 for MSG, 10 for RegisterCN).
CLASS_NAME_SIZE_AT = 38
_MSG_START = struct.Struct("<3sQ45sBB").unpack_from
_MEMO_MSG_TAIL = b"\x94sb."
_MSG_GLOBAL = NamedGlobal(op.COMMAND_MODULE, "MSG", op.GlobalRole.COMMAND_CLASS)

#: What a template returns when it does not match.
NO_MATCH: Any = object()


def _register_shapes() -> Dict[int, Tuple[Callable[[bytes], Tuple[Any, ...]], Tuple[bytes, ...]]]:
    """The canonical RegisterCN layouts, one per pair of int opcodes (BININT1, BININT2, BININT).

    Keyed by ``size << 8 | first int opcode`` (the size then fixes the
    second): the struct that reads the payload at once, and the constant
    fields it must find around the two ints: everything up to the first int,
    the second key with the second int's opcode, and ``ub.``.
    """
    fields = {op.BININT1: "B", op.BININT2: "H", op.BININT: "i"}
    shapes = {}
    for first, first_field in fields.items():
        for second, second_field in fields.items():
            head_size, key_size = 11 + len(REGISTER_HEAD) + 1, len(_REGISTER_LIVE_KEY) + 1
            layout = struct.Struct(f"<{head_size}s{first_field}{key_size}s{second_field}3s")
            constants = (
                _PROTO4_FRAME + struct.pack("<Q", layout.size - 11) + REGISTER_HEAD + bytes((first,)),
                _REGISTER_LIVE_KEY + bytes((second,)),
                b"ub.",
            )
            shapes[layout.size << 8 | first] = (layout.unpack_from, constants)
    return shapes


_REGISTER_SHAPES = _register_shapes()
_REGISTER_FIRST_INT = 11 + len(REGISTER_HEAD)  # 75


def register_times(data: bytes) -> Optional[Tuple[int, int]]:
    """The (start time, live time) of a canonical RegisterCN whose ints are BININT1/BININT2/BININT, else None."""
    size = len(data)
    if size <= _REGISTER_FIRST_INT:
        return None
    shape = _REGISTER_SHAPES.get(size << 8 | data[_REGISTER_FIRST_INT])
    if shape is None:
        return None
    fields = shape[0](data)  # (head, start time, live key, live time, tail)
    if fields[::2] != shape[1]:
        return None
    return fields[1], fields[3]


# The value templates read canonical values of at most two container levels,
# without memo references, in payloads that fit in a frame.  Such a value
# meets ENC-6 by construction: it costs no more than its bytes, and its depth
# is at most three.  Every str, bytes, list, dict and non-empty tuple must be
# followed by MEMOIZE, as CPython writes them; the memo is never read, so
# MEMOIZE has no other effect.  Dict keys must be str.  Strs are decoded as
# strict UTF-8, the fastest way: one with a surrogate is the tokenizer's
# (surrogatepass), which gives the same str.  A reader stops at the
# first byte it does not take; its caller decides whether that byte ends the
# part it reads, and anything unexpected ends the template (NO_MATCH).
_TEMPLATE_ROOM = 2
_CONTAINERS = (list, dict, tuple)
_MISSES = (IndexError, struct.error, UnicodeDecodeError, ProtocolError)
_K, _M, _J, _G, _N = op.BININT1, op.BININT2, op.BININT, op.BINFLOAT, op.NONE
_STR, _LONG_STR, _BYTES, _LONG_BYTES = op.SHORT_BINUNICODE, op.BINUNICODE, op.SHORT_BINBYTES, op.BINBYTES
_MARK, _MEMO, _APPEND, _APPENDS, _SETITEM, _SETITEMS = op.MARK, op.MEMOIZE, op.APPEND, op.APPENDS, op.SETITEM, op.SETITEMS
_TUPLE1, _TUPLE3 = op.TUPLE1, op.TUPLE3
_NEWTRUE, _NEWFALSE, _EMPTY_TUPLE, _LONG1 = op.NEWTRUE, op.NEWFALSE, op.EMPTY_TUPLE, op.LONG1
_EMPTY_LIST, _EMPTY_DICT = op.EMPTY_LIST, op.EMPTY_DICT
# A run of BININT1 is read at once, this many bytes at a time: a run costs no more than its bytes.
_RUN_WINDOW = 512
_RUN_OF_K = bytes((_K,))
# The bytes that end a run of values in a template: they close a container or the state.
_ENDS = frozenset((op.APPEND, op.APPENDS, op.SETITEM, op.SETITEMS, op.TUPLE, op.STOP, op.BUILD))


def _items(data: bytes, pos: int, items: List[Any], room: int) -> int:
    """Read values into ``items`` from ``pos``; return the position of the first byte that starts none.

    ``room`` is the most container levels an item may have.  TUPLE1 to
    TUPLE3 take their items from ``items``, which the caller starts empty
    after each MARK, so they never reach below it.
    """
    append = items.append
    while True:
        code = data[pos]
        if code == _K:
            if data[pos + 2] != _K:
                append(data[pos + 1])
                pos += 2
                continue
            run = data[pos : pos + _RUN_WINDOW : 2]
            count = len(run) - len(run.lstrip(_RUN_OF_K))
            items += data[pos + 1 : pos + 2 * count : 2]
            pos += 2 * count
        elif code == _STR:
            end = pos + 2 + data[pos + 1]
            if data[end] != _MEMO:
                return pos
            append(data[pos + 2 : end].decode())
            pos = end + 1
        elif code == _N:
            append(None)
            pos += 1
        elif code == _G:
            append(_F64(data, pos + 1)[0])
            pos += 9
        elif code in _ENDS:
            return pos
        elif code == _EMPTY_LIST and room and data[pos + 1] == _MEMO:
            value, after = _list(data, pos + 2, room - 1)
            if value is NO_MATCH:
                return pos
            append(value)
            pos = after
        elif code == _M:
            append(data[pos + 1] | data[pos + 2] << 8)
            pos += 3
        elif code == _J:
            append(_I32(data, pos + 1)[0])
            pos += 5
        elif _TUPLE1 <= code <= _TUPLE3:
            count = code - _TUPLE1 + 1
            if room < 1 or len(items) < count or data[pos + 1] != _MEMO:
                return pos
            value = tuple(items[-count:])
            for item in value:
                if type(item) in _CONTAINERS:
                    return pos
            del items[-count:]
            append(value)
            pos += 2
        else:
            value, after = _other(data, pos, room)
            if value is NO_MATCH:
                return pos
            append(value)
            pos = after


def _other(data: bytes, pos: int, room: int) -> Tuple[Any, int]:
    """A value the loop of :func:`_items` leaves out: (value, next position), or (NO_MATCH, pos)."""
    code = data[pos]
    if code == _NEWTRUE or code == _NEWFALSE:
        return code == _NEWTRUE, pos + 1
    if code == _EMPTY_TUPLE:
        return (), pos + 1
    if code == _LONG1:
        end = pos + 2 + data[pos + 1]
        if end > len(data):
            return NO_MATCH, pos
        return int.from_bytes(data[pos + 2 : end], "little", signed=True), end
    if code == _BYTES or code == _LONG_BYTES or code == _LONG_STR:
        at = pos + 2 if code == _BYTES else pos + 5
        end = at + (data[pos + 1] if code == _BYTES else _U32(data, pos + 1)[0])
        if end >= len(data) or data[end] != _MEMO:
            return NO_MATCH, pos
        return (_utf8(data, at, end) if code == _LONG_STR else data[at:end]), end + 1
    if room < 1 or data[pos + 1] != _MEMO and code != _MARK:
        return NO_MATCH, pos
    if code == _EMPTY_LIST:
        return _list(data, pos + 2, room - 1)
    if code == _EMPTY_DICT:
        return _dict(data, pos + 2, room - 1)
    if code == _MARK:  # a tuple of more than three items
        items: List[Any] = []
        end = _items(data, pos + 1, items, room - 1)
        if data[end] == op.TUPLE and data[end + 1] == _MEMO:
            return tuple(items), end + 2
    return NO_MATCH, pos


def _one(data: bytes, pos: int, room: int) -> Tuple[Any, int]:
    """Exactly one value at ``pos``, one that needs no later opcode (not the items of a TUPLE1 to TUPLE3).

    (value, next position), or (NO_MATCH, pos).  The one item of a list or
    entry of a dict is read with it, never with the loop of :func:`_items`:
    an empty container gives back what follows it, and reading more than one
    value ahead each time would read a run of empty containers quadratically.
    """
    code = data[pos]
    if code == _K:
        return data[pos + 1], pos + 2
    if code == _STR:
        end = pos + 2 + data[pos + 1]
        if data[end] != _MEMO:
            return NO_MATCH, pos
        return data[pos + 2 : end].decode(), end + 1
    if code == _N:
        return None, pos + 1
    if code == _G:
        return _F64(data, pos + 1)[0], pos + 9
    if code == _M:
        return data[pos + 1] | data[pos + 2] << 8, pos + 3
    if code == _J:
        return _I32(data, pos + 1)[0], pos + 5
    return _other(data, pos, room)


def _list(data: bytes, pos: int, room: int) -> Tuple[Any, int]:
    """The items of a list from ``pos``, after EMPTY_LIST MEMOIZE: CPython's one APPEND or batches of APPENDS."""
    value: List[Any] = []
    if data[pos] == _MARK:
        while data[pos] == _MARK:
            batch: List[Any] = []
            end = _items(data, pos + 1, batch, room)
            if data[end] != _APPENDS:
                return NO_MATCH, pos
            value += batch
            pos = end + 1
        return value, pos
    item, end = _one(data, pos, room)
    if item is not NO_MATCH and data[end] == _APPEND:
        return [item], end + 1
    return value, pos  # an empty list: the values after it are not its own


def _entries(data: bytes, pos: int, value: Dict[str, Any], room: int) -> int:
    """Read ``str key, value`` pairs into ``value`` from ``pos``; return the position of the first byte that is no key.

    The fast form of a SETITEMS batch: a key is a short str, a value is one
    opcode's worth (or one container), never the items of a TUPLE1 to TUPLE3.
    Returns -1 where no template can go on (reading the batch as items would
    stop at the same byte); where it stops at another byte than SETITEMS,
    :func:`_dict` reads the batch again as items.
    """
    while data[pos] == _STR:
        end = pos + 2 + data[pos + 1]
        if data[end] != _MEMO:
            return -1
        key = data[pos + 2 : end].decode()
        item, pos = _one(data, end + 1, room)
        if item is NO_MATCH:
            return -1
        value[key] = item
    return pos


def _dict(data: bytes, pos: int, room: int) -> Tuple[Any, int]:
    """The entries of a dict from ``pos``, after EMPTY_DICT MEMOIZE: one SETITEM or batches of SETITEMS."""
    value: Dict[str, Any] = {}
    start = pos
    while data[pos] == _MARK:
        end = _entries(data, pos + 1, value, room)
        if end < 0:
            return NO_MATCH, start
        if data[end] != _SETITEMS:  # the fast form misread (a TUPLE1 to TUPLE3?): every batch again, as items
            value, pos = {}, start
            while data[pos] == _MARK:
                end = _batch(data, pos + 1, value, room)
                if end < 0:
                    return NO_MATCH, start
                pos = end + 1
            break
        pos = end + 1
    if value:
        return value, pos
    key, end = _one(data, pos, room)
    if type(key) is str:
        item, end = _one(data, end, room)
        if item is not NO_MATCH and data[end] == _SETITEM:
            return {key: item}, end + 1
    return value, pos  # an empty dict, or batches of SETITEMS


def _batch(data: bytes, pos: int, value: Dict[str, Any], room: int) -> int:
    """A SETITEMS batch read as items (its values may be tuples of TUPLE1 to TUPLE3): the position of SETITEMS, or -1."""
    batch: List[Any] = []
    end = _items(data, pos, batch, room)
    if data[end] != _SETITEMS or len(batch) & 1:
        return -1
    for key in batch[0::2]:
        if type(key) is not str:
            return -1
    entries = iter(batch)
    value.update(zip(entries, entries))
    return end


def msg_value(data: bytes) -> Any:
    """The value of a canonical MSG that a template reads, else :data:`NO_MATCH`.

    A fresh value every time: nothing the caller may change is shared.
    """
    size = len(data)
    if size < 60:
        return NO_MATCH
    start = _MSG_START(data)  # the frame header, the head, and the value's first two bytes
    if start[2] != MSG_HEAD or start[1] != size - 11 or start[0] != _PROTO4_FRAME:
        return NO_MATCH
    code = start[3]
    if code == _STR and start[4] + 62 == size and data[-4:] == _MEMO_MSG_TAIL:
        try:  # the most common MSG of all, one short str
            return data[58:-4].decode()
        except UnicodeDecodeError:
            return NO_MATCH  # the tokenizer decodes a surrogate, or reports bad UTF-8
    if size > MAX_PAYLOAD or data[-3:] != _MSG_TAIL:
        return NO_MATCH
    try:
        if (code == _EMPTY_DICT or code == _EMPTY_LIST) and start[4] == _MEMO:  # the commonest, without _one
            value, end = (_dict if code == _EMPTY_DICT else _list)(data, 58, _TEMPLATE_ROOM - 1)
            return value if end == size - 3 else NO_MATCH
        value, end = _one(data, _MSG_VALUE_AT, _TEMPLATE_ROOM)
        if end == size - 3 or value is NO_MATCH:
            return value
        return _small_tuple(data, value, end, size - 3)
    except _MISSES:
        return NO_MATCH


def _small_tuple(data: bytes, first: Any, pos: int, end: int) -> Any:
    """A value that is a tuple of one to three scalars, written before its TUPLE1 to TUPLE3, ending at ``end``; else NO_MATCH.

    Read one value at a time: the value of a MSG is one object, so no more
    than three may come before the TUPLE opcode.
    """
    items = [first]
    while not _TUPLE1 <= data[pos] <= _TUPLE3:
        item, pos = _one(data, pos, 0)
        if item is NO_MATCH or len(items) == 3:
            return NO_MATCH
        items.append(item)
    if data[pos] - _TUPLE1 + 1 != len(items) or data[pos + 1] != _MEMO or pos + 2 != end:
        return NO_MATCH
    for item in items:
        if type(item) in _CONTAINERS:
            return NO_MATCH
    return tuple(items)


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


def decode_untemplated(data: bytes) -> Decoded:
    """What :func:`decode_payload` does when no template takes ``data``: the tokenizer and the core.

    A payload that starts with the canonical MSG header is tokenized from
    its value on, on a machine set up as the header leaves it.
    """
    size = len(data)
    if size > 59 and data[11:56] == MSG_HEAD and data[:3] == _PROTO4_FRAME and _U64(data, 3)[0] == size - 11:
        if data[-3:] == _MSG_TAIL:
            return _run(data, _msg_machine(), _MSG_VALUE_AT, op.CANONICAL_PROTOCOL, size)
    return decode_payload(data, templates=False)


def decode_payload(data: bytes, *, templates: bool = True) -> Decoded:
    """Decode one payload into ``(class_name, state)``.

    Raises :class:`~skyllh_cluster.errors.ProtocolError` for anything outside
    the profile.  ``templates=False`` skips the templates (a test hook: the
    property tests compare both ways).
    """
    size = len(data)
    if templates:
        if size <= CONSTANT_SIZE:
            constant = CONSTANT_PAYLOADS.get(data)
            if constant is not None:
                return constant, {}
        value = msg_value(data)
        if value is not NO_MATCH:
            return "MSG", {"msg": value}
        times = register_times(data)
        if times is not None:
            return "RegisterCN", {"_cn_start_time": times[0], "_cn_live_time": times[1]}
        return decode_untemplated(data)
    if not data:
        raise ProtocolError("ENC-1", "the payload is empty", 0)
    if data[0] != op.PROTO:
        raise ProtocolError("ENC-1", f"a payload starts with PROTO, not {op.opcode_name(data[0])}", 0)
    if size < 2:
        _overrun(op.PROTO, 0)
    if not op.MIN_PROTOCOL <= data[1] <= op.MAX_PROTOCOL:
        raise ProtocolError("ENC-1", f"pickle protocol {data[1]} is not one of 2 to 5", 0)
    return _run(data, Machine(), 2, data[1], -1)
