"""The value subset a MSG may carry (spec clauses VAL-1 to VAL-4).

A MSG value is a tree (or acyclic graph) of ``None``, ``bool``, ``int``,
``float``, ``str``, ``bytes``, ``list``, ``tuple`` and ``dict``.  Exact types
only: a subclass such as ``enum.IntEnum`` or ``collections.OrderedDict`` would
pickle as a reference to its class, which the profile forbids.

Equality here is *exact*: ``True``, ``1`` and ``1.0`` are different values, and
two floats are equal when their bit patterns are (so a NaN equals itself).
That is the equality under which the codec round-trips (VAL-4).
"""

from __future__ import annotations

import struct
from typing import Any, List, Tuple

from ..errors import LocalProtocolError

__all__ = ["MAX_DEPTH", "MAX_VALUE_COST", "MAX_SAME_HASH_KEYS", "SCALAR_TYPES", "CONTAINER_TYPES", "check_value", "values_equal"]

#: The deepest nesting of containers a value may have, in both directions
#: (clause ENC-6).  ``[[[]]]`` has depth 3; a scalar has depth 0.
MAX_DEPTH = 200

#: The most a value may cost (clause ENC-6): 1 per node, plus the length of
#: every str (code points) and bytes, plus 1 per 8 bits of every int
#: (``int.bit_length() // 8``), a shared object counted at every place it
#: appears.  It stops a memo "billion laughs": a few hundred bytes of BINGETs
#: can describe a value whose traversal, printing or hashing would never end.
MAX_VALUE_COST = 1 << 20

#: The most distinct keys of one dict, other than str and bytes, that may
#: have one hash (clause ENC-6).  The hashes of ints, floats and tuples of
#: them are the same in every process (``hash(k * (2**61 - 1)) == 0``), so a
#: payload can make all its keys collide, and each insertion then compares
#: the new key with every earlier one: 5000 such keys cost 0.8 s to decode.
#: With this bound an insertion compares with at most 64 keys.
MAX_SAME_HASH_KEYS = 64

SCALAR_TYPES = (type(None), bool, int, float, str, bytes)
CONTAINER_TYPES = (list, tuple, dict)
_HASHABLE_TYPES = (type(None), bool, int, float, str, bytes, tuple)


def check_value(value: Any) -> None:
    """Raise :class:`LocalProtocolError` unless ``value`` is in the MSG subset.

    Checks the types (VAL-1), that dict keys are hashable values of the
    subset (VAL-2), that the value is acyclic (VAL-3) and that it is no deeper
    than :data:`MAX_DEPTH` and costs at most :data:`MAX_VALUE_COST` (ENC-6).
    """
    # An explicit stack instead of recursion: a hostile caller must not be
    # able to turn a deep value into a RecursionError.
    on_path: set = set()
    stack: List[Tuple[Any, int, bool]] = [(value, 0, False)]
    total = 0
    while stack:
        item, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(item))
            continue
        kind = type(item)
        if kind is str or kind is bytes:
            total += 1 + len(item)
        elif kind is int:
            total += 1 + (item.bit_length() >> 3)
        else:
            total += 1
        if total > MAX_VALUE_COST:
            raise LocalProtocolError("ENC-6", f"the value costs more than {MAX_VALUE_COST} counted as a tree")
        if kind in SCALAR_TYPES:
            continue
        if kind not in CONTAINER_TYPES:
            raise LocalProtocolError(
                "VAL-1",
                f"a MSG value may not contain {kind.__module__}.{kind.__qualname__}; "
                "allowed are None, bool, int, float, str, bytes, list, tuple and dict",
            )
        if id(item) in on_path:
            raise LocalProtocolError("VAL-3", f"the value contains itself (a cycle through a {kind.__name__})")
        if depth >= MAX_DEPTH:
            raise LocalProtocolError("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers")
        on_path.add(id(item))
        stack.append((item, depth, True))
        if kind is dict:
            for key, child in item.items():
                if type(key) not in _HASHABLE_TYPES:
                    raise LocalProtocolError(
                        "VAL-2", f"a dict key must be None, bool, int, float, str, bytes or tuple, not {type(key).__name__}"
                    )
                stack.append((key, depth + 1, False))
                stack.append((child, depth + 1, False))
        else:
            for child in item:
                stack.append((child, depth + 1, False))


_DOUBLE = struct.Struct(">d")


def values_equal(a: Any, b: Any) -> bool:
    """Exact equality of two values of the subset (see the module docstring)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return _DOUBLE.pack(a) == _DOUBLE.pack(b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        if len(a) != len(b):
            return False
        # Order matters: it is on the wire, and dicts keep it.
        return all(
            values_equal(ka, kb) and values_equal(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items())
        )
    return bool(a == b)
