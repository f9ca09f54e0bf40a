"""The fast decoder: a payload to a command, in one pass, without pickle.

This is what :func:`skyllh_cluster.codec.loads` runs on every received frame.
It accepts exactly what the normative grammar (:mod:`skyllh_cluster.wire.grammar`)
accepts and builds the same command; the property tests hold the two together.
It is written for speed, the grammar for clarity:

* the canonical ACK and ShutdownCN payloads are looked up whole;
* the canonical RegisterCN and the canonical MSG prefix are matched as fixed
  bytes, and a MSG holding one short str is decoded without a loop;
* everything else goes through one opcode loop.

Nothing is imported, called or looked up by a name taken from the payload:
the allowed globals are recognised by comparing names with the profile's
table (:mod:`skyllh_cluster.wire.opcodes`) and stand for data (ENC-5).
Every length is checked against the bytes present before anything is
allocated, nesting and tree size are bounded (ENC-6), and every failure is a
:class:`~skyllh_cluster.errors.ProtocolError` with a clause and an offset.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from ..commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from ..errors import ProtocolError
from . import opcodes as op
from .opcodes import (  # bound as globals: the opcode loop compares against them
    PROTO,
    FRAME,
    STOP,
    MARK,
    MEMOIZE,
    BINPUT,
    LONG_BINPUT,
    BINGET,
    LONG_BINGET,
    NONE,
    NEWTRUE,
    NEWFALSE,
    BININT1,
    BININT2,
    BININT,
    LONG1,
    LONG4,
    BINFLOAT,
    SHORT_BINUNICODE,
    BINUNICODE,
    BINUNICODE8,
    SHORT_BINBYTES,
    BINBYTES,
    BINBYTES8,
    EMPTY_LIST,
    APPEND,
    APPENDS,
    EMPTY_DICT,
    SETITEM,
    SETITEMS,
    EMPTY_TUPLE,
    TUPLE1,
    TUPLE2,
    TUPLE3,
    TUPLE,
    GLOBAL,
    STACK_GLOBAL,
    NEWOBJ,
    REDUCE,
    BUILD,
)
from .encoder import encode_command
from .values import MAX_DEPTH

__all__ = ["decode_payload", "GlobalRef"]


class GlobalRef:
    """A global named by a payload: only its name and role, never the object."""

    __slots__ = ("module", "name", "role")

    def __init__(self, module: str, name: str, role: op.GlobalRole) -> None:
        self.module = module
        self.name = name
        self.role = role

    def __repr__(self) -> str:
        return f"GlobalRef({self.module}.{self.name})"


_COMMAND_CLASSES = {"ACK": ACK, "MSG": MSG, "ShutdownCN": ShutdownCN, "RegisterCN": RegisterCN}
_new = object.__new__
_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_F64 = struct.Struct(">d").unpack_from
_VALUE_TYPES = frozenset((type(None), bool, int, float, str, bytes, list, tuple, dict))
_EMPTY_TUPLE: Tuple[()] = ()
_MAX_NODES = op.MAX_VALUE_NODES
# Every container built may be nested one level deeper than a MSG value,
# since the value sits in the command's state dict.
_MAX_HEIGHT = MAX_DEPTH + 1

# --- whole-payload and prefix fast paths -------------------------------------
_CONSTANT_COMMANDS = {encode_command(ACK()): ACK, encode_command(ShutdownCN()): ShutdownCN}
_CONSTANT_SIZE = max(map(len, _CONSTANT_COMMANDS))
_REGISTER_SAMPLE = encode_command(RegisterCN(0, 0))
_MSG_SAMPLE = encode_command(MSG(None))
# Bytes 11.. of the canonical RegisterCN up to its first int, and of the MSG
# up to its value (the FRAME length in bytes 3..10 differs per payload).
_REGISTER_HEAD = _REGISTER_SAMPLE[11:75]
_REGISTER_LIVE_KEY = b"\x8c\x0d_cn_live_time\x94"
_MSG_HEAD = _MSG_SAMPLE[11:56]
_PROTO4_FRAME = b"\x80\x04\x95"
_MSG_TAIL = b"sb."
_START_KEY, _LIVE_KEY, _MSG_KEY = "_cn_start_time", "_cn_live_time", "msg"


def _fail(clause: str, reason: str, offset: int) -> NoReturn:
    raise ProtocolError(clause, reason, offset)


def _canonical_small_int(data: bytes, pos: int) -> Tuple[Optional[int], int]:
    """A BININT1/BININT2/BININT at ``pos``: (value, next pos), or (None, pos)."""
    code = data[pos]
    if code == op.BININT1:
        return data[pos + 1], pos + 2
    if code == op.BININT2:
        return _U16(data, pos + 1)[0], pos + 3
    if code == op.BININT:
        return _I32(data, pos + 1)[0], pos + 5
    return None, pos


def _register_fast(data: bytes) -> Optional[Command]:
    try:
        start, pos = _canonical_small_int(data, 75)
        if start is None or data[pos : pos + 16] != _REGISTER_LIVE_KEY:
            return None
        live, pos = _canonical_small_int(data, pos + 16)
    except (IndexError, struct.error):
        return None  # cut short: the general loop says where
    if live is None or data[pos:] != b"ub.":
        return None
    command = _new(RegisterCN)
    # Set one by one, not as a new __dict__: then the attributes live in the
    # object itself (Python 3.11+), 110 bytes less for each registered node.
    command._cn_start_time = start
    command._cn_live_time = live
    return command


# --- the canonical MSG value loop ---------------------------------------------
# A value as CPython's pickler writes it at protocol 4, inside the canonical
# MSG frame, is decoded by an optimistic loop that knows only the opcodes such
# a value uses and gives up (returns _UNSURE) on anything unusual or invalid:
# the general loop then decodes the payload from scratch, so every refusal
# keeps its clause, offset and reason.  Giving up is always safe, so the loop
# leans on Python's own checks: an index past the end raises IndexError, a
# length past the value makes ``pos`` overshoot ``limit``, a bad UTF-8 or
# surrogate raises UnicodeDecodeError, an unhashable key TypeError.
_UNSURE = object()
# The memo after the canonical MSG header: its strings may be fetched as
# values, the class, the command and its state may not (the general loop
# refuses or bounds those).  The key is the very str the state dict holds,
# so that a value sharing it encodes again as the same memo reference.
_MSG_MEMO = (_MSG_SAMPLE[13:36].decode("ascii"), _MSG_SAMPLE[39:42].decode("ascii"), _UNSURE, _UNSURE, _UNSURE, _MSG_KEY)
_CONTAINER_TYPES = (list, dict, tuple)
_BININT1_BYTE = bytes((BININT1,))
# How far one look at a run of BININT1 reaches (a longer run takes several).
_RUN_BYTES = 512
# Strings this long are decoded from a view of the payload, without a copy.
_VIEW_STR_SIZE = 1024


def _value_height(value: Any) -> int:
    """The nesting of containers in a tree-shaped value (0 for a scalar)."""
    level = [value] if type(value) in _CONTAINER_TYPES else []
    height = 0
    while level:
        height += 1
        inner: List[Any] = []
        for box in level:
            if type(box) is dict:
                inner += [key for key in box if type(key) is tuple]
                inner += [item for item in box.values() if type(item) in _CONTAINER_TYPES]
            else:
                inner += [item for item in box if type(item) in _CONTAINER_TYPES]
        level = inner
    return height


def _canonical_msg_value(data: bytes, limit: int) -> Any:  # noqa: C901 - one loop, on purpose
    """The value of a canonical MSG payload: opcodes 56 to ``limit``, or _UNSURE.

    No memo reference fetches a container here (the loop gives up on one), so
    the value is a tree of at most one node per opcode, far below the node
    limit; nesting is bounded by counting containers and, past the limit,
    measuring the tree.
    """
    stack: List[Any] = []
    push = stack.append
    outer: List[List[Any]] = []  # the stacks below the open MARKs
    memo = list(_MSG_MEMO)
    memoize = memo.append
    containers = 0
    pos = 56
    try:
        # Ordered by how often CPython writes each opcode in a value.
        while pos < limit:
            code = data[pos]
            if code == SHORT_BINUNICODE:
                while True:  # a run of memoized strs, as in a list of them, without the dispatch
                    end = pos + 2 + data[pos + 1]
                    item = data[pos + 2 : end].decode()
                    push(item)
                    if data[end] != MEMOIZE:
                        pos = end
                        break
                    memoize(item)
                    pos = end + 1
                    if data[pos] != SHORT_BINUNICODE:
                        break
            elif code == BININT1:
                if data[pos + 2] == BININT1:  # a run of small ints, as in a list of them: take it whole
                    run = data[pos : min(pos + _RUN_BYTES, limit) : 2]
                    end = pos + 2 * (len(run) - len(run.lstrip(_BININT1_BYTE)))
                    stack.extend(data[pos + 1 : end : 2])
                    pos = end
                else:
                    push(data[pos + 1])
                    pos += 2
            elif code == BINFLOAT:
                push(_F64(data, pos + 1)[0])
                pos += 9
            elif code == MARK:
                outer.append(stack)
                stack = []
                push = stack.append
                pos += 1
            elif code == APPENDS:
                items = stack
                stack = outer.pop()
                push = stack.append
                target = stack[-1]
                if type(target) is not list:
                    return _UNSURE
                target.extend(items)
                pos += 1
            elif code == SETITEMS:
                items = stack
                stack = outer.pop()
                push = stack.append
                target = stack[-1]
                if type(target) is not dict or len(items) & 1:
                    return _UNSURE
                for i in range(0, len(items), 2):
                    target[items[i]] = items[i + 1]
                pos += 1
            elif code == EMPTY_LIST or code == EMPTY_DICT:
                item = [] if code == EMPTY_LIST else {}
                containers += 1
                push(item)
                pos += 1
                if data[pos] == MEMOIZE:
                    memoize(item)
                    pos += 1
                if data[pos] == MARK:
                    outer.append(stack)
                    stack = []
                    push = stack.append
                    pos += 1
            elif code == MEMOIZE:
                memoize(stack[-1])
                pos += 1
            elif code == TUPLE2:
                item = (stack[-2], stack[-1])
                del stack[-1]
                stack[-1] = item
                containers += 1
                pos += 1
                if data[pos] == MEMOIZE:
                    memoize(item)
                    pos += 1
            elif code == BININT:
                push(_I32(data, pos + 1)[0])
                pos += 5
            elif code == NONE:
                push(None)
                pos += 1
            elif code == NEWTRUE:
                push(True)
                pos += 1
            elif code == NEWFALSE:
                push(False)
                pos += 1
            elif code == BINGET:
                item = memo[data[pos + 1]]
                if item is _UNSURE or type(item) in _CONTAINER_TYPES:
                    return _UNSURE
                push(item)
                pos += 2
            elif code == TUPLE1 or code == TUPLE3 or code == TUPLE:
                if code == TUPLE1:
                    item = (stack[-1],)
                    stack[-1] = item
                elif code == TUPLE3:
                    item = (stack[-3], stack[-2], stack[-1])
                    del stack[-2:]
                    stack[-1] = item
                else:
                    item = tuple(stack)
                    stack = outer.pop()
                    push = stack.append
                    push(item)
                containers += 1
                pos += 1
                if data[pos] == MEMOIZE:
                    memoize(item)
                    pos += 1
            elif code == EMPTY_TUPLE:
                push(_EMPTY_TUPLE)
                containers += 1
                pos += 1
            elif code == SHORT_BINBYTES:
                pos += 2
                end = pos + data[pos - 1]
                push(data[pos:end])
                pos = end
            elif code == BININT2:
                push(data[pos + 1] | data[pos + 2] << 8)
                pos += 3
            elif code == LONG1:
                pos += 2
                end = pos + data[pos - 1]
                push(int.from_bytes(data[pos:end], "little", signed=True))
                pos = end
            elif code == BINUNICODE or code == BINBYTES:
                pos += 5
                end = pos + _U32(data, pos - 4)[0]
                if code == BINBYTES:
                    push(data[pos:end])
                elif end - pos < _VIEW_STR_SIZE:
                    push(data[pos:end].decode())
                else:
                    with memoryview(data) as view:
                        push(str(view[pos:end], "utf-8"))
                pos = end
            elif code == APPEND or code == SETITEM:
                if code == APPEND:
                    target = stack[-2]
                    if type(target) is not list:
                        return _UNSURE
                    target.append(stack.pop())
                else:
                    target = stack[-3]
                    if type(target) is not dict:
                        return _UNSURE
                    target[stack[-2]] = stack[-1]
                    del stack[-2:]
                pos += 1
            else:  # rarer opcodes (LONG4, the 8-byte lengths, BINPUT, ...) and refusals
                return _UNSURE
    except (IndexError, ValueError, TypeError, struct.error):
        return _UNSURE
    if pos != limit or outer or len(stack) != 1:
        return _UNSURE
    value = stack[0]
    if containers > MAX_DEPTH and _value_height(value) > MAX_DEPTH:
        return _UNSURE
    return value


def decode_payload(data: bytes) -> Command:
    """Decode one payload (a ``bytes`` object) into a command.

    Raises :class:`ProtocolError` for anything outside the profile.
    """
    size = len(data)
    if size <= _CONSTANT_SIZE:  # hashing a long payload would cost more than decoding it
        cls = _CONSTANT_COMMANDS.get(data)
        if cls is not None:
            return _new(cls)
    if size >= 60 and data[:3] == _PROTO4_FRAME and _U64(data, 3)[0] == size - 11:
        if data[11:75] == _REGISTER_HEAD:
            command = _register_fast(data)
            if command is not None:
                return command
        elif data[11:56] == _MSG_HEAD and data[-3:] == _MSG_TAIL:
            value: Any = _UNSURE
            if data[56] == SHORT_BINUNICODE and data[57] + 62 == size and data[-4] == MEMOIZE:
                try:
                    value = data[58:-4].decode()
                except UnicodeDecodeError:
                    pass  # a surrogate, or bad UTF-8 that the general loop reports
            else:
                value = _canonical_msg_value(data, size - 3)
            if value is not _UNSURE:
                command = _new(MSG)
                command.__dict__ = {_MSG_KEY: value}
                return command
    if size > 56 and data[11:56] == _MSG_HEAD and data[:3] == _PROTO4_FRAME:
        return _Decoder(data).run_msg_value()
    return _Decoder(data).run()


def _refuse_item(item: Any, offset: int, where: str) -> NoReturn:
    """Raise the right error for a non-value put into a container."""
    if type(item) is GlobalRef:
        _fail("ENC-3", f"the global {item.module}.{item.name} may not be used as {where}", offset)
    if isinstance(item, Command):
        _fail("CMD-1", f"a command may only be the outermost object, not {where}", offset)
    _fail("VAL-1", f"{type(item).__name__} is not a value of the subset", offset)  # pragma: no cover


def _arg_overrun(name: str, offset: int) -> NoReturn:
    _fail("ENC-1", f"the argument of {name} runs past the end of the payload or of its frame", offset)


class _Decoder:
    """The general opcode loop (one payload, used once)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def run(self) -> Command:
        """Decode the payload from its first byte."""
        data = self.data
        if not data:
            _fail("ENC-1", "the payload is empty", 0)
        if data[0] != PROTO:
            _fail("ENC-1", f"a payload starts with PROTO, not {op.opcode_name(data[0])}", 0)
        if len(data) < 2:
            _arg_overrun("PROTO", 0)
        protocol = data[1]
        if not op.MIN_PROTOCOL <= protocol <= op.MAX_PROTOCOL:
            _fail("ENC-1", f"pickle protocol {protocol} is not one of 2 to 5", 0)
        return self.loop(protocol, 2, -1, None, [], {}, {id(_EMPTY_TUPLE): (1, 1)})

    def run_msg_value(self) -> Command:
        """Decode a payload that starts like the canonical MSG, from its value on.

        The first 56 bytes are the canonical header (checked by the caller
        except for the FRAME length); this sets up the stack and memo exactly
        as the loop would have left them there.
        """
        data = self.data
        frame_end = 11 + _U64(data, 3)[0]
        if not 56 <= frame_end <= len(data):
            # A FRAME that ends inside the header or past the payload: the
            # loop from the start decides (and reports) it.
            return self.run()
        command = _new(MSG)
        state: Dict[Any, Any] = {}
        key = data[52:55].decode("ascii")
        memo = {0: data[13:36].decode("ascii"), 1: data[39:42].decode("ascii"), 2: _MSG_REF, 3: command, 4: state, 5: key}
        info = {id(_EMPTY_TUPLE): (1, 1), id(state): (1, 1)}
        return self.loop(4, 56, frame_end, command, [command, state, key], memo, info)

    def loop(  # noqa: C901 - one loop over the opcodes, on purpose
        self,
        protocol: int,
        pos: int,
        frame_end: int,
        command: Optional[Command],
        stack: List[Any],
        memo: Dict[int, Any],
        info: Dict[int, Tuple[int, int]],
    ) -> Command:
        """Run the opcodes from ``pos`` to STOP.

        ``info`` holds the height and tree size of every container built, by
        id (ENC-6).  Every container is registered when it is made, so a
        reused id always holds the current object's figures.
        """
        data = self.data
        size = len(data)
        allowed = _ALLOWED_BY_PROTOCOL[protocol]
        marks: List[int] = []
        shared: set = set()  # ids of lists and dicts fetched from the memo
        key_budget = _MAX_NODES
        built = False
        # The end of the current frame, or of the payload; frame_end stays
        # where the last FRAME ended, to refuse a FRAME inside a frame.
        end = frame_end if frame_end > pos else size
        fence = 0  # stack items below this belong to an outer MARK

        while True:
            if pos >= end:
                if pos < size:  # left a frame exactly at its end
                    end = size
                else:
                    _fail("ENC-1", "the payload ends without STOP", pos)
            start = pos
            code = data[pos]
            pos += 1
            if code not in allowed:
                if code in op.PROFILE_OPCODES:
                    _fail("ENC-2", f"{op.opcode_name(code)} is not allowed in a protocol {protocol} payload", start)
                _fail("ENC-2", f"opcode {op.opcode_name(code)} is not in the profile", start)

            # Ordered by how often CPython writes each opcode: the chain is the dispatch.
            if code in _PUT_OPS:
                if code == MEMOIZE:
                    index = len(memo)
                elif code == BINPUT:
                    if pos >= end:
                        _arg_overrun("BINPUT", start)
                    index = data[pos]
                    pos += 1
                else:
                    if pos + 4 > end:
                        _arg_overrun("LONG_BINPUT", start)
                    index = _U32(data, pos)[0]
                    pos += 4
                if len(stack) <= fence:
                    _fail("ENC-1", f"{op.opcode_name(code)} with nothing on the stack to store", start)
                if index in memo:
                    _fail("ENC-4", f"memo index {index} is already in use", start)
                memo[index] = stack[-1]
            elif code in _STR_OPS:
                if code == SHORT_BINUNICODE:
                    if pos >= end:
                        _arg_overrun("SHORT_BINUNICODE", start)
                    length = data[pos]
                    pos += 1
                elif code == BINUNICODE:
                    if pos + 4 > end:
                        _arg_overrun("BINUNICODE", start)
                    length = _U32(data, pos)[0]
                    pos += 4
                else:
                    if pos + 8 > end:
                        _arg_overrun("BINUNICODE8", start)
                    length = _U64(data, pos)[0]
                    pos += 8
                if pos + length > end:
                    _arg_overrun(op.opcode_name(code), start)
                try:
                    stack.append(data[pos : pos + length].decode("utf-8", "surrogatepass"))
                except UnicodeDecodeError as exc:
                    _fail("ENC-1", f"the string is not valid UTF-8: {exc.reason}", pos + exc.start)
                pos += length
            elif code == BININT1:
                if pos >= end:
                    _arg_overrun("BININT1", start)
                stack.append(data[pos])
                pos += 1
            elif code in _GET_OPS:
                if code == BINGET:
                    if pos >= end:
                        _arg_overrun("BINGET", start)
                    index = data[pos]
                    pos += 1
                else:
                    if pos + 4 > end:
                        _arg_overrun("LONG_BINGET", start)
                    index = _U32(data, pos)[0]
                    pos += 4
                try:
                    item = memo[index]
                except KeyError:
                    _fail("ENC-4", f"memo index {index} was never stored", start)
                kind = type(item)
                if kind is list or kind is dict:
                    shared.add(id(item))
                stack.append(item)
            elif code == NONE:
                stack.append(None)
            elif code == MARK:
                marks.append(fence)
                fence = len(stack)
            elif code in _FILL_OPS:
                if code == APPEND:
                    first = len(stack) - 1
                elif code == SETITEM:
                    first = len(stack) - 2
                else:
                    if not marks:
                        _fail("ENC-1", f"{op.opcode_name(code)} without a MARK", start)
                    first = fence
                    fence = marks.pop()
                target_at = first - 1
                if target_at < fence:
                    _fail("ENC-1", f"{op.opcode_name(code)} without a container below its items", start)
                target = stack[target_at]
                is_list = code == APPEND or code == APPENDS
                if type(target) is not (list if is_list else dict):
                    _fail(
                        "ENC-1",
                        f"{op.opcode_name(code)} needs a {'list' if is_list else 'dict'}, not {type(target).__name__}",
                        start,
                    )
                if id(target) in shared:
                    _fail("VAL-3", "a container is changed after a memo reference to it (it could contain itself)", start)
                items = stack[first:]
                del stack[first:]
                height, tree = info[id(target)]
                for item in items:
                    kind = type(item)
                    if kind not in _VALUE_TYPES:
                        _refuse_item(item, start, "an item of a container")
                    if kind is list or kind is dict or kind is tuple:
                        item_height, item_tree = info[id(item)]
                        if item_height >= height:
                            height = item_height + 1
                        tree += item_tree
                    else:
                        tree += 1
                if height > _MAX_HEIGHT:
                    _fail("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers", start)
                if tree > _MAX_NODES:
                    _fail("ENC-6", f"an object has more than {op.MAX_VALUE_NODES} nodes as a tree", start)
                info[id(target)] = (height, tree)
                if is_list:
                    target.extend(items)
                else:
                    if len(items) % 2:
                        _fail("ENC-1", "SETITEMS with an odd number of items", start)
                    for i in range(0, len(items), 2):
                        key = items[i]
                        if type(key) is tuple:
                            key_budget -= info[id(key)][1]
                            if key_budget < 0:
                                _fail("ENC-6", f"the dict keys have more than {op.MAX_VALUE_NODES} nodes", start)
                        try:
                            target[key] = items[i + 1]
                        except TypeError:
                            _fail("VAL-2", f"a dict key must be hashable, not {_describe(key)}", start)
            elif code == EMPTY_LIST:
                item = []
                info[id(item)] = (1, 1)
                stack.append(item)
            elif code == EMPTY_DICT:
                item = {}
                info[id(item)] = (1, 1)
                stack.append(item)
            elif code == EMPTY_TUPLE:
                stack.append(_EMPTY_TUPLE)
            elif code in _TUPLE_OPS:
                if code == TUPLE:
                    if not marks:
                        _fail("ENC-1", "TUPLE without a MARK", start)
                    first = fence
                    fence = marks.pop()
                else:
                    first = len(stack) - (code - TUPLE1 + 1)
                    if first < fence:
                        _fail("ENC-1", f"{op.opcode_name(code)} with too few items on the stack", start)
                items = stack[first:]
                del stack[first:]
                height, tree = 0, 1
                for item in items:
                    kind = type(item)
                    if kind not in _VALUE_TYPES:
                        _refuse_item(item, start, "an item of a tuple")
                    if kind is list or kind is dict or kind is tuple:
                        item_height, item_tree = info[id(item)]
                        if item_height > height:
                            height = item_height
                        tree += item_tree
                    else:
                        tree += 1
                if height >= _MAX_HEIGHT:
                    _fail("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers", start)
                if tree > _MAX_NODES:
                    _fail("ENC-6", f"an object has more than {op.MAX_VALUE_NODES} nodes as a tree", start)
                item = tuple(items)
                info[id(item)] = (height + 1, tree)
                stack.append(item)
            elif code == BINFLOAT:
                if pos + 8 > end:
                    _arg_overrun("BINFLOAT", start)
                stack.append(_F64(data, pos)[0])
                pos += 8
            elif code == BININT2:
                if pos + 2 > end:
                    _arg_overrun("BININT2", start)
                stack.append(data[pos] | data[pos + 1] << 8)
                pos += 2
            elif code == BININT:
                if pos + 4 > end:
                    _arg_overrun("BININT", start)
                stack.append(_I32(data, pos)[0])
                pos += 4
            elif code == NEWTRUE:
                stack.append(True)
            elif code == NEWFALSE:
                stack.append(False)
            elif code in _BYTES_OPS:
                if code == SHORT_BINBYTES:
                    if pos >= end:
                        _arg_overrun("SHORT_BINBYTES", start)
                    length = data[pos]
                    pos += 1
                elif code == BINBYTES:
                    if pos + 4 > end:
                        _arg_overrun("BINBYTES", start)
                    length = _U32(data, pos)[0]
                    pos += 4
                else:
                    if pos + 8 > end:
                        _arg_overrun("BINBYTES8", start)
                    length = _U64(data, pos)[0]
                    pos += 8
                if pos + length > end:
                    _arg_overrun(op.opcode_name(code), start)
                stack.append(data[pos : pos + length])
                pos += length
            elif code in _LONG_OPS:
                if code == LONG1:
                    if pos >= end:
                        _arg_overrun("LONG1", start)
                    length = data[pos]
                    pos += 1
                else:
                    if pos + 4 > end:
                        _arg_overrun("LONG4", start)
                    length = _I32(data, pos)[0]
                    pos += 4
                    if length < 0:
                        _fail("ENC-1", f"LONG4 with a negative byte count ({length})", start)
                if pos + length > end:
                    _arg_overrun(op.opcode_name(code), start)
                stack.append(int.from_bytes(data[pos : pos + length], "little", signed=True))
                pos += length
            elif code == GLOBAL:
                newline = data.find(b"\n", pos, end)
                second = data.find(b"\n", newline + 1, end) if newline >= 0 else -1
                if second < 0:
                    _fail("ENC-1", "GLOBAL needs two lines, module and name", start)
                stack.append(_global_ref(data[pos:newline], data[newline + 1 : second], start))
                pos = second + 1
            elif code == STACK_GLOBAL:
                if len(stack) - 2 < fence:
                    _fail("ENC-1", "STACK_GLOBAL needs a module and a name on the stack", start)
                name = stack.pop()
                module = stack.pop()
                if type(module) is not str or type(name) is not str:
                    _fail("ENC-3", "STACK_GLOBAL needs two str, the module and the name", start)
                stack.append(_global_ref(module, name, start))
            elif code == NEWOBJ:
                if len(stack) - 2 < fence:
                    _fail("ENC-1", "NEWOBJ needs a class and arguments on the stack", start)
                args = stack.pop()
                cls_ref = stack.pop()
                if type(cls_ref) is not GlobalRef or cls_ref.role is not op.GlobalRole.COMMAND_CLASS:
                    _fail("ENC-3", f"NEWOBJ of {_describe(cls_ref)}: only the command classes may be instantiated", start)
                if args is not _EMPTY_TUPLE:
                    _fail("CMD-1", f"a command is made with NEWOBJ and (), not {_describe(args)}", start)
                if command is not None:
                    _fail("CMD-1", "a payload holds exactly one command", start)
                command = _new(_COMMAND_CLASSES[cls_ref.name])
                stack.append(command)
            elif code == REDUCE:
                if len(stack) - 2 < fence:
                    _fail("ENC-1", "REDUCE needs a callable and arguments on the stack", start)
                args = stack.pop()
                func = stack.pop()
                stack.append(_reduce_to_bytes(func, args, start))
            elif code == BUILD:
                if len(stack) - 2 < fence:
                    _fail("ENC-1", "BUILD needs an object and a state on the stack", start)
                state = stack.pop()
                target = stack[-1]
                if target is not command or command is None:
                    _fail("ENC-2", f"BUILD is allowed only on the command, not on {_describe(target)}", start)
                if built:
                    _fail(_STATE_CLAUSE[type(command)], "the command's state is set twice", start)
                _apply_state(command, state, start)
                built = True
            elif code == FRAME:
                if start < frame_end:
                    _fail("ENC-1", "FRAME inside a frame", start)
                if pos + 8 > size:
                    _arg_overrun("FRAME", start)
                length = _U64(data, pos)[0]
                pos += 8
                if pos + length > size:
                    _fail("ENC-1", f"FRAME of {length} bytes runs past the end of the payload", start)
                frame_end = end = pos + length
            elif code == STOP:
                if pos != size:
                    _fail("ENC-1", f"{size - pos} bytes after STOP", pos)
                if marks or len(stack) != 1:
                    _fail("ENC-1", f"STOP with {len(stack)} objects and {len(marks)} marks on the stack", start)
                result = stack[0]
                if result is not command or command is None:
                    _fail("CMD-1", f"the payload is {_describe(result)}, not a command", start)
                if not built and type(command) in _STATE_CLAUSE:
                    _fail(_STATE_CLAUSE[type(command)], f"{type(command).__name__} without its state", start)
                return command
            else:  # PROTO: in the table, but only as the first opcode
                _fail("ENC-1", "PROTO is allowed only as the first opcode", start)


