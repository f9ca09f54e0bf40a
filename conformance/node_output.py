"""Reading what a compute node under test prints for each MSG (SCN-3, CN-11).

A compute node under test prints one line per MSG it accepts, in arrival
order (spec/protocol.md, SCN-3)::

    MSG {"type":"int","value":"-123"}

The JSON is the vectors' lossless value notation
(:mod:`skyllh_cluster.wire.vector_json`), with one addition: a line that
would be longer than :data:`LINE_LIMIT` bytes may replace subtrees by
``{"type":"cut","omitted":N}``.  :func:`judge_output` compares those lines with
the values the kit sent, exactly (:func:`~skyllh_cluster.wire.values.values_equal`):
type, int vs float vs bool, tuple vs list, float bits, code points, order,
each value once.

The original (skyllh 24.1.0) prints ``Received general message: {str(value)}``
instead (a deviation, spec/deviations.md).  Those lines are judged as far as
``str()`` allows: a value whose ``str()`` holds a line break is not judged and
makes the verdict inconclusive, never a pass.

Everything here reads untrusted text: evidence quotes at most a short excerpt.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from skyllh_cluster.wire.values import values_equal
from skyllh_cluster.wire.vector_json import unlimited_int_text, value_from_json, value_to_json

__all__ = [
    "LINE_LIMIT", "MSG_PREFIX", "LEGACY_PREFIX", "OutputVerdict", "judge_output", "printed_lines", "full_line_size",
    "output_form", "any_value_line", "printed_tail", "mixed_forms",
]

#: The longest line a node prints whole; only a longer one may be cut (SCN-3).
LINE_LIMIT = 1 << 20
MSG_PREFIX = b"MSG "
LEGACY_PREFIX = b"Received general message: "
#: How much untrusted text one evidence line quotes.
EXCERPT = 60

_TYPE_NAMES = {type(None): "none", bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes",
               list: "list", tuple: "tuple", dict: "dict"}
_DOUBLE = struct.Struct(">d")


@dataclass
class OutputVerdict:
    """What the node's printed lines say about the values the kit sent.

    Exactly one of ``failure`` (evidence, with the clause broken) and
    ``inconclusive`` (why the kit cannot tell) is set unless every value was
    printed exactly (``judged`` is then the number of values).
    """

    judged: int = 0
    form: str = "none"  # "json", "legacy" or "none": which lines the node printed
    failure: Optional[Tuple[str, str]] = None  # (clause, evidence)
    inconclusive: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.inconclusive is None


def _excerpt(data: bytes) -> str:
    text = data[:EXCERPT].decode("ascii", "backslashreplace")
    return text + ("..." if len(data) > EXCERPT else "")


def printed_lines(stdout: bytes, prefix: bytes = MSG_PREFIX) -> List[bytes]:
    """The lines of ``stdout`` that start with ``prefix``, without the prefix and the LF.

    A last line without its LF is kept too (the node may have been killed
    while writing it); :func:`judge_output` says so.
    """
    lines = stdout.split(b"\n")
    return [line[len(prefix):] for line in lines if line.startswith(prefix)]


def any_value_line(stdout: bytes) -> bool:
    """Whether ``stdout`` holds a line for any MSG value, in the SCN-3 or the original's form."""
    return bool(printed_lines(stdout)) or bool(printed_lines(stdout, LEGACY_PREFIX))


def printed_tail(stdout: bytes) -> str:
    """The first MSG value line in ``stdout`` (either form), as a short excerpt for evidence."""
    lines = printed_lines(stdout) or printed_lines(stdout, LEGACY_PREFIX)
    return _excerpt(lines[0]) if lines else "nothing"


def output_form(stdout: bytes) -> str:
    """How a node prints MSG values, from what it printed for some: "json", "legacy" or "none"."""
    if printed_lines(stdout):
        return "json"
    if printed_lines(stdout, LEGACY_PREFIX):
        return "legacy"
    return "none"


