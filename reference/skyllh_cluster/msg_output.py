"""The line a compute node prints for each MSG value (clause SCN-3), bounded.

:func:`msg_line` writes ``MSG <json>``: the value in the vectors' lossless
JSON notation (:mod:`skyllh_cluster.wire.vector_json`), which tells bytes
from str, int from float and bool, and tuple from list, keeps float bits and
carries every code point.  The line is ASCII, so any stdout encoding carries
it.  :func:`legacy_line` writes the original's ``Received general message:
{msg}``, Python's ``str()`` of the value.

A value of a dozen kilobytes can expand to millions of nodes through shared
references, and an int can have more digits than CPython converts by default.
So both lines are bounded: a line (with its line feed) that would be longer
than ``limit`` (:data:`LINE_LIMIT` by default: 2**20 bytes for the JSON line,
characters for the legacy one) is cut.  A cut line shows the value from its
start, in order, as far as it fits, and puts a *cut node* where the
expansion it leaves out starts:

* JSON: ``{"type":"cut","omitted":N}``; legacy: ``<cut: N omitted>``.
* ``N >= 1`` counts the value nodes left out, as a tree: a shared object
  counts at every place it appears, a scalar is 1 node, a container 1 plus
  its items' nodes, a dict entry its key's plus its value's.
* A cut node stands for one whole value (the MSG value itself, a dict key or
  a dict value) or, inside a container's ``items``, for that container's
  remaining items (one or more; in a dict, remaining entries) up to its end.
  A container has at most one cut node among its items, always its last.
* Every node of the value is either printed or counted in exactly one cut
  node.  A scalar that does not fit (an int of more than about a million
  digits, a long str) is cut as 1 node; ints are never converted with the
  interpreter's limited int-to-str, and the interpreter's limit is never
  changed.

Cost: one pass over the value as a graph, memoised by object identity (so
``10**6`` references to one object cost one visit each, and are never
expanded beyond what is printed), plus the printed text.  These functions do
no I/O; the compute node prints what they return.
"""

from __future__ import annotations

import decimal
import struct
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .wire.values import MAX_DEPTH

__all__ = ["LINE_LIMIT", "MSG_PREFIX", "LEGACY_PREFIX", "msg_line", "legacy_line", "tree_size", "int_to_decimal", "value_repr"]

#: The longest line (with its line feed) that either function returns: 1 MiB.
LINE_LIMIT = 1 << 20

#: What starts the SCN-3 line.
MSG_PREFIX = "MSG "

#: What starts the original's line.
LEGACY_PREFIX = "Received general message: "

_DOUBLE = struct.Struct(">d")
_CONTAINERS = (list, tuple, dict)
_SCALARS = (type(None), bool, int, float, str, bytes)

# Ints up to this many bits have at most 603 decimal digits, under the
# smallest int-to-str limit CPython can be set to (640), so str() is safe.
_STR_SAFE_BITS = 2000
# Below log10(2), so that the digit count it gives is a lower bound.
_LOG10_2_BELOW = 0.30102


def int_to_decimal(value: int) -> str:
    """The exact decimal text of ``value``, of any size.

    Unlike ``str(value)`` it does not stop at ``sys.get_int_max_str_digits()``
    (and does not change it); it splits the number in halves by bits and
    joins them with :mod:`decimal`'s exact, subquadratic arithmetic, so that
    the largest int a frame can carry (about 157,000 digits) takes
    milliseconds.
    """
    if value.bit_length() <= _STR_SAFE_BITS:
        return str(value)
    exact = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    exact.traps[decimal.Inexact] = True
    powers: Dict[int, decimal.Decimal] = {}

    def power_of_two(bits: int) -> decimal.Decimal:
        power = powers.get(bits)
        if power is None:
            if bits <= _STR_SAFE_BITS:
                power = decimal.Decimal(1 << bits)
            else:
                half = bits >> 1
                power = exact.multiply(power_of_two(half), power_of_two(bits - half))
            powers[bits] = power
        return power

    def convert(number: int, bits: int) -> decimal.Decimal:
        if bits <= _STR_SAFE_BITS:
            return decimal.Decimal(number)  # exact, and never through str()
        low_bits = bits >> 1
        high = number >> low_bits
        low = number - (high << low_bits)
        return exact.add(exact.multiply(convert(high, bits - low_bits), power_of_two(low_bits)), convert(low, low_bits))

    magnitude = -value if value < 0 else value
    digits = str(convert(magnitude, magnitude.bit_length()))  # exponent 0: plain digits
    return "-" + digits if value < 0 else digits


