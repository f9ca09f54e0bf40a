"""The canonical encoder (ENC-7): the bytes CPython's pickle writes, without pickle.

:func:`encode_command` writes exactly what ``pickle.dumps(cmd, protocol=4)``
writes for the original's command classes, byte for byte, so that the
original's nodes and ours exchange identical frames.  It follows CPython's
``_pickle.c`` in every choice that shows in the bytes:

* ``PROTO 4``, then one ``FRAME`` around everything that follows, when that
  is at least 4 bytes long (it always is for a command);
* the class as ``STACK_GLOBAL`` of ``'skyllh.cluster.commands'`` and the class
  name, then ``EMPTY_TUPLE NEWOBJ``, then the instance ``__dict__`` and
  ``BUILD`` when the dict is not empty;
* the smallest integer opcode (``BININT1``/``BININT2``/``BININT``, else
  ``LONG1``/``LONG4`` with minimal two's complement bytes), ``BINFLOAT``,
  ``SHORT_BINUNICODE``/``BINUNICODE`` of UTF-8 with ``surrogatepass``,
  ``SHORT_BINBYTES``/``BINBYTES``;
* ``MEMOIZE`` after every str, bytes, list, dict, non-empty tuple and global,
  and ``BINGET``/``LONG_BINGET`` when the same object (by identity) comes
  again, including the class-name and dict-key strings that CPython memoized
  on the way: ``MSG('msg')`` refers back to the key ``'msg'``;
* list items with ``APPEND`` for a single item, else in ``MARK ... APPENDS``
  batches of 1000; dict entries likewise with ``SETITEM``/``SETITEMS``, with
  CPython's empty trailing ``MARK SETITEMS`` after a batch of exactly 1000.

Values outside the subset are refused with :class:`LocalProtocolError`
(VAL-1, VAL-2, VAL-3, ENC-6), and so is a payload over 65535 bytes (FRM-2).
"""

from __future__ import annotations

import struct
import sys
from typing import Any, Dict, List, Tuple

from ..commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from ..errors import LocalProtocolError
from . import opcodes as op
from .framing import MAX_PAYLOAD
from .values import MAX_DEPTH

__all__ = ["encode_command", "encode_int"]

# The class's module name as CPython would find it on the original class:
# a string object of its own, never the same object as a string in a value,
# so it is never the target of a memo reference from the value.
_MODULE_NAME = op.COMMAND_MODULE.encode("ascii").decode("ascii")

_FRAME_HEADER_SIZE = 9
_PROTO_HEADER = bytes((op.PROTO, op.CANONICAL_PROTOCOL))
_PACK_FLOAT = struct.Struct(">d").pack
_PACK_U32 = struct.Struct("<I").pack
_PACK_I32 = struct.Struct("<i").pack
_PACK_U64 = struct.Struct("<Q").pack
_MEMOIZED_TYPES = (str, bytes, list, tuple, dict)
_HASHABLE_KEY_TYPES = (type(None), bool, int, float, str, bytes, tuple)


def encode_int(value: int) -> bytes:
    """The opcode and argument CPython writes for the int ``value``."""
    if 0 <= value <= 0xFF:
        return bytes((op.BININT1, value))
    if 0 <= value <= 0xFFFF:
        return bytes((op.BININT2, value & 0xFF, value >> 8))
    if -0x80000000 <= value <= 0x7FFFFFFF:
        return b"J" + _PACK_I32(value)
    size = (value.bit_length() >> 3) + 1
    data = value.to_bytes(size, "little", signed=True)
    if value < 0 and size > 1 and data[-1] == 0xFF and data[-2] & 0x80:
        data = data[:-1]  # CPython's minimal form of a negative number
    if len(data) < 256:
        return bytes((op.LONG1, len(data))) + data
    return bytes((op.LONG4,)) + _PACK_I32(len(data)) + data


