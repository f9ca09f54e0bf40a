"""The regression corpus of hostile payloads (issue "Hardening", F1 to F4), built by hand as bytes.

Nothing here is made by pickling an object: each payload is written opcode by
opcode, as an attacker would, so that no unpickler ever runs on its way in.
Used by tests/test_hostile_frames.py, the fuzzer's seeds (scripts/fuzz_codec.py)
and the figures of benchmarks/bench_codec.py.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict

from skyllh_cluster.wire import opcodes as op

MODULE = b"skyllh.cluster.commands"
MERSENNE_61 = 2**61 - 1


def framed(body: bytes) -> bytes:
    """PROTO 4, then one FRAME around ``body``."""
    return bytes((op.PROTO, 4, op.FRAME)) + struct.pack("<Q", len(body)) + body


def short_str(text: bytes) -> bytes:
    return bytes((op.SHORT_BINUNICODE, len(text))) + text + bytes((op.MEMOIZE,))


def long_int(value: int) -> bytes:
    """LONG1 or LONG4 with the fewest two's complement bytes."""
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    if len(data) < 256:
        return bytes((op.LONG1, len(data))) + data
    return bytes((op.LONG4,)) + struct.pack("<i", len(data)) + data


def command_head(class_name: bytes) -> bytes:
    """The command as CPython writes it (memo 0 to 3), then EMPTY_DICT MEMOIZE (memo 4) and MARK."""
    return short_str(MODULE) + short_str(class_name) + bytes(
        (op.STACK_GLOBAL, op.MEMOIZE, op.EMPTY_TUPLE, op.NEWOBJ, op.MEMOIZE, op.EMPTY_DICT, op.MEMOIZE, op.MARK)
    )


def with_extra_entry(class_name: bytes, extra_key: bytes) -> bytes:
    """A RegisterCN or MSG whose state holds its valid entries and one more, ``extra_key`` -> 0."""
    if class_name == b"RegisterCN":
        valid = short_str(b"_cn_start_time") + b"K\x01" + short_str(b"_cn_live_time") + b"K\x02"
    else:
        valid = short_str(b"msg") + b"K\x01"
    return framed(command_head(class_name) + valid + extra_key + b"K\x00" + b"ub.")


def f1_long_int_key(class_name: bytes = b"RegisterCN") -> bytes:
    """F1: the extra key is an int of 5001 decimal digits (int -> str would raise ValueError)."""
    return with_extra_entry(class_name, long_int(10**5000))


def f2_reference_bomb_key(class_name: bytes = b"RegisterCN") -> bytes:
    """F2: the extra key is a tuple of 1000 references to a tuple of 1000 references to a 300-char str."""
    first = 7 if class_name == b"RegisterCN" else 6  # the memo index of the str
    text = bytes((op.BINUNICODE,)) + struct.pack("<I", 300) + b"s" * 300 + bytes((op.MEMOIZE,))
    inner = b"(" + (b"h" + bytes((first,))) * 1000 + b"t" + bytes((op.MEMOIZE,))
    outer = b"(" + (b"h" + bytes((first + 1,))) * 1000 + b"t"
    return with_extra_entry(class_name, text + inner + outer)


def f3_colliding_keys(before_the_command: bool = False) -> bytes:
    """F3: a RegisterCN state with as many int keys k * (2**61 - 1) as fit: all hash to 0."""
    entries = b"".join(long_int(k * MERSENNE_61) + b"N" for k in range(1, 5000))
    if before_the_command:  # the dict built first, below the command
        dict_first = b"}\x94(" + entries + b"u"
        return framed(dict_first + command_head(b"RegisterCN")[:-3] + b".")
    return framed(command_head(b"RegisterCN") + entries + b"ub.")


def f3_colliding_msg_keys(count: int = 4999, as_tuples: bool = False) -> bytes:
    """F3 against a MSG: a valid value, a dict of ``count`` int keys k * (2**61 - 1), or 1-tuples of them, all of one hash.

    No CMD-3 stops it early: only the bound on keys of one hash (ENC-6) does.
    """
    key = (lambda k: long_int(k * MERSENNE_61) + bytes((op.TUPLE1,))) if as_tuples else (lambda k: long_int(k * MERSENNE_61))
    entries = b"".join(key(k) + b"N" for k in range(1, count + 1))
    return framed(command_head(b"MSG")[:-1] + short_str(b"msg") + b"}\x94(" + entries + b"u" + b"sb.")


def f4_deep_tuple_key(depth: int = 65000) -> bytes:
    """F4: a MSG whose value is a dict with a tuple nested ``depth`` deep as its key."""
    key = b"K\x00" + bytes((op.TUPLE1,)) * depth
    body = command_head(b"MSG")[:-1] + short_str(b"msg") + b"}" + key + b"Ns" + b"sb."
    return framed(body)


CORPUS: Dict[str, Callable[[], bytes]] = {
    "F1 RegisterCN": lambda: f1_long_int_key(b"RegisterCN"),
    "F1 MSG": lambda: f1_long_int_key(b"MSG"),
    "F2 RegisterCN": lambda: f2_reference_bomb_key(b"RegisterCN"),
    "F2 MSG": lambda: f2_reference_bomb_key(b"MSG"),
    "F3 RegisterCN": f3_colliding_keys,
    "F3 dict before the command": lambda: f3_colliding_keys(before_the_command=True),
    "F3 MSG, int keys of one hash": f3_colliding_msg_keys,
    "F3 MSG, tuple keys of one hash": lambda: f3_colliding_msg_keys(4000, as_tuples=True),
    "F4 MSG": f4_deep_tuple_key,
}


def empty_containers(opcode: bytes, count: int = 32000) -> bytes:
    """A MSG whose value is None, then ``count`` empty lists or dicts in a row: a template must read them in linear time."""
    return framed(command_head(b"MSG")[:-1] + short_str(b"msg") + b"N" + (opcode + bytes((op.MEMOIZE,))) * count + b"sb.")


CORPUS.update({
    "32000 empty lists in a row": lambda: empty_containers(bytes((op.EMPTY_LIST,))),
    "32000 empty dicts in a row": lambda: empty_containers(bytes((op.EMPTY_DICT,))),
})
