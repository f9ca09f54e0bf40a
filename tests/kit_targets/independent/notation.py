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



def lift_int_digit_limit() -> None:
    """VAL-4: an int of any size is printed in full; a program calls this once at its start."""
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)


#: How each scalar type is written, and how it is read back (the README's value table).
_WRITE_SCALAR = {
    type(None): lambda v: {"type": "none"},
    bool: lambda v: {"type": "bool", "value": v},
    int: lambda v: {"type": "int", "value": str(v)},
    float: lambda v: {"type": "float", "bits": struct.pack(">d", v).hex()},
    str: lambda v: {"type": "str", "utf8": v.encode("utf-8", "surrogatepass").hex()},
    bytes: lambda v: {"type": "bytes", "hex": v.hex()},
}


def to_json(value: Any) -> Dict[str, Any]:
    """The notation of ``value``; recursion is bounded by ENC-6's depth limit."""
    kind = type(value)
    write = _WRITE_SCALAR.get(kind)
    if write is not None:
        return write(value)
    if kind is dict:
        return {"type": "dict", "items": [[to_json(k), to_json(v)] for k, v in value.items()]}
    if kind is list or kind is tuple:
        return {"type": kind.__name__, "items": list(map(to_json, value))}
    raise TypeError(f"not a value of the subset: {kind.__name__}")


_SCALARS = {
    "none": lambda j: None,
    "bool": lambda j: bool(j["value"]),
    "int": lambda j: int(j["value"]),
    "float": lambda j: struct.unpack(">d", bytes.fromhex(j["bits"]))[0],
    "str": lambda j: bytes.fromhex(j["utf8"]).decode("utf-8", "surrogatepass"),
    "bytes": lambda j: bytes.fromhex(j["hex"]),
}


class UnbuildableKey:
    """A dict key Python cannot hash (a list, or a tuple holding one), kept so an encoder can refuse it (VAL-2)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _key(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return UnbuildableKey(value)
    return value


def from_json(node: Dict[str, Any], enclosing: Tuple[Any, ...] = ()) -> Any:
    """The value the notation ``node`` stands for.

    ``{"type": "ref", "up": N}`` (used only by the vectors' sender refusals) is
    the container N levels above, which makes a cycle (VAL-3).
    """
    kind = node["type"]
    if kind in _SCALARS:
        return _SCALARS[kind](node)
    if kind == "ref":
        return enclosing[-1 - node["up"]]
    if kind == "list":
        items: List[Any] = []
        items.extend(from_json(item, enclosing + (items,)) for item in node["items"])
        return items
    if kind == "tuple":
        return tuple(from_json(item, enclosing) for item in node["items"])
    if kind == "dict":
        entries: Dict[Any, Any] = {}
        for k, v in node["items"]:
            entries[_key(from_json(k, enclosing + (entries,)))] = from_json(v, enclosing + (entries,))
        return entries
    raise ValueError(f"unknown notation type {kind!r}")


def msg_line(value: Any) -> str:
    """SCN-3: ``MSG <json>``, without the LF; cut to at most 2**20 bytes only when the whole would not fit.

    The text is written piece by piece against a byte budget, so that a small
    payload whose value is a huge tree (memo references) costs no more than
    the budget to print.
    """
    budget = LINE_LIMIT - len("MSG \n")
    try:
        return "MSG " + "".join(_Renderer(budget).whole(value))
    except _Overflow:
        return "MSG " + "".join(_Renderer(budget).cut(value))


class _Overflow(Exception):
    """The text would exceed the budget."""


_CUT_RESERVE = 48  #: room each cut level keeps for "," a cut node and "]}"


class _Renderer:
    """Writes the notation into ``pieces`` while it fits ``budget`` characters (all ASCII)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.pieces: List[str] = []
        self.sizes: Dict[int, int] = {}

    def put(self, text: str) -> None:
        self.used += len(text)
        if self.used > self.budget:
            raise _Overflow
        self.pieces.append(text)

    def whole(self, value: Any) -> List[str]:
        self.write(value)
        return self.pieces

    def write(self, value: Any) -> None:
        kind = type(value)
        if kind in (list, tuple):
            self.put(f'{{"type":"{kind.__name__}","items":[')
            for index, item in enumerate(value):
                self.put("," if index else "")
                self.write(item)
            self.put("]}")
        elif kind is dict:
            self.put('{"type":"dict","items":[')
            for index, (key, item) in enumerate(value.items()):
                self.put(",[" if index else "[")
                self.write(key)
                self.put(",")
                self.write(item)
                self.put("]")
            self.put("]}")
        else:
            self.put(_dump(to_json(value)))

    def cut(self, value: Any) -> List[str]:
        """The value with its tail replaced by cut nodes where the whole does not fit."""
        self.write_cut(value)
        return self.pieces

    def force(self, text: str) -> None:
        """Write text that a reservation has already made room for."""
        self.used += len(text)
        self.pieces.append(text)

    def rollback_to(self, mark: Tuple[int, int]) -> None:
        del self.pieces[mark[0] :]
        self.used = mark[1]

    def write_cut(self, value: Any) -> None:
        """A container's items while they fit; then a cut inside the first that does not, and one for the rest.
        Each level reserves room for its own closing brackets and one cut node."""
        kind = type(value)
        if kind not in (list, tuple, dict):
            return self.force(_cut_node(1))
        is_dict = kind is dict
        entries = list(value.items()) if is_dict else list(value)
        self.put(f'{{"type":"{kind.__name__}","items":[')
        self.budget -= _CUT_RESERVE
        for index, entry in enumerate(entries):
            mark = (len(self.pieces), self.used)
            try:
                self.put("," if index else "")
                self.write_entry(entry, is_dict)
            except _Overflow:
                self.rollback_to(mark)
                self.finish_cut(entries[index:], is_dict, "," if index else "")
                break
        self.budget += _CUT_RESERVE
        self.force("]}")

    def write_entry(self, entry: Any, is_pair: bool) -> None:
        if not is_pair:
            return self.write(entry)
        self.put("[")
        self.write(entry[0])
        self.put(",")
        self.write(entry[1])
        self.put("]")

    def finish_cut(self, rest: List[Any], is_pair: bool, separator: str) -> None:
        """Cut inside the first entry that did not fit, if it is a container; one cut node for the rest."""
        head = rest[0]
        if not is_pair and type(head) in (list, tuple, dict):
            mark = (len(self.pieces), self.used)
            try:
                self.put(separator)
                self.write_cut(head)
                rest, separator = rest[1:], ","
            except _Overflow:
                self.rollback_to(mark)
        if rest:
            omitted = sum(self.nodes(part) for entry in rest for part in (entry if is_pair else (entry,)))
            self.force(separator + _cut_node(omitted))

    def nodes(self, value: Any) -> int:
        """Tree size (a shared object counted at every place), cached by identity."""
        kind = type(value)
        if kind not in (list, tuple, dict):
            return 1
        cached = self.sizes.get(id(value))
        if cached is None:
            parts = [p for pair in value.items() for p in pair] if kind is dict else value
            cached = self.sizes[id(value)] = 1 + sum(self.nodes(p) for p in parts)
        return cached


def _cut_node(omitted: int) -> str:
    return f'{{"type":"cut","omitted":{omitted}}}'


def _dump(node: Any) -> str:
    return json.dumps(node, separators=(",", ":"), ensure_ascii=True)
