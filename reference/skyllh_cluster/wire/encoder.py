"""The canonical encoder (ENC-7): the bytes CPython's pickle writes, without pickle.

:func:`encode_payload` writes exactly what ``pickle.dumps(cmd, protocol=4)``
writes for the original's command class ``class_name`` with the instance dict
``state``, byte for byte, so that the original's nodes and ours exchange
identical frames.  It follows CPython's ``_pickle.c`` in every choice that
shows in the bytes (``spec/encoding-profile.md`` section 6):

* ``PROTO 4``, then one ``FRAME`` around everything that follows;
* the class as ``STACK_GLOBAL`` of ``'skyllh.cluster.commands'`` and the class
  name, then ``EMPTY_TUPLE NEWOBJ``, then the state dict and ``BUILD`` when
  the dict is not empty;
* the smallest integer opcode, ``BINFLOAT``, ``SHORT_BINUNICODE``/``BINUNICODE``
  of UTF-8 with ``surrogatepass``, ``SHORT_BINBYTES``/``BINBYTES``;
* ``MEMOIZE`` after every str, bytes, list, dict, non-empty tuple and global,
  and ``BINGET``/``LONG_BINGET`` when the same object (by identity) comes
  again, including the class-name and dict-key strings that CPython memoized
  on the way: ``MSG('msg')`` refers back to the key ``'msg'``;
* list items and dict entries with ``APPEND``/``SETITEM`` for one, else in
  ``MARK ... APPENDS``/``SETITEMS`` batches of 1000, with CPython's empty
  trailing ``MARK SETITEMS`` after a dict batch of exactly 1000.

It refuses, as :class:`LocalProtocolError`, what a receiver would refuse: a
state outside CMD-1 to CMD-4, a value outside the subset (VAL-1 to VAL-3) or
beyond the limits of ENC-6 (the keys that share a hash included), counted as
:mod:`~skyllh_cluster.wire.machine` counts them, and a payload over 65535 bytes (FRM-2).
"""

from __future__ import annotations

import struct
import sys
from typing import Any, Dict, List, Tuple

from ..errors import LocalProtocolError
from . import machine
from . import opcodes as op
from .framing import MAX_PAYLOAD
from .values import MAX_DEPTH, MAX_SAME_HASH_KEYS, MAX_VALUE_COST

__all__ = ["encode_payload", "encode_int"]

_PROTO_HEADER = bytes((op.PROTO, op.CANONICAL_PROTOCOL, op.FRAME))
_PACK_FLOAT = struct.Struct(">d").pack
_PACK_U32 = struct.Struct("<I").pack
_PACK_I32 = struct.Struct("<i").pack
_PACK_U64 = struct.Struct("<Q").pack
_MEMOIZED_TYPES = (str, bytes, list, tuple, dict)
_KEY_TYPES = (type(None), bool, int, float, str, bytes, tuple)
# ACK and ShutdownCN have one encoding each; filled on first use.
_STATELESS: Dict[str, bytes] = {}


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


def _refuse_type(kind: type) -> LocalProtocolError:
    return LocalProtocolError(
        "VAL-1",
        f"a MSG value may not contain {kind.__module__}.{kind.__qualname__}; "
        "allowed are None, bool, int, float, str, bytes, list, tuple and dict",
    )