_ALLOWED_BY_PROTOCOL = {
    protocol: frozenset(code for code, spec in op.PROFILE_OPCODES.items() if protocol in spec.protocols)
    for protocol in range(op.MIN_PROTOCOL, op.MAX_PROTOCOL + 1)
}
_STR_OPS = frozenset((SHORT_BINUNICODE, BINUNICODE, BINUNICODE8))
_PUT_OPS = frozenset((MEMOIZE, BINPUT, LONG_BINPUT))
_GET_OPS = frozenset((BINGET, LONG_BINGET))
_LONG_OPS = frozenset((LONG1, LONG4))
_BYTES_OPS = frozenset((SHORT_BINBYTES, BINBYTES, BINBYTES8))
_FILL_OPS = frozenset((APPEND, APPENDS, SETITEM, SETITEMS))
_TUPLE_OPS = frozenset((TUPLE1, TUPLE2, TUPLE3, TUPLE))
_STATE_CLAUSE = {RegisterCN: "CMD-3", MSG: "CMD-4"}
_MSG_REF = GlobalRef(op.COMMAND_MODULE, "MSG", op.GlobalRole.COMMAND_CLASS)


def _describe(obj: Any) -> str:
    if type(obj) is GlobalRef:
        return f"the global {obj.module}.{obj.name}"
    if isinstance(obj, Command):
        return f"a {type(obj).__name__} command"
    return f"a {type(obj).__name__}"


