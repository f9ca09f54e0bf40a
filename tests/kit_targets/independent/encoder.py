"""The canonical encoder (ENC-7), written from spec/protocol.md §3 and encoding-profile.md §6.

A payload is ``PROTO 4``, one ``FRAME`` over the rest, the command class by
STACK_GLOBAL, ``EMPTY_TUPLE NEWOBJ``, the state dict and ``BUILD`` for
RegisterCN and MSG, then STOP.  Every str, bytes, list, dict and non-empty
tuple is followed by MEMOIZE; an object written before (the same object, by
identity) is written as a memo reference instead.  Values outside the subset
are refused before anything is written (VAL-1 to VAL-3, ENC-6, FRM-2).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional

MODULE = "skyllh.cluster.commands"
MAX_DEPTH = 200
MAX_PAYLOAD = 65535
BATCH = 1000
MAX_SAME_HASH = 64


class EncodeRefusal(ValueError):
    """A local error: the command cannot be sent (§8)."""

    def __init__(self, clause: str, reason: str) -> None:
        super().__init__(f"[{clause}] {reason}")
        self.clause = clause


def ack() -> bytes:
    """The canonical ACK payload."""
    return encode_command("ACK")


def shutdown() -> bytes:
    """The canonical ShutdownCN payload."""
    return encode_command("ShutdownCN")


def register(start_time: int, live_time: int) -> bytes:
    """The canonical RegisterCN payload (CMD-3: start time first)."""
    return encode_command("RegisterCN", {"_cn_start_time": start_time, "_cn_live_time": live_time})


def msg(value: Any) -> bytes:
    """The canonical MSG payload (CMD-4)."""
    return encode_command("MSG", {"msg": value})


def encode_command(name: str, state: Optional[Dict[str, Any]] = None) -> bytes:
    """PROTO 4, FRAME, the command, its state if any, STOP (encoding-profile.md §6)."""
    writer = _Writer()
    writer.text(MODULE, remember=False)
    writer.text(name)
    writer.put(b"\x93\x94)\x81\x94")  # STACK_GLOBAL MEMOIZE EMPTY_TUPLE NEWOBJ MEMOIZE
    writer.memo_count += 2
    if state is not None:
        if name == "RegisterCN" and set(state) == set(REGISTER_FIELDS):
            state = {key: state[key] for key in REGISTER_FIELDS}  # CMD-3: the canonical order
        writer.value(state, depth=-1)
        writer.put(b"b")
    writer.put(b".")
    body = bytes(writer.out)
    payload = b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body
    if len(payload) > MAX_PAYLOAD:
        raise EncodeRefusal("FRM-2", f"the payload would be {len(payload)} bytes, over {MAX_PAYLOAD}")
    return payload


#: RegisterCN's state keys in the order the original sets them (ENC-7, CMD-3).
REGISTER_FIELDS = ("_cn_start_time", "_cn_live_time")


class _Writer:
    """Writes values in CPython's protocol 4 order, with identity-based memo references."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.memo_count = 0
        self.memo: Dict[int, int] = {}
        self.keep: List[Any] = []  # memoized objects stay alive, so their ids stay unique
        self.open: set = set()  # ids of containers being written (VAL-3)

    def put(self, data: bytes) -> None:
        self.out += data

    def memoize(self, obj: Any) -> None:
        self.memo[id(obj)] = self.memo_count
        self.keep.append(obj)
        self.memo_count += 1
        self.put(b"\x94")

    def reference(self, obj: Any) -> bool:
        """Write a memo reference if ``obj`` was written before."""
        index = self.memo.get(id(obj))
        if index is None:
            return False
        self.put(b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index))
        return True

    def text(self, value: str, remember: bool = True) -> None:
        raw = value.encode("utf-8", "surrogatepass")
        self.put(b"\x8c" + bytes([len(raw)]) if len(raw) < 256 else b"X" + struct.pack("<I", len(raw)))
        self.put(raw)
        if remember:
            self.memoize(value)
        else:
            self.memo_count += 1
            self.put(b"\x94")

    def value(self, value: Any, depth: int) -> None:
        """One value of the subset (VAL-1); containers deeper than MAX_DEPTH are refused (ENC-6)."""
        kind = type(value)
        if value is None or kind in (bool, int, float):
            self.put(_scalar(value))
        elif id(value) in self.open:
            raise EncodeRefusal("VAL-3", "a value that contains itself")
        elif self.reference(value):
            return
        elif kind is str:
            self.text(value)
        elif kind is bytes:
            self.put((b"C" + bytes([len(value)]) if len(value) < 256 else b"B" + struct.pack("<I", len(value))) + value)
            self.memoize(value)
        elif kind in (list, dict, tuple):
            self.container(value, depth + 1)
        else:
            raise EncodeRefusal("VAL-1", f"a {kind.__name__} is not a value of the subset")

    def container(self, value: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise EncodeRefusal("ENC-6", f"a value nested deeper than {MAX_DEPTH}")
        self.open.add(id(value))
        {list: self.list, dict: self.dict, tuple: self.tuple}[type(value)](value, depth)
        self.open.discard(id(value))

    def list(self, value: list, depth: int) -> None:
        self.put(b"]")
        self.memoize(value)
        self.batches([[item] for item in value], depth, b"a", b"e", exact_tail=False)

    def dict(self, value: dict, depth: int) -> None:
        self.put(b"}")
        self.memoize(value)
        hashes: Dict[int, int] = {}
        for key in value:
            _check_key(key)
            if type(key) not in (str, bytes):  # ENC-6: keys a payload could make collide
                hashes[hash(key)] = hashes.get(hash(key), 0) + 1
                if hashes[hash(key)] > MAX_SAME_HASH:
                    raise EncodeRefusal("ENC-6", f"more than {MAX_SAME_HASH} keys of one dict with one hash")
        self.batches([[k, v] for k, v in value.items()], depth, b"s", b"u", exact_tail=True)

    def batches(self, entries: List[List[Any]], depth: int, one: bytes, many: bytes, exact_tail: bool) -> None:
        """One entry: the entry and ``one``; more: MARK, up to 1000 entries, ``many``, repeated.
        A dict whose last batch is exactly full gets one more, empty, batch (CPython's batch_dict_exact)."""
        if not entries:
            return
        if len(entries) == 1:
            for part in entries[0]:
                self.value(part, depth)
            self.put(one)
            return
        start = 0
        while True:
            batch = entries[start : start + BATCH]
            self.put(b"(")
            for entry in batch:
                for part in entry:
                    self.value(part, depth)
            self.put(many)
            start += BATCH
            if start >= len(entries) and not (exact_tail and len(batch) == BATCH):
                return

    def tuple(self, value: tuple, depth: int) -> None:
        if not value:
            self.put(b")")
            return
        if len(value) > 3:
            self.put(b"(")
        for item in value:
            self.value(item, depth)
        if self.reference(value):  # CPython: a tuple memoized while its items were written
            return
        self.put({1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(value), b"t"))
        self.memoize(value)


def _check_key(key: Any) -> None:
    """VAL-2: a key is a scalar or a tuple of keys."""
    if type(key) is tuple:
        for item in key:
            _check_key(item)
    elif key is not None and type(key) not in (bool, int, float, str, bytes):
        raise EncodeRefusal("VAL-2", f"a {type(key).__name__} cannot be a dict key")


def _scalar(value: Any) -> bytes:
    """None, bool, int (the narrowest form), float."""
    if value is None:
        return b"N"
    if value is True:
        return b"\x88"
    if value is False:
        return b"\x89"
    if type(value) is float:
        return b"G" + struct.pack(">d", value)
    return _int(value)


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 256 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    bits = (value if value >= 0 else -value - 1).bit_length() + 1  # with the sign bit
    size = (bits + 7) // 8  # the shortest two's complement form
    raw = value.to_bytes(size, "little", signed=True)
    return (b"\x8a" + bytes([size]) if size < 256 else b"\x8b" + struct.pack("<i", size)) + raw
