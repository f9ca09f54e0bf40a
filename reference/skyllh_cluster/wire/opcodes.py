"""The pickle profile: which opcodes and globals a payload may use (ENC-2, ENC-3).

A payload of the SkyLLH cluster protocol is a pickle, but only a small,
data-only part of the pickle language is accepted.  This module is that part,
as tables:

* :data:`PROFILE_OPCODES`: every opcode a payload may contain, with the kind
  of argument that follows it in the byte stream and the lowest protocol that
  may use it (an opcode is allowed under any later protocol too, as pickle
  itself does; protocols above :data:`MAX_PROTOCOL` are refused).
* :data:`ALLOWED_GLOBALS`: every ``module.name`` a payload may name, with the
  one position in which it may appear.  Nothing named here is ever imported
  or called: the decoders recognise the names as data (ENC-5).
* the limits a decoder enforces while building a value (ENC-6).

Both tokenizers (the normative grammar, :mod:`skyllh_cluster.wire.grammar`,
and the fast one, :mod:`skyllh_cluster.wire.decoder`) read these tables; the
meaning of each opcode is the row of the same name in
:data:`skyllh_cluster.wire.machine.HANDLERS`; ``spec/encoding-profile.md``
prints the tables.
"""

from __future__ import annotations

import enum
import pickletools
from dataclasses import dataclass
from typing import Dict, FrozenSet, Tuple

from .values import MAX_DEPTH, MAX_VALUE_COST

__all__ = [
    "ArgKind",
    "OpcodeSpec",
    "GlobalRole",
    "PROFILE_OPCODES",
    "ALLOWED_GLOBALS",
    "COMMAND_MODULE",
    "COMMAND_CLASS_NAMES",
    "MIN_PROTOCOL",
    "MAX_PROTOCOL",
    "CANONICAL_PROTOCOL",
    "FRAME_SIZE_MIN",
    "MAX_DEPTH",
    "MAX_VALUE_COST",
    "BATCH_SIZE",
    "opcode_name",
]

# --- opcode bytes of the profile --------------------------------------------
PROTO = 0x80
FRAME = 0x95
STOP = ord(".")
MARK = ord("(")
MEMOIZE = 0x94
BINPUT = ord("q")
LONG_BINPUT = ord("r")
BINGET = ord("h")
LONG_BINGET = ord("j")
NONE = ord("N")
NEWTRUE = 0x88
NEWFALSE = 0x89
BININT1 = ord("K")
BININT2 = ord("M")
BININT = ord("J")
LONG1 = 0x8A
LONG4 = 0x8B
BINFLOAT = ord("G")
SHORT_BINUNICODE = 0x8C
BINUNICODE = ord("X")
BINUNICODE8 = 0x8D
SHORT_BINBYTES = ord("C")
BINBYTES = ord("B")
BINBYTES8 = 0x8E
EMPTY_LIST = ord("]")
APPEND = ord("a")
APPENDS = ord("e")
EMPTY_DICT = ord("}")
SETITEM = ord("s")
SETITEMS = ord("u")
EMPTY_TUPLE = ord(")")
TUPLE1 = 0x85
TUPLE2 = 0x86
TUPLE3 = 0x87
TUPLE = ord("t")
GLOBAL = ord("c")
STACK_GLOBAL = 0x93
NEWOBJ = 0x81
REDUCE = ord("R")
BUILD = ord("b")


class ArgKind(str, enum.Enum):
    """What follows an opcode byte in the stream (all integers little-endian)."""

    NONE = "none"
    U8 = "uint8"
    U16 = "uint16"
    I32 = "int32"
    U32 = "uint32"
    U64 = "uint64"
    FLOAT64_BE = "float64 big-endian"  # BINFLOAT is the one big-endian argument
    LONG_U8 = "uint8 length + two's complement little-endian bytes"
    LONG_I32 = "int32 length (>= 0) + two's complement little-endian bytes"
    UTF8_U8 = "uint8 length + UTF-8 (surrogatepass)"
    UTF8_U32 = "uint32 length + UTF-8 (surrogatepass)"
    UTF8_U64 = "uint64 length + UTF-8 (surrogatepass)"
    BYTES_U8 = "uint8 length + bytes"
    BYTES_U32 = "uint32 length + bytes"
    BYTES_U64 = "uint64 length + bytes"
    TWO_LINES = "module '\\n' name '\\n' (ASCII)"


@dataclass(frozen=True)
class OpcodeSpec:
    """One opcode of the profile."""

    code: int
    name: str
    arg: ArgKind
    min_protocol: int

    @property
    def protocols(self) -> FrozenSet[int]:
        """The pickle protocols under which a payload may use this opcode."""
        return frozenset(range(max(self.min_protocol, MIN_PROTOCOL), MAX_PROTOCOL + 1))


#: The protocols a payload may declare with its leading PROTO opcode (ENC-1).
MIN_PROTOCOL = 2
MAX_PROTOCOL = 5
#: The protocol of the canonical encoding (ENC-7).
CANONICAL_PROTOCOL = 4
#: CPython drops the FRAME opcode when the framed part is shorter than this.
FRAME_SIZE_MIN = 4
#: CPython writes list items and dict entries in batches of this many.
BATCH_SIZE = 1000