def _global_ref(module: Any, name: Any, offset: int) -> GlobalRef:
    """The profile's reading of a global name; ENC-3 for any other name."""
    if type(module) is bytes:
        module = module.decode("utf-8", "replace")
        name = name.decode("utf-8", "replace")
    role = op.ALLOWED_GLOBALS.get((module, name))
    if role is None:
        _fail("ENC-3", f"the global {module}.{name} is not allowed", offset)
    return GlobalRef(module, name, role)


def _reduce_to_bytes(func: Any, args: Any, offset: int) -> bytes:
    """Read protocol 2's REDUCE spelling of a bytes object, without calling anything."""
    if type(func) is not GlobalRef or func.role is op.GlobalRole.COMMAND_CLASS:
        _fail("ENC-3", f"REDUCE of {_describe(func)}: only the bytes spellings of protocol 2 are allowed", offset)
    if func.role is op.GlobalRole.EMPTY_BYTES:
        if args is not _EMPTY_TUPLE:
            _fail("ENC-3", f"REDUCE of {func.module}.bytes needs (), not {_describe(args)}", offset)
        return b""
    if (
        type(args) is not tuple
        or len(args) != 2
        or type(args[0]) is not str
        or type(args[1]) is not str
        or args[1] != "latin1"
    ):
        _fail("ENC-3", "REDUCE of _codecs.encode needs (str, 'latin1')", offset)
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        _fail("ENC-3", "REDUCE of _codecs.encode with a code point above 255", offset)


def _apply_state(command: Command, state: Any, offset: int) -> None:
    kind = type(command)
    if kind is ACK or kind is ShutdownCN:
        _fail("CMD-2", f"{kind.__name__} carries no state, but BUILD gives it one", offset)
    if type(state) is not dict:
        _fail(_STATE_CLAUSE[kind], f"the state of {kind.__name__} must be a dict, not {_describe(state)}", offset)
    keys = list(state)
    if kind is RegisterCN:
        if len(keys) != 2 or set(keys) != {_START_KEY, _LIVE_KEY} or any(type(k) is not str for k in keys):
            _fail("CMD-3", f"RegisterCN state must be _cn_start_time and _cn_live_time, not {keys!r}", offset)
        for key, value in state.items():
            if type(value) is not int:
                _fail("CMD-3", f"RegisterCN {key.lstrip('_')} must be an int, not {type(value).__name__}", offset)
    elif len(keys) != 1 or type(keys[0]) is not str or keys[0] != _MSG_KEY:
        _fail("CMD-4", f"MSG state must be exactly the key msg, not {keys!r}", offset)
    command.__dict__ = state