class _Writer:
    """Writes one pickle body with CPython's memo, measuring as the decoder does."""

    __slots__ = ("out", "memo", "figures", "on_path", "key_cost")

    def __init__(self) -> None:
        self.out = bytearray()
        # id(obj) -> memo index, as CPython's memo table.  Every memoized
        # object is kept alive by the state being encoded, so ids are stable.
        self.memo: Dict[int, int] = {}
        self.figures: Dict[int, Tuple[int, int]] = {}  # id -> (height, cost) of containers written
        self.on_path: set = set()
        self.key_cost = 0

    def memoize(self, obj: Any) -> None:
        self.memo[id(obj)] = len(self.memo)
        self.out.append(op.MEMOIZE)

    def save(self, obj: Any, level: int) -> Tuple[int, int]:
        """Write ``obj`` at nesting ``level``; return its height and cost (ENC-6)."""
        kind = type(obj)
        out = self.out
        if obj is None or kind is bool:
            out.append(op.NONE if obj is None else op.NEWTRUE if obj else op.NEWFALSE)
            return 0, 1
        if kind is int:
            out += encode_int(obj)
            return 0, 1 + (obj.bit_length() >> 3)
        if kind is float:
            out.append(op.BINFLOAT)
            out += _PACK_FLOAT(obj)
            return 0, 1
        if kind not in _MEMOIZED_TYPES:
            raise _refuse_type(kind)
        index = self.memo.get(id(obj))
        if index is not None:
            return self.save_reference(obj, index, level)
        if kind is str or kind is bytes:
            self.save_text(obj)
            return 0, 1 + len(obj)
        if level >= MAX_DEPTH:
            raise LocalProtocolError("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers")
        self.on_path.add(id(obj))
        if kind is list:
            figures = self.save_list(obj, level)
        elif kind is dict:
            figures = self.save_dict(obj, level)
        else:
            figures = self.save_tuple(obj, level)
        self.on_path.discard(id(obj))
        if figures[1] > MAX_VALUE_COST:
            raise LocalProtocolError(
                "ENC-6", f"the value costs more than {MAX_VALUE_COST} when shared parts are counted at each use"
            )
        self.figures[id(obj)] = figures
        return figures

    def save_text(self, obj: Any) -> None:
        data = obj.encode("utf-8", "surrogatepass") if type(obj) is str else obj
        short, long = (op.SHORT_BINUNICODE, op.BINUNICODE) if type(obj) is str else (op.SHORT_BINBYTES, op.BINBYTES)
        if len(data) < 256:
            self.out += bytes((short, len(data)))
        else:
            self.out += bytes((long,)) + _PACK_U32(len(data))
        self.out += data
        self.memoize(obj)

    def save_reference(self, obj: Any, index: int, level: int) -> Tuple[int, int]:
        if id(obj) in self.on_path:
            raise LocalProtocolError("VAL-3", f"the value contains itself (a cycle through a {type(obj).__name__})")
        height, cost = self.figures.get(id(obj), (0, 1 + len(obj) if type(obj) in (str, bytes) else 1))
        if height and level + height > MAX_DEPTH:
            raise LocalProtocolError("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers")
        self.out += bytes((op.BINGET, index)) if index < 256 else bytes((op.LONG_BINGET,)) + _PACK_U32(index)
        return height, cost

    def save_items(self, items: List[Any], level: int) -> Tuple[int, int]:
        height, cost = 0, 0
        for item in items:
            item_height, item_cost = self.save(item, level)
            height = max(height, item_height)
            cost += item_cost
        return height, cost

    def save_batches(self, items: List[Any], level: int, one: int, many: int, exact_tail: bool) -> Tuple[int, int]:
        """Items (or flattened key, value pairs) in CPython's batches; a pair counts as one."""
        width = 2 if one == op.SETITEM else 1
        if len(items) == width:
            height, cost = self.save_items(items, level)
            self.out.append(one)
            return height, cost
        height, cost = 0, 0
        step = op.BATCH_SIZE * width
        for start in range(0, len(items), step):
            batch = items[start : start + step]
            self.out.append(op.MARK)
            batch_height, batch_cost = self.save_items(batch, level)
            self.out.append(many)
            height, cost = max(height, batch_height), cost + batch_cost
        if exact_tail and items and len(items) % step == 0:
            # CPython starts another batch whenever one was full.
            self.out += bytes((op.MARK, many))
        return height, cost

    def save_list(self, obj: list, level: int) -> Tuple[int, int]:
        self.out.append(op.EMPTY_LIST)
        self.memoize(obj)
        if not obj:
            return 1, 1
        height, cost = self.save_batches(obj, level + 1, op.APPEND, op.APPENDS, exact_tail=False)
        return height + 1, cost + 1

    def save_dict(self, obj: dict, level: int) -> Tuple[int, int]:
        self.out.append(op.EMPTY_DICT)
        self.memoize(obj)
        hashes: Dict[int, int] = {}
        for key in obj:
            if type(key) not in _KEY_TYPES:
                raise LocalProtocolError(
                    "VAL-2", f"a dict key must be None, bool, int, float, str, bytes or tuple, not {type(key).__name__}"
                )
            if type(key) is not str and type(key) is not bytes:
                digest = hash(key)
                hashes[digest] = hashes.get(digest, 0) + 1
                if hashes[digest] > MAX_SAME_HASH_KEYS:
                    raise LocalProtocolError("ENC-6", f"more than {MAX_SAME_HASH_KEYS} keys of one dict have the same hash")
        if not obj:
            return 1, 1
        flat = [part for entry in obj.items() for part in entry]
        height, cost = self.save_batches(flat, level + 1, op.SETITEM, op.SETITEMS, exact_tail=True)
        self.key_cost += sum(machine.cost(key, self.figures) for key in obj)
        if self.key_cost > MAX_VALUE_COST:
            raise LocalProtocolError("ENC-6", f"the dict keys cost more than {MAX_VALUE_COST} in total")
        return height + 1, cost + 1

    def save_tuple(self, obj: tuple, level: int) -> Tuple[int, int]:
        if not obj:
            self.out.append(op.EMPTY_TUPLE)  # CPython never memoizes ()
            return 1, 1
        if len(obj) > 3:
            self.out.append(op.MARK)
        height, cost = self.save_items(list(obj), level + 1)
        self.out.append((op.TUPLE1, op.TUPLE2, op.TUPLE3)[len(obj) - 1] if len(obj) <= 3 else op.TUPLE)
        self.memoize(obj)
        return height + 1, cost + 1