def _fewest_digits(value: int) -> int:
    """A lower bound of ``len(int_to_decimal(value))``, found without converting."""
    bits = value.bit_length()
    return (value < 0) + (int((bits - 1) * _LOG10_2_BELOW) + 1 if bits else 1)


class _Notation:
    """How one notation writes scalars, containers and cut nodes."""

    sep: str
    entry_open: str
    entry_sep: str
    entry_close: str
    #: What opens a list, a tuple and a dict.
    heads: Dict[type, str]

    def scalar(self, value: Any, cap: int) -> Optional[str]:
        """The text of a scalar, or None when it is surely longer than ``cap``."""
        raise NotImplementedError  # pragma: no cover - each notation defines it

    def head(self, kind: type) -> str:
        return self.heads[kind]

    def tail(self, kind: type, items: int) -> str:
        raise NotImplementedError  # pragma: no cover - each notation defines it

    def cut(self, omitted: int) -> str:
        raise NotImplementedError  # pragma: no cover - each notation defines it


class _VectorJson(_Notation):
    """The lossless JSON of spec/vectors, compact, members in value_to_json's order."""

    sep = ","
    entry_open = "["
    entry_sep = ","
    entry_close = "]"

    heads = {list: '{"type":"list","items":[', tuple: '{"type":"tuple","items":[', dict: '{"type":"dict","items":['}

    def scalar(self, value: Any, cap: int) -> Optional[str]:
        kind = type(value)
        if value is None:
            return '{"type":"none"}'
        if kind is bool:
            return '{"type":"bool","value":true}' if value else '{"type":"bool","value":false}'
        if kind is int:
            if _fewest_digits(value) > cap:
                return None
            return '{"type":"int","value":"' + int_to_decimal(value) + '"}'
        if kind is float:
            return '{"type":"float","bits":"' + _DOUBLE.pack(value).hex() + '"}'
        if kind is str:
            if 2 * len(value) > cap:  # at least one UTF-8 byte, two hex digits, per code point
                return None
            return '{"type":"str","utf8":"' + value.encode("utf-8", "surrogatepass").hex() + '"}'
        if 2 * len(value) > cap:
            return None
        return '{"type":"bytes","hex":"' + value.hex() + '"}'

    def tail(self, kind: type, items: int) -> str:
        return "]}"

    def cut(self, omitted: int) -> str:
        return '{"type":"cut","omitted":' + int_to_decimal(omitted) + "}"


class _PythonStr(_Notation):
    """Python's str() of a value, as the original prints it."""

    sep = ", "
    entry_open = ""
    entry_sep = ": "
    entry_close = ""

    heads = {list: "[", tuple: "(", dict: "{"}

    def scalar(self, value: Any, cap: int) -> Optional[str]:
        kind = type(value)
        if kind is int:
            return None if _fewest_digits(value) > cap else int_to_decimal(value)
        if (kind is str or kind is bytes) and len(value) > cap:  # repr adds at least quotes
            return None
        return repr(value)

    def tail(self, kind: type, items: int) -> str:
        if kind is tuple:
            return ",)" if items == 1 else ")"
        return "]" if kind is list else "}"

    def cut(self, omitted: int) -> str:
        return "<cut: " + int_to_decimal(omitted) + " omitted>"


_JSON = _VectorJson()
_PYTHON = _PythonStr()


class _Measure(NamedTuple):
    nodes: int  # counted as a tree
    length: int  # of the full text, or the cap when longer
    text: Optional[str]  # a scalar's full text (None for containers and scalars too long)