_A = ArgKind
_TABLE: Tuple[OpcodeSpec, ...] = (
    OpcodeSpec(PROTO, "PROTO", _A.U8, 2),
    OpcodeSpec(FRAME, "FRAME", _A.U64, 4),
    OpcodeSpec(STOP, "STOP", _A.NONE, 0),
    OpcodeSpec(MARK, "MARK", _A.NONE, 0),
    OpcodeSpec(MEMOIZE, "MEMOIZE", _A.NONE, 4),
    OpcodeSpec(BINPUT, "BINPUT", _A.U8, 1),
    OpcodeSpec(LONG_BINPUT, "LONG_BINPUT", _A.U32, 1),
    OpcodeSpec(BINGET, "BINGET", _A.U8, 1),
    OpcodeSpec(LONG_BINGET, "LONG_BINGET", _A.U32, 1),
    OpcodeSpec(NONE, "NONE", _A.NONE, 0),
    OpcodeSpec(NEWTRUE, "NEWTRUE", _A.NONE, 2),
    OpcodeSpec(NEWFALSE, "NEWFALSE", _A.NONE, 2),
    OpcodeSpec(BININT1, "BININT1", _A.U8, 1),
    OpcodeSpec(BININT2, "BININT2", _A.U16, 1),
    OpcodeSpec(BININT, "BININT", _A.I32, 1),
    OpcodeSpec(LONG1, "LONG1", _A.LONG_U8, 2),
    OpcodeSpec(LONG4, "LONG4", _A.LONG_I32, 2),
    OpcodeSpec(BINFLOAT, "BINFLOAT", _A.FLOAT64_BE, 1),
    OpcodeSpec(SHORT_BINUNICODE, "SHORT_BINUNICODE", _A.UTF8_U8, 4),
    OpcodeSpec(BINUNICODE, "BINUNICODE", _A.UTF8_U32, 1),
    OpcodeSpec(BINUNICODE8, "BINUNICODE8", _A.UTF8_U64, 4),
    OpcodeSpec(SHORT_BINBYTES, "SHORT_BINBYTES", _A.BYTES_U8, 3),
    OpcodeSpec(BINBYTES, "BINBYTES", _A.BYTES_U32, 3),
    OpcodeSpec(BINBYTES8, "BINBYTES8", _A.BYTES_U64, 4),
    OpcodeSpec(EMPTY_LIST, "EMPTY_LIST", _A.NONE, 1),
    OpcodeSpec(APPEND, "APPEND", _A.NONE, 0),
    OpcodeSpec(APPENDS, "APPENDS", _A.NONE, 1),
    OpcodeSpec(EMPTY_DICT, "EMPTY_DICT", _A.NONE, 1),
    OpcodeSpec(SETITEM, "SETITEM", _A.NONE, 0),
    OpcodeSpec(SETITEMS, "SETITEMS", _A.NONE, 1),
    OpcodeSpec(EMPTY_TUPLE, "EMPTY_TUPLE", _A.NONE, 1),
    OpcodeSpec(TUPLE1, "TUPLE1", _A.NONE, 2),
    OpcodeSpec(TUPLE2, "TUPLE2", _A.NONE, 2),
    OpcodeSpec(TUPLE3, "TUPLE3", _A.NONE, 2),
    OpcodeSpec(TUPLE, "TUPLE", _A.NONE, 0),
    OpcodeSpec(GLOBAL, "GLOBAL", _A.TWO_LINES, 0),
    OpcodeSpec(STACK_GLOBAL, "STACK_GLOBAL", _A.NONE, 4),
    OpcodeSpec(NEWOBJ, "NEWOBJ", _A.NONE, 2),
    OpcodeSpec(REDUCE, "REDUCE", _A.NONE, 0),
    OpcodeSpec(BUILD, "BUILD", _A.NONE, 0),
)

#: The opcodes of the profile by their byte.  Any other byte where an opcode
#: is expected breaks ENC-2.
PROFILE_OPCODES: Dict[int, OpcodeSpec] = {spec.code: spec for spec in _TABLE}

# Names of all pickle opcodes, profile or not, for error messages only.
_ALL_NAMES: Dict[int, str] = {ord(op.code): op.name for op in pickletools.opcodes}


def opcode_name(code: int) -> str:
    """The pickle name of an opcode byte (``'0x..'`` if pickle has none)."""
    return _ALL_NAMES.get(code, f"0x{code:02x}")


class GlobalRole(str, enum.Enum):
    """The one position in which an allowed global may appear (ENC-3)."""

    #: ``NEWOBJ`` of the class with an empty tuple: the command itself.
    COMMAND_CLASS = "command class: NEWOBJ with () as the outermost object"
    #: ``REDUCE`` with ``(str, 'latin1')``: protocol 2's way of writing bytes,
    #: recognised as the bytes ``str.encode('latin1')``, never called.
    BYTES_FROM_LATIN1 = "REDUCE with (str of code points < 256, 'latin1'): the bytes it encodes"
    #: ``REDUCE`` with ``()``: protocol 2's way of writing ``b''``.
    EMPTY_BYTES = "REDUCE with (): the empty bytes"


#: The module of the command classes, as the original's classes name it.
COMMAND_MODULE = "skyllh.cluster.commands"
#: The four command classes, by the class name that identifies them on the wire.
COMMAND_CLASS_NAMES: Tuple[str, ...] = ("ACK", "MSG", "ShutdownCN", "RegisterCN")

ALLOWED_GLOBALS: Dict[Tuple[str, str], GlobalRole] = {
    **{(COMMAND_MODULE, name): GlobalRole.COMMAND_CLASS for name in COMMAND_CLASS_NAMES},
    ("_codecs", "encode"): GlobalRole.BYTES_FROM_LATIN1,
    ("__builtin__", "bytes"): GlobalRole.EMPTY_BYTES,
    ("builtins", "bytes"): GlobalRole.EMPTY_BYTES,
}