def _check_command(class_name: str, state: Any) -> None:
    if class_name not in op.COMMAND_CLASS_NAMES:
        raise LocalProtocolError("CMD-1", f"{class_name} is not one of the four command classes")
    if type(state) is not dict:
        raise LocalProtocolError("CMD-1", f"a command's state is a dict, not {type(state).__name__}")
    if not state and class_name in ("ACK", "ShutdownCN"):
        return
    try:
        machine.check_state(class_name, state)
    except machine.Refusal as refusal:
        raise LocalProtocolError(refusal.clause, refusal.reason) from None


def encode_payload(class_name: str, state: Dict[str, Any]) -> bytes:
    """The canonical payload (without the length prefix) of the command ``class_name`` with ``state``.

    >>> encode_payload("ACK", {}).hex()
    '80049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e'
    """
    _check_command(class_name, state)
    if not state and class_name in _STATELESS:
        return _STATELESS[class_name]
    writer = _Writer()
    # The memo entries CPython makes before the state: module name (0), class
    # name (1), class (2), instance (3).  A value may refer back to 1, never
    # to 0: CPython's module name is a string object of its own.
    writer.save(op.COMMAND_MODULE.encode("ascii").decode("ascii"), 0)
    writer.save(sys.intern(class_name), 0)
    writer.out += bytes((op.STACK_GLOBAL, op.MEMOIZE, op.EMPTY_TUPLE, op.NEWOBJ, op.MEMOIZE))
    writer.memo[-1], writer.memo[-2] = 2, 3  # the class and the instance: no value can be either
    if state:
        writer.save(state, -1)  # the state dict holds the value one level up
        writer.out.append(op.BUILD)
    writer.out.append(op.STOP)
    body = writer.out
    payload = _PROTO_HEADER + _PACK_U64(len(body)) + body
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(
            "FRM-2", f"the encoded command is {len(payload)} bytes, more than fits in a frame ({MAX_PAYLOAD})"
        )
    if not state:
        _STATELESS[class_name] = payload
    return payload
