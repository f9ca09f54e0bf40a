"""The normative grammar of a payload, declared with construct, and its evaluator.

This module is the executable form of spec section 3.  It has two layers:

1. **Syntax**, declared as data with :mod:`construct`: :data:`Frame` (the
   length prefix and payload), :data:`Pickle` (``PROTO``, a protocol of 2 to
   5, opcodes up to ``STOP``, nothing after it) and :data:`Opcode` (one
   opcode of the profile and its argument, per
   :data:`~skyllh_cluster.wire.opcodes.PROFILE_OPCODES`).  Parsing yields the
   list of opcodes with their offsets; it never builds any object.
2. **Meaning**, a small restricted stack machine over that list
   (:class:`Evaluator`).  It builds only values of the subset and the four
   commands, knows only the allowed globals (as names, never objects), lets a
   memo reference name only an earlier object and refuses a change to a
   container after a reference to it, and bounds nesting depth and tree size.

:func:`parse_payload` and :func:`parse_frame` run both layers.
:func:`build_payload` goes the other way through the same declarations and
writes the canonical payload; the tests use it as the normative encoder.

Everything is parsed from bytes in memory, with construct's interpreter (its
compiled mode is never used on untrusted bytes).  Every failure is a
:class:`~skyllh_cluster.errors.ProtocolError` with a clause, an offset and a
reason; construct's own errors are converted.  The fast decoder
(:mod:`skyllh_cluster.wire.decoder`) must accept and build exactly what this
module accepts and builds.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from construct import (
    Adapter,
    Byte,
    Bytes,
    Const,
    Construct,
    ConstError,
    ConstructError,
    ExplicitError,
    Float64b,
    GreedyBytes,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    Int64ul,
    NullTerminated,
    Pass,
    Prefixed,
    RepeatUntil,
    Struct,
    Switch,
    Tell,
    Terminated,
    TerminatedError,
    this,
)
from construct.core import stream_size, stream_tell

from ..commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from ..errors import ProtocolError
from . import opcodes as op
from .framing import HEADER_SIZE, MAX_PAYLOAD
from .values import MAX_DEPTH

__all__ = [
    "Frame",
    "Pickle",
    "Opcode",
    "ParsedOp",
    "parse_opcodes",
    "Evaluator",
    "parse_payload",
    "parse_frame",
    "build_payload",
]


class GrammarViolation(ExplicitError):
    """Raised inside the construct layer; carries what a ProtocolError needs."""

    def __init__(self, clause: str, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.clause, self.reason, self.offset = clause, reason, offset


# --- argument constructs -----------------------------------------------------


class _Utf8(Adapter):
    """A length-prefixed string: UTF-8 with surrogates allowed, as pickle writes."""

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        try:
            return obj.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise GrammarViolation("ENC-1", f"the string is not valid UTF-8: {exc.reason}", -1) from None

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return obj.encode("utf-8", "surrogatepass")


class _TwosComplement(Adapter):
    """LONG1/LONG4 data: a little-endian two's complement int; b'' is 0."""

    def _decode(self, obj: bytes, context: Any, path: str) -> int:
        return int.from_bytes(obj, "little", signed=True)

    def _encode(self, obj: int, context: Any, path: str) -> bytes:
        # The fewest bytes that hold the value, as CPython writes them.
        size = 1
        while not -(1 << (8 * size - 1)) <= obj < (1 << (8 * size - 1)):
            size += 1
        return obj.to_bytes(size, "little", signed=True)


class _Length(Construct):
    """A length field whose value must fit in the bytes left (no allocation first)."""

    def __init__(self, field: Construct, what: str) -> None:
        super().__init__()
        self.field, self.what = field, what

    def _parse(self, stream: Any, context: Any, path: str) -> int:
        at = stream_tell(stream, path)
        length = self.field._parsereport(stream, context, path)
        left = stream_size(stream) - stream_tell(stream, path)
        if length < 0:
            raise GrammarViolation("ENC-1", f"{self.what} with a negative length ({length})", at)
        if length > left:
            raise GrammarViolation("ENC-1", f"{self.what} of {length} bytes, but only {left} are left", at)
        return length

    def _build(self, obj: int, stream: Any, context: Any, path: str) -> int:
        return self.field._build(obj, stream, context, path)