def _measure_all(value: Any, notation: _Notation, cap: int) -> Dict[int, _Measure]:
    """Measure every object of ``value`` once, by identity.

    Raises:
        TypeError: the value holds a type outside the MSG subset.
        ValueError: it is nested deeper than MAX_DEPTH, or contains itself.
    """
    measures: Dict[int, _Measure] = {}
    open_containers: set = set()

    def visit(obj: Any, depth: int) -> _Measure:
        known = measures.get(id(obj))
        if known is not None:
            return known
        kind = type(obj)
        if kind in _SCALARS:
            text = notation.scalar(obj, cap)
            measure = _Measure(1, cap if text is None else min(len(text), cap), text)
        elif kind in _CONTAINERS:
            if depth >= MAX_DEPTH:
                raise ValueError(f"the value is nested deeper than {MAX_DEPTH} containers")
            if id(obj) in open_containers:
                raise ValueError(f"the value contains itself (a cycle through a {kind.__name__})")
            open_containers.add(id(obj))
            nodes = 1
            length = len(notation.head(kind)) + len(notation.tail(kind, len(obj))) + len(notation.sep) * max(len(obj) - 1, 0)
            if kind is dict:
                overhead = len(notation.entry_open) + len(notation.entry_sep) + len(notation.entry_close)
                for key, item in obj.items():
                    key_measure, item_measure = visit(key, depth + 1), visit(item, depth + 1)
                    nodes += key_measure.nodes + item_measure.nodes
                    length += overhead + key_measure.length + item_measure.length
            else:
                for item in obj:
                    item_measure = visit(item, depth + 1)
                    nodes += item_measure.nodes
                    length += item_measure.length
            open_containers.discard(id(obj))
            measure = _Measure(nodes, min(length, cap), None)
        else:
            raise TypeError(f"{kind.__name__} is not a value of the MSG subset")
        measures[id(obj)] = measure
        return measure

    visit(value, 0)
    return measures


class _Writer:
    """Writes a measured value in full, or cut to a budget of characters."""

    def __init__(self, measures: Dict[int, _Measure], notation: _Notation) -> None:
        self.measures = measures
        self.notation = notation
        self.parts: List[str] = []
        self.omitted = 0

    def cut(self, omitted: int) -> None:
        self.parts.append(self.notation.cut(omitted))
        self.omitted += omitted

    def full(self, obj: Any) -> None:
        measure = self.measures[id(obj)]
        if measure.text is not None:
            self.parts.append(measure.text)
            return
        notation, parts, kind = self.notation, self.parts, type(obj)
        parts.append(notation.head(kind))
        if kind is dict:
            for index, (key, item) in enumerate(obj.items()):
                if index:
                    parts.append(notation.sep)
                parts.append(notation.entry_open)
                self.full(key)
                parts.append(notation.entry_sep)
                self.full(item)
                parts.append(notation.entry_close)
        else:
            for index, item in enumerate(obj):
                if index:
                    parts.append(notation.sep)
                self.full(item)
        parts.append(notation.tail(kind, len(obj)))

    def _opens(self, obj: Any, room: int) -> bool:
        """Whether ``obj`` cut within ``room`` shows more than one cut node."""
        measure = self.measures[id(obj)]
        kind = type(obj)
        if kind not in _CONTAINERS or not obj:
            return False
        skeleton = len(self.notation.head(kind)) + len(self.notation.tail(kind, len(obj)))
        return room >= skeleton + len(self.notation.cut(measure.nodes - 1))

    def within(self, obj: Any, budget: int) -> None:
        """Write ``obj`` in at most ``budget`` characters, cutting what does not fit.

        The caller makes sure that ``budget`` holds the cut node of all of ``obj``.
        """
        measure = self.measures[id(obj)]
        if measure.length <= budget:
            self.full(obj)
            return
        if not self._opens(obj, budget):
            self.cut(measure.nodes)
            return
        notation, parts, kind = self.notation, self.parts, type(obj)
        head, tail = notation.head(kind), notation.tail(kind, len(obj))
        parts.append(head)
        # Invariant: ``room`` holds the separator and the cut node of every item not yet written.
        room = budget - len(head) - len(tail)
        rest = measure.nodes - 1
        for index, item in enumerate(obj.items() if kind is dict else obj):
            sep = notation.sep if index else ""
            nodes, length = self._item_size(item, kind)
            after = rest - nodes
            reserve = len(notation.sep) + len(notation.cut(after)) if after else 0
            if len(sep) + length + reserve <= room:
                parts.append(sep)
                self._item_full(item, kind)
                room -= len(sep) + length
                rest = after
                continue
            parts.append(sep)
            if not self._item_within(item, kind, room - len(sep) - reserve):
                self.cut(rest)
            elif after:
                parts.append(notation.sep)
                self.cut(after)
            break
        parts.append(tail)

    def _item_size(self, item: Any, kind: type) -> Tuple[int, int]:
        if kind is not dict:
            measure = self.measures[id(item)]
            return measure.nodes, measure.length
        key, value = (self.measures[id(part)] for part in item)
        notation = self.notation
        overhead = len(notation.entry_open) + len(notation.entry_sep) + len(notation.entry_close)
        return key.nodes + value.nodes, overhead + key.length + value.length

    def _item_full(self, item: Any, kind: type) -> None:
        if kind is not dict:
            self.full(item)
            return
        self.parts.append(self.notation.entry_open)
        self.full(item[0])
        self.parts.append(self.notation.entry_sep)
        self.full(item[1])
        self.parts.append(self.notation.entry_close)

    def _item_within(self, item: Any, kind: type, room: int) -> bool:
        """Write an item cut to ``room``, if that shows more than a cut node; say whether it did."""
        if kind is not dict:
            if not self._opens(item, room):
                return False
            self.within(item, room)
            return True
        # A dict entry is opened when its key fits whole: a key is what a reader looks for.
        notation = self.notation
        key, value = (self.measures[id(part)] for part in item)
        skeleton = len(notation.entry_open) + key.length + len(notation.entry_sep) + len(notation.entry_close)
        if room < skeleton + len(notation.cut(value.nodes)):
            return False
        self.parts.append(notation.entry_open)
        self.full(item[0])
        self.parts.append(notation.entry_sep)
        self.within(item[1], room - skeleton)
        self.parts.append(notation.entry_close)
        return True