class _ValueWriter:
    """Writes one pickle body, with CPython's memo, while checking the subset."""

    __slots__ = ("out", "memo", "heights", "sizes", "on_path")

    def __init__(self) -> None:
        self.out = bytearray()
        # id(obj) -> memo index, as CPython's memo table.  Every memoized
        # object is kept alive by the command being encoded, so ids are stable.
        self.memo: Dict[int, int] = {}
        # For memoized containers: their height (nesting levels) and their
        # size as a tree, needed when they are referenced again (ENC-6).
        self.heights: Dict[int, int] = {}
        self.sizes: Dict[int, int] = {}
        self.on_path: set = set()

    def memoize(self, obj: Any) -> None:
        self.memo[id(obj)] = len(self.memo)
        self.out.append(op.MEMOIZE)

    def write_get(self, index: int) -> None:
        if index < 256:
            self.out += bytes((op.BINGET, index))
        else:
            self.out += bytes((op.LONG_BINGET,)) + _PACK_U32(index)

    def save(self, obj: Any, level: int) -> Tuple[int, int]:
        """Write ``obj``; return (height, tree size) of what was written."""
        kind = type(obj)
        out = self.out
        if obj is None:
            out.append(op.NONE)
            return 0, 1
        if kind is bool:
            out.append(op.NEWTRUE if obj else op.NEWFALSE)
            return 0, 1
        if kind is int:
            out += encode_int(obj)
            return 0, 1
        if kind is float:
            out.append(op.BINFLOAT)
            out += _PACK_FLOAT(obj)
            return 0, 1
        if kind not in _MEMOIZED_TYPES:
            raise LocalProtocolError(
                "VAL-1",
                f"a MSG value may not contain {kind.__module__}.{kind.__qualname__}; "
                "allowed are None, bool, int, float, str, bytes, list, tuple and dict",
            )
        index = self.memo.get(id(obj))
        if index is not None:
            return self._save_reference(obj, index, level)
        if kind is str:
            data = obj.encode("utf-8", "surrogatepass")
            if len(data) < 256:
                out += bytes((op.SHORT_BINUNICODE, len(data)))
            else:
                out += bytes((op.BINUNICODE,)) + _PACK_U32(len(data))
            out += data
            self.memoize(obj)
            return 0, 1
        if kind is bytes:
            if len(obj) < 256:
                out += bytes((op.SHORT_BINBYTES, len(obj)))
            else:
                out += bytes((op.BINBYTES,)) + _PACK_U32(len(obj))
            out += obj
            self.memoize(obj)
            return 0, 1
        if level >= MAX_DEPTH:
            raise LocalProtocolError("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers")
        self.on_path.add(id(obj))
        if kind is list:
            height, size = self._save_list(obj, level)
        elif kind is dict:
            height, size = self._save_dict(obj, level)
        else:
            height, size = self._save_tuple(obj, level)
        self.on_path.discard(id(obj))
        if size > op.MAX_VALUE_NODES:
            raise LocalProtocolError(
                "ENC-6", f"the value has more than {op.MAX_VALUE_NODES} nodes when shared parts are counted at each use"
            )
        self.heights[id(obj)] = height
        self.sizes[id(obj)] = size
        return height, size

    def _save_reference(self, obj: Any, index: int, level: int) -> Tuple[int, int]:
        if id(obj) in self.on_path:
            raise LocalProtocolError("VAL-3", f"the value contains itself (a cycle through a {type(obj).__name__})")
        height = self.heights.get(id(obj), 0)
        if height and level + height > MAX_DEPTH:
            raise LocalProtocolError("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers")
        self.write_get(index)
        return height, self.sizes.get(id(obj), 1)

    def _save_items(self, items: List[Any], level: int) -> Tuple[int, int]:
        height, size = 0, 0
        for item in items:
            item_height, item_size = self.save(item, level)
            height = max(height, item_height)
            size += item_size
        return height, size

    def _save_list(self, obj: list, level: int) -> Tuple[int, int]:
        self.out.append(op.EMPTY_LIST)
        self.memoize(obj)
        if len(obj) == 1:
            height, size = self.save(obj[0], level + 1)
            self.out.append(op.APPEND)
            return height + 1, size + 1
        height, size = 0, 0
        for start in range(0, len(obj), op.BATCH_SIZE):
            self.out.append(op.MARK)
            batch_height, batch_size = self._save_items(obj[start : start + op.BATCH_SIZE], level + 1)
            self.out.append(op.APPENDS)
            height, size = max(height, batch_height), size + batch_size
        return height + 1, size + 1

    def _save_dict(self, obj: dict, level: int) -> Tuple[int, int]:
        self.out.append(op.EMPTY_DICT)
        self.memoize(obj)
        for key in obj:
            if type(key) not in _HASHABLE_KEY_TYPES:
                raise LocalProtocolError(
                    "VAL-2", f"a dict key must be None, bool, int, float, str, bytes or tuple, not {type(key).__name__}"
                )
        entries = list(obj.items())
        if not entries:
            return 1, 1
        if len(entries) == 1:
            height, size = self._save_items(list(entries[0]), level + 1)
            self.out.append(op.SETITEM)
            return height + 1, size + 1
        height, size = 0, 0
        start = 0
        while True:
            batch = entries[start : start + op.BATCH_SIZE]
            self.out.append(op.MARK)
            for key, value in batch:
                batch_height, batch_size = self._save_items([key, value], level + 1)
                height, size = max(height, batch_height), size + batch_size
            self.out.append(op.SETITEMS)
            # CPython starts another batch whenever one was full, so a dict
            # of exactly 1000 entries ends with an empty MARK SETITEMS.
            if len(batch) < op.BATCH_SIZE:
                return height + 1, size + 1
            start += op.BATCH_SIZE

    def _save_tuple(self, obj: tuple, level: int) -> Tuple[int, int]:
        if not obj:
            self.out.append(op.EMPTY_TUPLE)  # CPython never memoizes ()
            return 1, 1
        if len(obj) <= 3:
            height, size = self._save_items(list(obj), level + 1)
            self.out.append((op.TUPLE1, op.TUPLE2, op.TUPLE3)[len(obj) - 1])
        else:
            self.out.append(op.MARK)
            height, size = self._save_items(list(obj), level + 1)
            self.out.append(op.TUPLE)
        self.memoize(obj)
        return height + 1, size + 1


