"""The vectors' lossless JSON value notation (spec/vectors/README.md), for SCN-3 lines.

``to_json`` turns a decoded MSG value into the notation; ``from_json`` turns
the notation back into a value (for reading the vectors).  ``msg_line`` is
the line a compute node under test prints for each MSG (SCN-3): ``MSG `` and
the JSON on one line, cut only when the whole line would exceed 2**20 bytes.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any, Dict, List, Tuple

LINE_LIMIT = 2**20  #: SCN-3: a whole line longer than this may be cut

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)  # VAL-4: an int of any size is printed in full


def to_json(value: Any) -> Dict[str, Any]:
    """The notation of ``value``; recursion is bounded by ENC-6's depth limit."""
    kind = type(value)
    if value is None:
        return {"type": "none"}
    if kind is bool:
        return {"type": "bool", "value": value}
    if kind is int:
        return {"type": "int", "value": str(value)}
    if kind is float:
        return {"type": "float", "bits": struct.pack(">d", value).hex()}
    if kind is str:
        return {"type": "str", "utf8": value.encode("utf-8", "surrogatepass").hex()}
    if kind is bytes:
        return {"type": "bytes", "hex": value.hex()}
    if kind in (list, tuple):
        return {"type": kind.__name__, "items": [to_json(item) for item in value]}
    if kind is dict:
        return {"type": "dict", "items": [[to_json(k), to_json(v)] for k, v in value.items()]}
    raise TypeError(f"not a value of the subset: {kind.__name__}")


_SCALARS = {
    "none": lambda j: None,
    "bool": lambda j: bool(j["value"]),
    "int": lambda j: int(j["value"]),
    "float": lambda j: struct.unpack(">d", bytes.fromhex(j["bits"]))[0],
    "str": lambda j: bytes.fromhex(j["utf8"]).decode("utf-8", "surrogatepass"),
    "bytes": lambda j: bytes.fromhex(j["hex"]),
}


def from_json(node: Dict[str, Any]) -> Any:
    """The value the notation ``node`` stands for."""
    kind = node["type"]
    if kind in _SCALARS:
        return _SCALARS[kind](node)
    if kind == "list":
        return [from_json(item) for item in node["items"]]
    if kind == "tuple":
        return tuple(from_json(item) for item in node["items"])
    if kind == "dict":
        return {from_json(k): from_json(v) for k, v in node["items"]}
    raise ValueError(f"unknown notation type {kind!r}")


def msg_line(value: Any) -> str:
    """SCN-3: ``MSG <json>``, without the LF; cut to at most 2**20 bytes only when needed."""
    text = _dump(to_json(value))
    if len(text) + 5 <= LINE_LIMIT:
        return "MSG " + text
    return "MSG " + _dump(_cut(value, LINE_LIMIT - 5))


def _dump(node: Any) -> str:
    return json.dumps(node, separators=(",", ":"), ensure_ascii=True)


def _nodes(value: Any) -> int:
    """Tree size: a scalar is 1, a container 1 + its items (a dict entry is its key and value)."""
    if type(value) in (list, tuple):
        return 1 + sum(_nodes(v) for v in value)
    if type(value) is dict:
        return 1 + sum(_nodes(k) + _nodes(v) for k, v in value.items())
    return 1


def _cut(value: Any, budget: int) -> Dict[str, Any]:
    """The notation of ``value`` within ``budget`` bytes: a container keeps the items that fit
    and ends with one cut node for the rest; a scalar that does not fit is itself cut."""
    whole = to_json(value)
    if len(_dump(whole)) <= budget:
        return whole
    if type(value) not in (list, tuple, dict):
        return {"type": "cut", "omitted": 1}
    pairs: List[Tuple[Any, ...]] = list(value.items()) if type(value) is dict else [(v,) for v in value]
    kept: List[Any] = []
    room = budget - 80  # the container's own braces and the closing cut node
    for index, pair in enumerate(pairs):
        rendered = [to_json(part) for part in pair]
        size = len(_dump(rendered if len(pair) == 2 else rendered[0])) + 1
        if size > room:
            omitted = sum(_nodes(part) for rest in pairs[index:] for part in rest)
            kept.append({"type": "cut", "omitted": omitted})
            break
        kept.append(rendered if len(pair) == 2 else rendered[0])
        room -= size
    return {"type": type(value).__name__, "items": kept}