class _Rendering(NamedTuple):
    text: str
    omitted: int


def _render(value: Any, notation: _Notation, budget: int) -> _Rendering:
    writer = _Writer(_measure_all(value, notation, budget + 1), notation)
    writer.within(value, budget)
    return _Rendering("".join(writer.parts), writer.omitted)


def _budget(prefix: str, notation: _Notation, limit: int) -> int:
    budget = limit - len(prefix) - 1  # the line feed
    if budget < len(notation.cut(1)):
        raise ValueError(f"a line limit of {limit} leaves no room for a value")
    return budget


def msg_line(value: Any, limit: int = LINE_LIMIT) -> str:
    """The SCN-3 line for one MSG value: ``MSG <json>``, without the line feed.

    The line and its line feed are at most ``limit`` bytes, all ASCII; the
    JSON is whole when that fits, else cut as the module docstring says.

    Raises:
        TypeError: the value holds a type outside the MSG subset.
        ValueError: it is nested deeper than MAX_DEPTH or contains itself, or
            ``limit`` leaves no room for a value.
    """
    return MSG_PREFIX + _render(value, _JSON, _budget(MSG_PREFIX, _JSON, limit)).text


def legacy_line(value: Any, limit: int = LINE_LIMIT) -> str:
    """The original's line ``Received general message: {value}``, without the line feed.

    ``str(value)`` as the original prints it, at most ``limit`` characters
    with the line feed; cut as the module docstring says when longer.  A big
    int is written in full rather than raising as ``str()`` would.  The text
    is not ASCII when the value holds other code points (a top-level str is
    printed as itself, lone surrogates included): the printer chooses how to
    encode it.
    """
    budget = _budget(LEGACY_PREFIX, _PYTHON, limit)
    if type(value) is str:  # str() of a str is the str itself, not its repr
        return LEGACY_PREFIX + (value if len(value) <= budget else _PYTHON.cut(1))
    return LEGACY_PREFIX + _render(value, _PYTHON, budget).text


def value_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for a value of the MSG subset, at most ``limit`` characters, cut as above when longer.

    Safe on any value a peer can send: a big int is written without
    ``str()``'s digit limit, and shared references are not expanded beyond
    the limit, so the cost is bounded by ``limit`` and the value's size.

    Raises:
        TypeError, ValueError: as :func:`msg_line`.
    """
    return _render(value, _PYTHON, limit).text


def tree_size(value: Any) -> int:
    """The number of nodes of ``value`` counted as a tree, in time linear in its graph."""
    return _measure_all(value, _JSON, 0)[id(value)].nodes