def mixed_forms(sent: int, stdout: bytes) -> Optional[str]:
    """Evidence that a node printed the original's line instead of a `MSG <json>` line for some of ``sent`` MSGs.

    SCN-3 wants one `MSG <json>` line per MSG; a node that prints that line
    for some values and only the legacy line for others (fewer MSG lines than
    MSGs, and legacy lines beside them) breaks the line form, not only CN-11.
    ``None`` for a node that prints one form throughout (or both for every value).
    """
    json_lines = len(printed_lines(stdout))
    legacy_lines = len(printed_lines(stdout, LEGACY_PREFIX))
    if not json_lines or not legacy_lines or json_lines >= sent:
        return None
    return (f"expected a `MSG <json>` line for each of the {sent} MSGs sent, got {json_lines} of them and "
            f"{legacy_lines} `Received general message:` lines: some values printed only in the original's form")


# -- sizes of the full rendering -------------------------------------------------------
def _scalar_size(value: Any) -> int:
    return len(json.dumps(value_to_json(value), separators=(",", ":")))


def full_line_size(value: Any) -> int:
    """Bytes of the compact, uncut ``MSG <json>\\n`` line for ``value`` (shared objects expanded)."""
    memo: Dict[int, int] = {}

    def size(item: Any) -> int:
        kind = type(item)
        if kind in (list, tuple, dict, str, bytes, int) and id(item) in memo:
            return memo[id(item)]
        if kind is list or kind is tuple:
            parts = [size(x) for x in item]
            total = len('{"type":"list","items":[]}') + (kind is tuple) + sum(parts) + max(0, len(parts) - 1)
        elif kind is dict:
            parts = [size(k) + size(v) + 3 for k, v in item.items()]  # [k,v]
            total = len('{"type":"dict","items":[]}') + sum(parts) + max(0, len(parts) - 1)
        else:
            total = _scalar_size(item)
        if kind in (list, tuple, dict, str, bytes, int):
            memo[id(item)] = total
        return total

    return len(MSG_PREFIX) + size(value) + 1


def tree_nodes(value: Any, memo: Optional[Dict[int, int]] = None) -> int:
    """Value nodes of ``value`` counted as a tree (a shared object at every place it appears)."""
    memo = {} if memo is None else memo
    kind = type(value)
    if kind not in (list, tuple, dict):
        return 1
    if id(value) in memo:
        return memo[id(value)]
    if kind is dict:
        total = 1 + sum(tree_nodes(k, memo) + tree_nodes(v, memo) for k, v in value.items())
    else:
        total = 1 + sum(tree_nodes(x, memo) for x in value)
    memo[id(value)] = total
    return total


# -- comparing one printed JSON value with the value sent ---------------------------------
class _Mismatch(Exception):
    def __init__(self, clause: str, evidence: str) -> None:
        super().__init__(evidence)
        self.clause = clause
        self.evidence = evidence