class _NotInProfile(Construct):
    """The default branch of :data:`Opcode`: any byte that is no profile opcode."""

    def __init__(self) -> None:
        super().__init__()
        self.flagbuildnone = True

    def _parse(self, stream: Any, context: Any, path: str) -> NoReturn:
        at = stream_tell(stream, path) - 1
        raise GrammarViolation("ENC-2", f"opcode {op.opcode_name(context.op)} is not in the profile", at)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> NoReturn:
        raise GrammarViolation("ENC-2", f"opcode {op.opcode_name(context.op)} is not in the profile", -1)


class _AllowedAtProtocol(Construct):
    """Zero bytes; checks that the opcode just read may be used at this protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.flagbuildnone = True

    def _check(self, stream: Any, context: Any, path: str) -> None:
        code, protocol = context.op, context._.protocol
        spec = op.PROFILE_OPCODES.get(code)
        if spec is not None and protocol not in spec.protocols:
            at = stream_tell(stream, path) - 1
            raise GrammarViolation("ENC-2", f"{spec.name} is not allowed in a protocol {protocol} payload", at)

    def _parse(self, stream: Any, context: Any, path: str) -> None:
        self._check(stream, context, path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> None:
        self._check(stream, context, path)


def _prefixed(length: Construct, what: str, data: Construct = GreedyBytes) -> Construct:
    return Prefixed(_Length(length, what), data)


_A = op.ArgKind
ARGUMENTS: Dict[op.ArgKind, Construct] = {
    _A.NONE: Pass,
    _A.U8: Int8ul,
    _A.U16: Int16ul,
    _A.I32: Int32sl,
    _A.U32: Int32ul,
    _A.U64: Int64ul,
    _A.FLOAT64_BE: Float64b,
    _A.LONG_U8: _TwosComplement(_prefixed(Int8ul, "LONG1")),
    _A.LONG_I32: _TwosComplement(_prefixed(Int32sl, "LONG4")),
    _A.UTF8_U8: _Utf8(_prefixed(Int8ul, "SHORT_BINUNICODE")),
    _A.UTF8_U32: _Utf8(_prefixed(Int32ul, "BINUNICODE")),
    _A.UTF8_U64: _Utf8(_prefixed(Int64ul, "BINUNICODE8")),
    _A.BYTES_U8: _prefixed(Int8ul, "SHORT_BINBYTES"),
    _A.BYTES_U32: _prefixed(Int32ul, "BINBYTES"),
    _A.BYTES_U64: _prefixed(Int64ul, "BINBYTES8"),
    _A.TWO_LINES: Struct(
        "module" / NullTerminated(GreedyBytes, term=b"\n"),
        "name" / NullTerminated(GreedyBytes, term=b"\n"),
    ),
}

class _ProtocolRange(Construct):
    """Zero bytes; the protocol byte just read must be 2 to 5 (ENC-1)."""

    def __init__(self) -> None:
        super().__init__()
        self.flagbuildnone = True

    def _parse(self, stream: Any, context: Any, path: str) -> None:
        if not op.MIN_PROTOCOL <= context.protocol <= op.MAX_PROTOCOL:
            raise GrammarViolation("ENC-1", f"pickle protocol {context.protocol} is not one of 2 to 5", 1)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> None:
        self._parse(stream, context, path)


#: One opcode: its offset in the payload, its byte, its argument.  FRAME's
#: argument is a length that must fit in the rest of the payload.
Opcode = Struct(
    "offset" / Tell,
    "op" / Byte,
    "allowed" / _AllowedAtProtocol(),
    "arg"
    / Switch(
        this.op,
        {
            code: (_Length(Int64ul, "FRAME") if code == op.FRAME else ARGUMENTS[spec.arg])
            for code, spec in op.PROFILE_OPCODES.items()
        },
        default=_NotInProfile(),
    ),
)

#: A whole payload: PROTO 2..5, opcodes up to and including STOP, then the end.
Pickle = Struct(
    "proto" / Const(bytes((op.PROTO,))),
    "protocol" / Byte,
    "protocol_ok" / _ProtocolRange(),
    "ops" / RepeatUntil(lambda item, items, ctx: item["op"] == op.STOP, Opcode),
    "end" / Terminated,
)

#: A frame: the u16 little-endian length, exactly that many bytes, the end.
Frame = Struct(
    "length" / Int16ul,
    "payload" / Bytes(this.length),
    "end" / Terminated,
)


@dataclass(frozen=True)
class ParsedOp:
    """One opcode of a parsed payload."""

    offset: int
    code: int
    arg: Any

    @property
    def name(self) -> str:
        return op.opcode_name(self.code)


def _syntax_error(exc: ConstructError, stream: io.BytesIO, data: bytes) -> ProtocolError:
    """Turn construct's error into the protocol's, with an offset."""
    if isinstance(exc, GrammarViolation):
        offset = exc.offset if exc.offset >= 0 else stream.tell()
        return ProtocolError(exc.clause, exc.reason, offset)
    if not data:
        return ProtocolError("ENC-1", "the payload is empty", 0)
    if isinstance(exc, ConstError):
        return ProtocolError("ENC-1", f"a payload starts with PROTO, not {op.opcode_name(data[0])}", 0)
    offset = stream.tell()
    if isinstance(exc, TerminatedError):  # Terminated read one byte to find it
        return ProtocolError("ENC-1", f"{len(data) - offset + 1} bytes after STOP", offset - 1)
    return ProtocolError("ENC-1", "the payload ends inside an opcode or without STOP", offset)


def parse_opcodes(data: bytes) -> Tuple[int, List[ParsedOp]]:
    """Parse the syntax layer: the protocol and the opcodes with their offsets."""
    stream = io.BytesIO(data)
    try:
        parsed = Pickle.parse_stream(stream)
    except ConstructError as exc:
        raise _syntax_error(exc, stream, data) from None
    return parsed.protocol, [ParsedOp(o.offset, o.op, o.arg) for o in parsed.ops]


# --- meaning: the restricted stack machine -----------------------------------


@dataclass(frozen=True)
class NamedGlobal:
    """A global as the evaluator sees it: a name and its role, nothing else."""

    module: str
    name: str
    role: op.GlobalRole


_COMMAND_CLASSES = {"ACK": ACK, "MSG": MSG, "ShutdownCN": ShutdownCN, "RegisterCN": RegisterCN}
_VALUE_TYPES = (type(None), bool, int, float, str, bytes, list, tuple, dict)
_CONTAINER_TYPES = (list, tuple, dict)


class Evaluator:
    """Runs the opcodes of one payload and returns its command.

    The machine is pickle's, cut down: a stack, MARKs that start a new stack
    (as in ``pickle._Unpickler``), a memo.  Each opcode is one method; each
    check is one ``if``.  An object may be on the stack in three forms only:
    a value of the subset, a :class:`NamedGlobal`, or the command.
    """

    def __init__(self, protocol: int, size: int) -> None:
        self.protocol = protocol
        self.size = size
        self.stack: List[Any] = []
        self.metastack: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        # For each container built: the container (kept alive, so that ids
        # stay unique), its height and its size as a tree (ENC-6).
        self.figures: Dict[int, Tuple[Any, int, int]] = {id(()): ((), 1, 1)}
        self.referenced: set = set()  # ids of lists and dicts fetched from the memo
        self.key_nodes = 0
        self.command: Optional[Command] = None
        self.has_state = False
        self.offset = 0

    # --- helpers ----------------------------------------------------------

    def fail(self, clause: str, reason: str) -> NoReturn:
        raise ProtocolError(clause, reason, self.offset)

    def pop(self, count: int, what: str) -> List[Any]:
        """The top ``count`` objects, bottom first; they must be above the last MARK."""
        if len(self.stack) < count:
            self.fail("ENC-1", f"{what} finds too few objects on the stack")
        items = self.stack[len(self.stack) - count :]
        del self.stack[len(self.stack) - count :]
        return items

    def pop_mark(self, what: str) -> List[Any]:
        if not self.metastack:
            self.fail("ENC-1", f"{what} without a MARK")
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def height(self, value: Any) -> int:
        return self.figures[id(value)][1] if type(value) in _CONTAINER_TYPES else 0

    def tree_size(self, value: Any) -> int:
        return self.figures[id(value)][2] if type(value) in _CONTAINER_TYPES else 1

    def check_item(self, item: Any, where: str) -> None:
        """An object may go into a container only if it is a value of the subset."""
        if type(item) is NamedGlobal:
            self.fail("ENC-3", f"the global {item.module}.{item.name} may not be used as {where}")
        if type(item) not in _VALUE_TYPES:
            self.fail("CMD-1", f"a command may only be the outermost object, not {where}")

    def check_figures(self, height: int, tree: int) -> None:
        # A container may be one level deeper than a MSG value: the value
        # itself sits in the command's state dict.
        if height > MAX_DEPTH + 1:
            self.fail("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers")
        if tree > op.MAX_VALUE_NODES:
            self.fail("ENC-6", f"an object has more than {op.MAX_VALUE_NODES} nodes as a tree")

    def fill(self, target: Any, kind: type, items: List[Any], what: str) -> None:
        """APPEND(S) and SETITEM(S): put ``items`` into ``target``."""
        if type(target) is not kind:
            self.fail("ENC-1", f"{what} needs a {kind.__name__}, not {type(target).__name__}")
        if id(target) in self.referenced:
            self.fail("VAL-3", "a container is changed after a memo reference to it (it could contain itself)")
        for item in items:
            self.check_item(item, "an item of a container")
        _, height, tree = self.figures[id(target)]
        height = max([height] + [self.height(item) + 1 for item in items])
        tree += sum(self.tree_size(item) for item in items)
        self.check_figures(height, tree)
        self.figures[id(target)] = (target, height, tree)
        if kind is list:
            target.extend(items)
            return
        if len(items) % 2:
            self.fail("ENC-1", f"{what} with an odd number of items")
        for key, value in zip(items[0::2], items[1::2]):
            if type(key) is tuple:
                self.key_nodes += self.tree_size(key)
                if self.key_nodes > op.MAX_VALUE_NODES:
                    self.fail("ENC-6", f"the dict keys have more than {op.MAX_VALUE_NODES} nodes")
            try:
                target[key] = value
            except TypeError:
                self.fail("VAL-2", f"a dict key must be hashable, not a {type(key).__name__} holding a container")

    def make_tuple(self, items: List[Any]) -> None:
        for item in items:
            self.check_item(item, "an item of a tuple")
        height = 1 + max([0] + [self.height(item) for item in items])
        tree = 1 + sum(self.tree_size(item) for item in items)
        self.check_figures(height, tree)
        value = tuple(items)
        self.figures[id(value)] = (value, height, tree)
        self.stack.append(value)

    def name_global(self, module: str, name: str) -> None:
        role = op.ALLOWED_GLOBALS.get((module, name))
        if role is None:
            self.fail("ENC-3", f"the global {module}.{name} is not allowed")
        self.stack.append(NamedGlobal(module, name, role))

    def memo_put(self, index: int) -> None:
        if not self.stack:
            self.fail("ENC-1", "nothing on the stack to store in the memo")
        if index in self.memo:
            self.fail("ENC-4", f"memo index {index} is already in use")
        self.memo[index] = self.stack[-1]

    def memo_get(self, index: int) -> None:
        if index not in self.memo:
            self.fail("ENC-4", f"memo index {index} was never stored")
        value = self.memo[index]
        if type(value) in (list, dict):
            self.referenced.add(id(value))
        self.stack.append(value)

    # --- the run ------------------------------------------------------------

    def check_frames(self, ops: List[ParsedOp]) -> None:
        """A frame ends where an opcode ends, and no frame starts inside another."""
        boundaries = {o.offset for o in ops} | {self.size}
        frame_end = 0
        for o in ops:
            if o.code != op.FRAME:
                continue
            self.offset = o.offset
            if o.offset < frame_end:
                self.fail("ENC-1", "FRAME inside a frame")
            frame_end = o.offset + 9 + o.arg
            if frame_end not in boundaries:
                self.fail("ENC-1", "an opcode runs past the end of its frame")

    def run(self, ops: List[ParsedOp]) -> Command:
        """Evaluate the opcodes; the syntax layer has made the last one STOP."""
        self.check_frames(ops)
        for o in ops[:-1]:
            self.offset = o.offset
            getattr(self, "op_" + op.PROFILE_OPCODES[o.code].name)(o.arg)
        self.offset = ops[-1].offset
        return self.stop()

    # --- one method per opcode ---------------------------------------------

    def op_PROTO(self, arg: int) -> None:
        self.fail("ENC-1", "PROTO is allowed only as the first opcode")

    def op_FRAME(self, arg: int) -> None:
        pass  # checked as a whole by check_frames

    def stop(self) -> Command:
        if self.metastack or len(self.stack) != 1:
            self.fail("ENC-1", f"STOP with {len(self.stack)} objects and {len(self.metastack)} marks on the stack")
        result = self.stack[0]
        if self.command is None or result is not self.command:
            self.fail("CMD-1", f"the payload is a {type(result).__name__}, not a command")
        if not self.has_state and type(result) is RegisterCN:
            self.fail("CMD-3", "RegisterCN without its state")
        if not self.has_state and type(result) is MSG:
            self.fail("CMD-4", "MSG without its state")
        return result

    def op_MARK(self, arg: None) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def op_MEMOIZE(self, arg: None) -> None:
        self.memo_put(len(self.memo))

    def op_BINPUT(self, arg: int) -> None:
        self.memo_put(arg)

    op_LONG_BINPUT = op_BINPUT

    def op_BINGET(self, arg: int) -> None:
        self.memo_get(arg)

    op_LONG_BINGET = op_BINGET

    def op_NONE(self, arg: None) -> None:
        self.stack.append(None)

    def op_NEWTRUE(self, arg: None) -> None:
        self.stack.append(True)

    def op_NEWFALSE(self, arg: None) -> None:
        self.stack.append(False)

    def push_arg(self, arg: Any) -> None:
        self.stack.append(arg)

    op_BININT1 = op_BININT2 = op_BININT = op_LONG1 = op_LONG4 = op_BINFLOAT = push_arg
    op_SHORT_BINUNICODE = op_BINUNICODE = op_BINUNICODE8 = push_arg
    op_SHORT_BINBYTES = op_BINBYTES = op_BINBYTES8 = push_arg

    def op_EMPTY_LIST(self, arg: None) -> None:
        value: list = []
        self.figures[id(value)] = (value, 1, 1)
        self.stack.append(value)

    def op_EMPTY_DICT(self, arg: None) -> None:
        value: dict = {}
        self.figures[id(value)] = (value, 1, 1)
        self.stack.append(value)

    def op_EMPTY_TUPLE(self, arg: None) -> None:
        self.stack.append(())

    def op_APPEND(self, arg: None) -> None:
        target, item = self.pop(2, "APPEND")
        self.stack.append(target)
        self.fill(target, list, [item], "APPEND")

    def op_APPENDS(self, arg: None) -> None:
        items = self.pop_mark("APPENDS")
        (target,) = self.pop(1, "APPENDS")
        self.stack.append(target)
        self.fill(target, list, items, "APPENDS")

    def op_SETITEM(self, arg: None) -> None:
        target, key, value = self.pop(3, "SETITEM")
        self.stack.append(target)
        self.fill(target, dict, [key, value], "SETITEM")

    def op_SETITEMS(self, arg: None) -> None:
        items = self.pop_mark("SETITEMS")
        (target,) = self.pop(1, "SETITEMS")
        self.stack.append(target)
        self.fill(target, dict, items, "SETITEMS")

    def op_TUPLE1(self, arg: None) -> None:
        self.make_tuple(self.pop(1, "TUPLE1"))

    def op_TUPLE2(self, arg: None) -> None:
        self.make_tuple(self.pop(2, "TUPLE2"))

    def op_TUPLE3(self, arg: None) -> None:
        self.make_tuple(self.pop(3, "TUPLE3"))

    def op_TUPLE(self, arg: None) -> None:
        self.make_tuple(self.pop_mark("TUPLE"))

    def op_GLOBAL(self, arg: Any) -> None:
        self.name_global(arg.module.decode("utf-8", "replace"), arg.name.decode("utf-8", "replace"))

    def op_STACK_GLOBAL(self, arg: None) -> None:
        module, name = self.pop(2, "STACK_GLOBAL")
        if type(module) is not str or type(name) is not str:
            self.fail("ENC-3", "STACK_GLOBAL needs two str, the module and the name")
        self.name_global(module, name)

    def op_NEWOBJ(self, arg: None) -> None:
        cls, args = self.pop(2, "NEWOBJ")
        if type(cls) is not NamedGlobal or cls.role is not op.GlobalRole.COMMAND_CLASS:
            self.fail("ENC-3", "NEWOBJ of anything but a command class")
        if type(args) is not tuple or args != ():
            self.fail("CMD-1", "a command is made with NEWOBJ and an empty tuple")
        if self.command is not None:
            self.fail("CMD-1", "a payload holds exactly one command")
        self.command = object.__new__(_COMMAND_CLASSES[cls.name])
        self.stack.append(self.command)

    def op_REDUCE(self, arg: None) -> None:
        func, args = self.pop(2, "REDUCE")
        if type(func) is not NamedGlobal or func.role is op.GlobalRole.COMMAND_CLASS:
            self.fail("ENC-3", "REDUCE of anything but a bytes spelling of protocol 2")
        if func.role is op.GlobalRole.EMPTY_BYTES:
            if type(args) is not tuple or args != ():
                self.fail("ENC-3", f"REDUCE of {func.module}.bytes needs ()")
            self.stack.append(b"")
            return
        if not (type(args) is tuple and len(args) == 2 and type(args[0]) is str and type(args[1]) is str):
            self.fail("ENC-3", "REDUCE of _codecs.encode needs (str, 'latin1')")
        if args[1] != "latin1":
            self.fail("ENC-3", "REDUCE of _codecs.encode needs (str, 'latin1')")
        if any(ord(char) > 255 for char in args[0]):
            self.fail("ENC-3", "REDUCE of _codecs.encode with a code point above 255")
        self.stack.append(bytes(ord(char) for char in args[0]))

    def op_BUILD(self, arg: None) -> None:
        target, state = self.pop(2, "BUILD")
        self.stack.append(target)
        if self.command is None or target is not self.command:
            self.fail("ENC-2", "BUILD is allowed only on the command")
        kind = type(target)
        if kind in (ACK, ShutdownCN):
            self.fail("CMD-2", f"{kind.__name__} carries no state")
        clause = "CMD-3" if kind is RegisterCN else "CMD-4"
        if self.has_state:
            self.fail(clause, "the command's state is set twice")
        if type(state) is not dict:
            self.fail(clause, "the state must be a dict")
        keys = list(state)
        if not all(type(key) is str for key in keys):
            self.fail(clause, "the state's keys are attribute names (str)")
        if kind is RegisterCN:
            if sorted(keys) != ["_cn_live_time", "_cn_start_time"]:
                self.fail("CMD-3", "RegisterCN state must be _cn_start_time and _cn_live_time")
            if not all(type(value) is int for value in state.values()):
                self.fail("CMD-3", "RegisterCN times must be int")
        elif keys != ["msg"]:
            self.fail("CMD-4", "MSG state must be exactly the key msg")
        target.__dict__ = state
        self.has_state = True


def parse_payload(payload: bytes) -> Command:
    """Parse one payload with the grammar and evaluate it into its command.

    Raises :class:`ProtocolError` with the clause, offset and reason of the
    first violation found (syntax first, then meaning).
    """
    data = bytes(payload)
    protocol, ops = parse_opcodes(data)
    return Evaluator(protocol, len(data)).run(ops)


def parse_frame(frame: bytes) -> Command:
    """Parse one whole frame (length prefix and payload) into its command.

    Offsets in errors count from the start of the frame.
    """
    stream = io.BytesIO(bytes(frame))
    try:
        parsed = Frame.parse_stream(stream)
    except TerminatedError:
        raise ProtocolError("FRM-1", "bytes after the end of the frame", stream.tell()) from None
    except ConstructError:
        raise ProtocolError("FRM-1", "the frame is shorter than its length prefix says", stream.tell()) from None
    try:
        return parse_payload(parsed.payload)
    except ProtocolError as exc:
        raise exc.with_offset(HEADER_SIZE) from None


# --- building: the canonical payload through the same declarations ------------


class _CanonicalOps:
    """The opcode list CPython's pickler writes for a command, at protocol 4."""

    def __init__(self) -> None:
        self.ops: List[Dict[str, Any]] = []
        self.memo: Dict[int, int] = {}

    def emit(self, code: int, arg: Any = None) -> None:
        self.ops.append({"op": code, "arg": arg})

    def memoize(self, obj: Any) -> None:
        self.memo[id(obj)] = len(self.memo)
        self.emit(op.MEMOIZE)

    def value(self, obj: Any) -> None:
        kind = type(obj)
        if obj is None:
            self.emit(op.NONE)
        elif kind is bool:
            self.emit(op.NEWTRUE if obj else op.NEWFALSE)
        elif kind is int:
            self.integer(obj)
        elif kind is float:
            self.emit(op.BINFLOAT, obj)
        elif id(obj) in self.memo:
            index = self.memo[id(obj)]
            self.emit(op.BINGET if index < 256 else op.LONG_BINGET, index)
        elif kind is str:
            short = len(obj.encode("utf-8", "surrogatepass")) < 256
            self.emit(op.SHORT_BINUNICODE if short else op.BINUNICODE, obj)
            self.memoize(obj)
        elif kind is bytes:
            self.emit(op.SHORT_BINBYTES if len(obj) < 256 else op.BINBYTES, obj)
            self.memoize(obj)
        elif kind is list:
            self.emit(op.EMPTY_LIST)
            self.memoize(obj)
            self.batches(obj, op.APPEND, op.APPENDS, list_items=True)
        elif kind is dict:
            self.emit(op.EMPTY_DICT)
            self.memoize(obj)
            self.batches(list(obj.items()), op.SETITEM, op.SETITEMS, list_items=False)
        elif not obj:
            self.emit(op.EMPTY_TUPLE)
        else:
            if len(obj) > 3:
                self.emit(op.MARK)
            for item in obj:
                self.value(item)
            self.emit((op.TUPLE1, op.TUPLE2, op.TUPLE3)[len(obj) - 1] if len(obj) <= 3 else op.TUPLE)
            self.memoize(obj)

    def integer(self, value: int) -> None:
        if 0 <= value < 1 << 8:
            self.emit(op.BININT1, value)
        elif 0 <= value < 1 << 16:
            self.emit(op.BININT2, value)
        elif -(1 << 31) <= value < 1 << 31:
            self.emit(op.BININT, value)
        else:
            size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
            self.emit(op.LONG1 if size < 256 else op.LONG4, value)

    def batches(self, items: List[Any], single: int, many: int, list_items: bool) -> None:
        if not items:
            return
        if len(items) == 1:
            self.entry(items[0], list_items)
            self.emit(single)
            return
        for start in range(0, len(items), op.BATCH_SIZE):
            self.emit(op.MARK)
            for item in items[start : start + op.BATCH_SIZE]:
                self.entry(item, list_items)
            self.emit(many)
        if not list_items and len(items) % op.BATCH_SIZE == 0:
            # CPython's dict batching goes round once more after a full batch.
            self.emit(op.MARK)
            self.emit(many)

    def entry(self, item: Any, list_items: bool) -> None:
        if list_items:
            self.value(item)
        else:
            self.value(item[0])
            self.value(item[1])

    def command(self, command: Command) -> None:
        module_name = op.COMMAND_MODULE.encode("ascii").decode("ascii")  # never shared with a value
        class_name = sys.intern(type(command).__name__)  # the class's own, interned name
        self.emit(op.SHORT_BINUNICODE, module_name)
        self.memoize(module_name)
        self.emit(op.SHORT_BINUNICODE, class_name)
        self.memoize(class_name)
        self.emit(op.STACK_GLOBAL)
        self.memoize(type(command))
        self.emit(op.EMPTY_TUPLE)
        self.emit(op.NEWOBJ)
        self.memoize(command)
        state = command.__dict__
        if state:
            self.value(state)
            self.emit(op.BUILD)
        self.emit(op.STOP)


def build_payload(command: Command) -> bytes:
    """Build the canonical payload of ``command`` from the grammar's declarations.

    The result is parsed back with :func:`parse_payload` before it is
    returned, so that the grammar builds only what it accepts.  Raises
    :class:`~skyllh_cluster.errors.LocalProtocolError` for a command outside
    the protocol or a payload that does not fit in a frame (FRM-2).
    """
    if isinstance(command, MSG):
        from .values import check_value

        check_value(command.__dict__.get("msg"))
    writer = _CanonicalOps()
    writer.command(command)
    body = b"".join(Opcode.build(o, protocol=op.CANONICAL_PROTOCOL) for o in writer.ops)
    ops = writer.ops
    if len(body) >= op.FRAME_SIZE_MIN:  # pragma: no branch - a command's body is at least 38 bytes
        ops = [{"op": op.FRAME, "arg": len(body)}] + ops
    payload = Pickle.build({"protocol": op.CANONICAL_PROTOCOL, "ops": ops})
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("FRM-2", f"a payload of {len(payload)} bytes does not fit in a frame").as_local()
    try:
        parse_payload(payload)
    except ProtocolError as exc:
        raise exc.as_local() from None
    return payload
