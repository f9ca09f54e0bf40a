"""The lossless JSON form of commands and values used by the test vectors.

JSON has no bytes, no distinction between int and float, and no lone
surrogates, so every value is an object with a ``type``:

=========  ==========================================================
``none``   ``{"type": "none"}``
``bool``   ``{"type": "bool", "value": true}``
``int``    ``{"type": "int", "value": "-123"}`` (decimal string, any size)
``float``  ``{"type": "float", "bits": "3ff8000000000000"}`` (IEEE 754 binary64, big-endian hex)
``str``    ``{"type": "str", "utf8": "68c3a9"}`` (UTF-8 hex, surrogates as CESU-style ``surrogatepass``)
``bytes``  ``{"type": "bytes", "hex": "00ff"}``
``list``   ``{"type": "list", "items": [...]}``
``tuple``  ``{"type": "tuple", "items": [...]}``
``dict``   ``{"type": "dict", "items": [[key, value], ...]}`` (in order)
=========  ==========================================================

A command is ``{"class": "MSG", "state": [["msg", value], ...]}``, its
instance dict in order (empty for ACK and ShutdownCN): see
:func:`skyllh_cluster.codec.command_to_json`.  Sharing is not recorded: two
vectors that differ only in which parts are the same object have the same JSON.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from typing import Any, Dict, Iterator

__all__ = ["value_to_json", "value_from_json", "unlimited_int_text"]

_DOUBLE = struct.Struct(">d")


def value_to_json(value: Any) -> Dict[str, Any]:
    """The JSON form of a value of the subset (recursive: depth is at most MAX_DEPTH)."""
    kind = type(value)
    if value is None:
        return {"type": "none"}
    if kind is bool:
        return {"type": "bool", "value": value}
    if kind is int:
        return {"type": "int", "value": _int_text(value)}
    if kind is float:
        return {"type": "float", "bits": _DOUBLE.pack(value).hex()}
    if kind is str:
        return {"type": "str", "utf8": value.encode("utf-8", "surrogatepass").hex()}
    if kind is bytes:
        return {"type": "bytes", "hex": value.hex()}
    if kind is list or kind is tuple:
        return {"type": kind.__name__, "items": [value_to_json(item) for item in value]}
    if kind is dict:
        return {"type": "dict", "items": [[value_to_json(k), value_to_json(v)] for k, v in value.items()]}
    raise TypeError(f"{kind.__name__} is not a value of the subset")


@contextlib.contextmanager
def unlimited_int_text() -> Iterator[None]:
    """Lift Python's int/str digit limit for the block (our own vectors and values, not network text)."""
    # The limit is about denial of service on untrusted text; where there is none, do nothing.
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if limit:
        sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        if limit:
            sys.set_int_max_str_digits(limit)


def _int_text(value: int) -> str:
    with unlimited_int_text():
        return str(value)


def value_from_json(node: Dict[str, Any]) -> Any:
    """The value a JSON form describes."""
    kind = node["type"]
    if kind == "none":
        return None
    if kind == "bool":
        return bool(node["value"])
    if kind == "int":
        with unlimited_int_text():
            return int(node["value"])
    if kind == "float":
        return _DOUBLE.unpack(bytes.fromhex(node["bits"]))[0]
    if kind == "str":
        return bytes.fromhex(node["utf8"]).decode("utf-8", "surrogatepass")
    if kind == "bytes":
        return bytes.fromhex(node["hex"])
    if kind == "list":
        return [value_from_json(item) for item in node["items"]]
    if kind == "tuple":
        return tuple(value_from_json(item) for item in node["items"])
    if kind == "dict":
        return {value_from_json(k): value_from_json(v) for k, v in node["items"]}
    raise ValueError(f"unknown value type {kind!r}")