def _is_cut(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "cut"


class _Matcher:
    """Walks the printed JSON against the value sent; the walk is bounded by the printed text."""

    def __init__(self, may_cut: bool) -> None:
        self.may_cut = may_cut
        self.memo: Dict[int, int] = {}
        self.cuts = 0

    def cut(self, node: Any, omitted: int, path: str) -> None:
        if not self.may_cut:
            raise _Mismatch("SCN-3", f"a cut node at {path}, in a line that fits in {LINE_LIMIT} bytes")
        self.cuts += 1
        claimed = node.get("omitted")
        if type(claimed) is not int or claimed != omitted:
            raise _Mismatch("SCN-3", f"a cut node at {path} saying {str(claimed)[:20]} nodes omitted, not {omitted}")

    def match(self, value: Any, node: Any, path: str) -> None:
        if _is_cut(node):
            self.cut(node, tree_nodes(value, self.memo), path)
            return
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise _Mismatch("SCN-3", f"not a value node at {path}")
        want = _TYPE_NAMES.get(type(value), "?")
        got = node["type"]
        if got != want:
            raise _Mismatch("CN-11", f"a {got[:20]} at {path} where the kit sent a {want}")
        if want in ("list", "tuple"):
            self.items(list(value), node.get("items"), path, pairs=False)
        elif want == "dict":
            self.items(list(value.items()), node.get("items"), path, pairs=True)
        else:
            try:
                printed = value_from_json(node)
            except (KeyError, ValueError, TypeError, UnicodeDecodeError, struct.error) as exc:
                raise _Mismatch("SCN-3", f"a malformed {want} node at {path}: {type(exc).__name__}") from None
            if not values_equal(printed, value):
                raise _Mismatch("CN-11", f"a different {want} at {path}: {_describe(printed)} where the kit sent {_describe(value)}")

    def items(self, expected: List[Any], printed: Any, path: str, *, pairs: bool) -> None:
        if not isinstance(printed, list):
            raise _Mismatch("SCN-3", f"no items array at {path}")
        for i, node in enumerate(printed):
            if i >= len(expected):
                raise _Mismatch("CN-11", f"{len(printed)} items at {path} where the kit sent {len(expected)}")
            if _is_cut(node) and i == len(printed) - 1:
                # A cut as the last item stands for this item and all after it.
                rest = expected[i:]
                if pairs:
                    omitted = sum(tree_nodes(k, self.memo) + tree_nodes(v, self.memo) for k, v in rest)
                else:
                    omitted = sum(tree_nodes(x, self.memo) for x in rest)
                self.cut(node, omitted, f"{path}[{i}:]")
                return
            if pairs:
                if not isinstance(node, list) or len(node) != 2:
                    raise _Mismatch("SCN-3", f"a dict entry at {path}[{i}] that is not a [key, value] pair")
                self.match(expected[i][0], node[0], f"{path}[{i}].key")
                self.match(expected[i][1], node[1], f"{path}[{i}].value")
            else:
                self.match(expected[i], node, f"{path}[{i}]")
        if len(printed) != len(expected):
            raise _Mismatch("CN-11", f"{len(printed)} items at {path} where the kit sent {len(expected)}")


def _describe(value: Any) -> str:
    kind = type(value)
    if kind is int and abs(value) > 10**30:
        return f"an int of {value.bit_length()} bits"
    if kind is float:
        return f"{value!r} (bits {_DOUBLE.pack(value).hex()})"
    if kind in (str, bytes) and len(value) > 30:
        return f"a {kind.__name__} of length {len(value)}"
    text = repr(value)
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "..."


def _judge_json_line(index: int, line: bytes, value: Any) -> Optional[Tuple[str, str]]:
    """Evidence (clause, text) if ``line`` is not value ``index`` printed exactly."""
    where = f"MSG line {index + 1}"
    if len(line) + len(MSG_PREFIX) + 1 > LINE_LIMIT:
        return "SCN-3", f"{where} is {len(line) + len(MSG_PREFIX) + 1} bytes, over the {LINE_LIMIT}-byte limit"
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return "SCN-3", f"{where} is not ASCII: {_excerpt(line)}"
    try:
        node = json.loads(text.rstrip("\r"))
    except (ValueError, RecursionError) as exc:
        return "SCN-3", f"{where} is not JSON ({type(exc).__name__}): {_excerpt(line)}"
    matcher = _Matcher(may_cut=full_line_size(value) > LINE_LIMIT)
    try:
        matcher.match(value, node, "the value")
    except _Mismatch as mismatch:
        return mismatch.clause, f"{where} (value {index + 1} sent) shows {mismatch.evidence}"
    except RecursionError:
        return "SCN-3", f"{where} nests too deep to compare"
    return None


def _str_unbounded(value: Any) -> str:
    with unlimited_int_text():
        return str(value)


def _judge_legacy(expected: Sequence[Any], stdout: bytes) -> OutputVerdict:
    verdict = OutputVerdict(form="legacy")
    text = stdout.decode("utf-8", "surrogateescape")
    prefix = LEGACY_PREFIX.decode()
    pos = 0
    unjudged = 0
    for i, value in enumerate(expected):
        start = text.find(prefix, pos)
        if start < 0 or (start > 0 and text[start - 1] != "\n"):
            verdict.failure = ("CN-11", f"expected a line for value {i + 1} of {len(expected)} "
                                        f"({_describe(value)}), got no more `Received general message:` lines")
            return verdict
        want = _str_unbounded(value)
        body_start = start + len(prefix)
        if "\n" in want or "\r" in want:
            # str() of this value spans lines: it cannot be judged line-wise.
            unjudged += 1
            if text.startswith(want + "\n", body_start):
                pos = body_start + len(want) + 1
                continue
            verdict.inconclusive = (f"value {i + 1} prints over several lines in the legacy form; "
                                    "the kit cannot judge it or the values after it")
            verdict.judged = i
            return verdict
        end = text.find("\n", body_start)
        got = text[body_start:] if end < 0 else text[body_start:end]
        if "<cut: " in got and len(want) + len(prefix) + 1 > LINE_LIMIT:
            # A cut legacy line (the reference's --output legacy): not judged.
            unjudged += 1
            pos = body_start + len(got) + 1
            continue
        if got.rstrip("\r") != want:
            verdict.failure = ("CN-11", f"legacy line {i + 1} shows {_excerpt(got.encode('utf-8', 'backslashreplace'))} "
                                        f"where the kit sent {_describe(value)} (str: "
                                        f"{_excerpt(want.encode('utf-8', 'backslashreplace'))})")
            return verdict
        pos = body_start + len(got) + 1
    if text.find(prefix, pos) >= 0:
        verdict.failure = ("CN-11", f"a `Received general message:` line after the {len(expected)} values the kit sent")
        return verdict
    verdict.judged = len(expected) - unjudged
    if unjudged:
        verdict.inconclusive = f"{unjudged} values print over several lines in the legacy form and were not judged"
    return verdict


def judge_output(expected: Sequence[Any], stdout: bytes) -> OutputVerdict:
    """Judge a node's standard output against the values of the MSGs it was sent, in order.

    SCN-3 lines are judged when the node printed any; otherwise the
    original's legacy lines; a node that printed neither fails SCN-3 (when it
    was sent at least one MSG).
    """
    lines = printed_lines(stdout)
    if not lines:
        if not expected:
            return OutputVerdict(form="none")
        if LEGACY_PREFIX in stdout:
            return _judge_legacy(expected, stdout)
        return OutputVerdict(form="none", failure=(
            "SCN-3", f"expected a `MSG <json>` line for each of the {len(expected)} MSGs sent, got none on standard output"))
    verdict = OutputVerdict(form="json")
    if not stdout.endswith(b"\n") and stdout.rsplit(b"\n", 1)[-1].startswith(MSG_PREFIX):
        verdict.failure = ("SCN-3", "the last MSG line has no LF")
        return verdict
    for i, value in enumerate(expected):
        if i >= len(lines):
            verdict.failure = ("CN-11", f"expected a MSG line for value {i + 1} of {len(expected)} "
                                        f"({_describe(value)}), got only {len(lines)} MSG lines")
            return verdict
        problem = _judge_json_line(i, lines[i], value)
        if problem is not None:
            verdict.failure = problem
            return verdict
    if len(lines) > len(expected):
        verdict.failure = ("CN-11", f"{len(lines)} MSG lines for the {len(expected)} MSGs sent "
                                    f"(line {len(expected) + 1}: {_excerpt(lines[len(expected)])})")
        return verdict
    verdict.judged = len(expected)
    return verdict
