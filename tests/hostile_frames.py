"""Hostile RegisterCN frames, built by hand from pickle opcodes (issue "Hardening", F1-F3).

Each builder writes the bytes of a protocol 4 pickle directly; nothing here
(or in the tests that use it) ever unpickles anything.  Every frame starts
like the canonical RegisterCN (the class, NEWOBJ, the state dict with its two
int fields) and then puts one extra, costly key into the state dict, which
the profile refuses (VAL/CMD clauses): the question is only what refusing
it costs the receiver.
"""

from __future__ import annotations

import time
from typing import List, Optional

from skyllh_cluster.wire.framing import encode_frame

__all__ = ["big_int_key_frame", "shared_tuple_key_frame", "colliding_keys_frame", "pickle_int"]

_PROTO_4 = b"\x80\x04"
_FRAME = b"\x95"
_MEMOIZE = b"\x94"
_MARK = b"("
_TUPLE = b"t"
_NONE = b"N"
_SETITEMS = b"u"
_BUILD = b"b"
_STOP = b"."
#: The memo entries the head below makes: module, name, class, object, dict, two field names.
_HEAD_MEMO = 7
#: 2**61 - 1: CPython hashes an int to itself modulo this prime, so all its multiples hash alike.
MERSENNE_61 = (1 << 61) - 1


def _short_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"\x8c" + bytes([len(data)]) + data


def pickle_int(value: int) -> bytes:
    """An int as pickle writes it: BININT1/BININT2/BININT, else LONG1 or LONG4 (two's complement)."""
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + value.to_bytes(2, "little")
    if -(2**31) <= value < 2**31:
        return b"J" + value.to_bytes(4, "little", signed=True)
    size = (value.bit_length() + 8) // 8
    data = value.to_bytes(size, "little", signed=True)
    if size < 256:
        return b"\x8a" + bytes([size]) + data
    return b"\x8b" + size.to_bytes(4, "little") + data


def _register_head(start: Optional[int] = None, live: int = 7200) -> bytes:
    start = int(time.time()) if start is None else start
    return b"".join(
        [
            _short_str("skyllh.cluster.commands"), _MEMOIZE,
            _short_str("RegisterCN"), _MEMOIZE,
            b"\x93", _MEMOIZE,  # STACK_GLOBAL
            b")\x81", _MEMOIZE,  # EMPTY_TUPLE, NEWOBJ
            b"}", _MEMOIZE,  # EMPTY_DICT
            _MARK,
            _short_str("_cn_start_time"), _MEMOIZE, pickle_int(start),
            _short_str("_cn_live_time"), _MEMOIZE, pickle_int(live),
        ]
    )


def _register_frame(extra_items: bytes) -> bytes:
    """A RegisterCN frame whose state dict gets ``extra_items`` (key, value opcodes) after its fields."""
    body = _register_head() + extra_items + _SETITEMS + _BUILD + _STOP
    return encode_frame(_PROTO_4 + _FRAME + len(body).to_bytes(8, "little") + body)


def _get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + index.to_bytes(4, "little")


def big_int_key_frame(digits: int = 5001) -> bytes:
    """F1: the state's extra key is an int of ``digits`` decimal digits (beyond CPython's int->str limit)."""
    return _register_frame(pickle_int(10 ** (digits - 1)) + _NONE)


def shared_tuple_key_frame(outer: int = 1000, inner: int = 1000, text: int = 300) -> bytes:
    """F2: the extra key is a tuple of ``outer`` references to one tuple of ``inner`` references to one str.

    About 4.4 KB on the wire; written out in full (a repr, say) it is
    ``outer * inner * text`` characters: 300 MB with the defaults.
    """
    data = ("s" * text).encode("utf-8")
    string = b"X" + len(data).to_bytes(4, "little") + data + _MEMOIZE  # memo _HEAD_MEMO
    inner_tuple = _MARK + _get(_HEAD_MEMO) * inner + _TUPLE + _MEMOIZE  # memo _HEAD_MEMO + 1
    outer_tuple = _MARK + _get(_HEAD_MEMO + 1) * outer + _TUPLE
    return _register_frame(string + inner_tuple + outer_tuple + _NONE)


def colliding_keys_frame(payload_size: int = 61_000) -> bytes:
    """F3: as many extra int keys k * (2**61 - 1) as fit in ``payload_size`` bytes; all hash to 0."""
    items: List[bytes] = []
    size = len(_register_head()) + 16
    k = 1
    while True:
        item = pickle_int(k * MERSENNE_61) + _NONE
        if size + len(item) > payload_size:
            break
        items.append(item)
        size += len(item)
        k += 1
    return _register_frame(b"".join(items))

