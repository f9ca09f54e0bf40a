"""The normative grammar of a payload, declared with construct.

This module is the executable form of spec section 3's syntax: :data:`Frame`
(the length prefix and payload), :data:`Pickle` (``PROTO``, a protocol of 2 to
5, opcodes up to ``STOP``, nothing after it) and :data:`Opcode` (one opcode of
the profile and its argument, per
:data:`~skyllh_cluster.wire.opcodes.PROFILE_OPCODES`).  Parsing yields the
list of opcodes with their offsets and decoded arguments; it builds nothing.

Meaning is not declared here: :func:`parse_payload` hands every parsed opcode
to the same handlers as the fast tokenizer
(:data:`~skyllh_cluster.wire.machine.HANDLERS`).  So the audit path is
independent of ``loads`` in its parsing, and one with it in what the profile
means.  :data:`Opcode` also builds: the kit writes its non-canonical encodings
opcode by opcode with ``Opcode.build``.

Everything is parsed from bytes in memory, with construct's interpreter (its
compiled mode is never used on untrusted bytes).  Every failure is a
:class:`~skyllh_cluster.errors.ProtocolError` with a clause, an offset and a
reason; construct's own errors are converted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NoReturn, Tuple, TypeVar

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

from ..errors import ProtocolError
from . import opcodes as op
from .framing import HEADER_SIZE
from .machine import HANDLERS, Decoded, Machine, Refusal, finish

__all__ = [
    "Frame",
    "Pickle",
    "Opcode",
    "ParsedOp",
    "parse_opcodes",
    "parse_payload",
    "parse_frame",
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


class _TwoLines(Adapter):
    """GLOBAL's argument as the pair ``(module, name)`` of bytes; builds from str or bytes too."""

    def _decode(self, obj: Any, context: Any, path: str) -> Tuple[bytes, bytes]:
        return obj.module, obj.name

    def _encode(self, obj: Tuple[Any, Any], context: Any, path: str) -> Dict[str, bytes]:
        module, name = (part.encode("ascii") if isinstance(part, str) else part for part in obj)
        return {"module": module, "name": name}


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
    _A.TWO_LINES: _TwoLines(
        Struct(
            "module" / NullTerminated(GreedyBytes, term=b"\n"),
            "name" / NullTerminated(GreedyBytes, term=b"\n"),
        )
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


# --- meaning: the semantic core, driven by the parsed opcodes ------------------


def check_frames(ops: List[ParsedOp], size: int) -> None:
    """A frame ends where an opcode ends, and no frame starts inside another."""
    boundaries = {o.offset for o in ops} | {size}
    frame_end = 0
    for o in ops:
        if o.code != op.FRAME:
            continue
        if o.offset < frame_end:
            raise ProtocolError("ENC-1", "FRAME inside a frame", o.offset)
        frame_end = o.offset + 9 + o.arg
        if frame_end not in boundaries:
            raise ProtocolError("ENC-1", "an opcode runs past the end of its frame", o.offset)


def run(ops: List[ParsedOp], size: int) -> Decoded:
    """Give each parsed opcode to its handler; the syntax layer has made the last one STOP."""
    check_frames(ops, size)
    machine = Machine()
    offset = 0
    try:
        for o in ops[:-1]:
            offset = o.offset
            HANDLERS[o.code](machine, o.arg)
        offset = ops[-1].offset
        return finish(machine)
    except Refusal as refusal:
        raise ProtocolError(refusal.clause, refusal.reason, offset) from None


def parse_payload(payload: bytes) -> Decoded:
    """Parse one payload with the grammar and run it: ``(class_name, state)``.

    Raises :class:`ProtocolError` with the clause, offset and reason of the
    first violation found (syntax first, then meaning).
    """
    data = bytes(payload)
    _, ops = parse_opcodes(data)
    return run(ops, len(data))


T = TypeVar("T")


def _pair(class_name: str, state: Dict[str, Any]) -> Any:
    return class_name, state


def parse_frame(frame: bytes, factory: Callable[[str, Dict[str, Any]], T] = _pair) -> T:
    """Parse one whole frame (length prefix and payload): ``factory(class_name, state)``.

    The default factory returns the pair itself;
    :func:`skyllh_cluster.commands.make_command` makes the command.  Offsets in
    errors count from the start of the frame.
    """
    stream = io.BytesIO(bytes(frame))
    try:
        parsed = Frame.parse_stream(stream)
    except TerminatedError:
        raise ProtocolError("FRM-1", "bytes after the end of the frame", stream.tell()) from None
    except ConstructError:
        raise ProtocolError("FRM-1", "the frame is shorter than its length prefix says", stream.tell()) from None
    try:
        return factory(*parse_payload(parsed.payload))
    except ProtocolError as exc:
        raise exc.with_offset(HEADER_SIZE) from None