def _command_state(command: Command) -> Dict[str, Any]:
    """The instance dict to BUILD, checked against CMD-1 to CMD-4."""
    kind = type(command)
    if kind not in (ACK, ShutdownCN, RegisterCN, MSG):
        raise LocalProtocolError("CMD-1", f"{kind.__qualname__} is not one of the four command classes")
    state = command.__dict__
    if kind is ACK or kind is ShutdownCN:
        if state:
            raise LocalProtocolError("CMD-2", f"{kind.__name__} carries no state, but has {sorted(state)}")
    elif kind is RegisterCN:
        if list(state) not in (["_cn_start_time", "_cn_live_time"], ["_cn_live_time", "_cn_start_time"]):
            raise LocalProtocolError("CMD-3", f"RegisterCN state must be _cn_start_time and _cn_live_time, not {list(state)}")
        for key, value in state.items():
            if type(value) is not int:
                raise LocalProtocolError("CMD-3", f"RegisterCN {key.lstrip('_')} must be an int, not {type(value).__name__}")
    elif list(state) != ["msg"]:
        raise LocalProtocolError("CMD-4", f"MSG state must be exactly the key msg, not {list(state)}")
    return state


def encode_command(command: Command) -> bytes:
    """Return the canonical payload of ``command`` (without the length prefix).

    >>> encode_command(ACK()).hex()
    '80049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e'
    """
    state = _command_state(command)
    if not state:
        constant = _STATELESS.get(type(command))
        if constant is not None:
            return constant
    writer = _ValueWriter()
    class_name = sys.intern(type(command).__name__)
    # The memo entries CPython makes before the state: module name (0), class
    # name (1), class (2), instance (3).  A value may refer back to 0 or 1.
    writer.save(_MODULE_NAME, 0)
    writer.save(class_name, 0)
    writer.out += bytes((op.STACK_GLOBAL, op.MEMOIZE, op.EMPTY_TUPLE, op.NEWOBJ, op.MEMOIZE))
    writer.memo[id(type(command))] = 2
    writer.memo[id(command)] = 3
    if state:
        # The state dict is written as CPython writes any dict, but its
        # entries are the top of the value: they are checked as level 0.
        writer.out.append(op.EMPTY_DICT)
        writer.memoize(state)
        writer.on_path.add(id(state))
        if len(state) > 1:
            writer.out.append(op.MARK)
        for key, value in state.items():
            writer.save(key, 0)
            writer.save(value, 0)
        writer.out.append(op.SETITEM if len(state) == 1 else op.SETITEMS)
        writer.out.append(op.BUILD)
    writer.out.append(op.STOP)
    body = writer.out
    if len(body) >= op.FRAME_SIZE_MIN:
        payload = _PROTO_HEADER + bytes((op.FRAME,)) + _PACK_U64(len(body)) + body
    else:  # pragma: no cover - a command's body is at least 38 bytes
        payload = _PROTO_HEADER + body
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(
            "FRM-2", f"the encoded command is {len(payload)} bytes, more than fits in a frame ({MAX_PAYLOAD})"
        )
    return payload


# ACK and ShutdownCN have one encoding each: write them once.
_STATELESS: Dict[type, bytes] = {}
_STATELESS.update({cls: encode_command(cls()) for cls in (ACK, ShutdownCN)})
