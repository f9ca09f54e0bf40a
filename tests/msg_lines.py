"""Checks of the compute node's MSG lines against the value that was sent.

Shared by the renderer's tests and the compute node's attack tests.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, List

from skyllh_cluster.msg_output import MSG_PREFIX, tree_size
from skyllh_cluster.wire.vector_json import unlimited_int_text, value_to_json


def whole_line(value: Any) -> str:
    return MSG_PREFIX + json.dumps(value_to_json(value), separators=(",", ":"))


def parse(line: str) -> Any:
    assert line.startswith(MSG_PREFIX) and "\n" not in line
    return json.loads(line[len(MSG_PREFIX) :])


def unlimited_str(value: int) -> str:
    with unlimited_int_text():
        return str(value)


def is_cut(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "cut"


def check_rendering(value: Any, node: Any) -> int:
    """Check ``node`` against ``value``; return how many value nodes it prints."""
    if is_cut(node):
        assert set(node) == {"type", "omitted"} and type(node["omitted"]) is int
        assert node["omitted"] == tree_size(value) >= 1
        return 0
    kind = type(value)
    if kind not in (list, tuple, dict):
        assert node == value_to_json(value)
        return 1
    assert set(node) == {"type", "items"} and node["type"] == kind.__name__
    items: List[Any] = list(value.items()) if kind is dict else list(value)
    printed = 1
    for index, entry in enumerate(node["items"]):
        if is_cut(entry):  # the rest of the container's items, and only as its last
            assert index == len(node["items"]) - 1
            rest = items[index:]
            assert rest, "a cut node that stands for no item"
            if kind is dict:
                assert entry["omitted"] == sum(tree_size(k) + tree_size(v) for k, v in rest)
            else:
                assert entry["omitted"] == sum(tree_size(item) for item in rest)
            return printed
        if kind is dict:
            assert isinstance(entry, list) and len(entry) == 2
            printed += check_rendering(items[index][0], entry[0]) + check_rendering(items[index][1], entry[1])
        else:
            printed += check_rendering(items[index], entry)
    assert len(node["items"]) == len(items)
    return printed


def omitted_counts(node: Any) -> Iterator[int]:
    if isinstance(node, dict):
        if node.get("type") == "cut":
            yield node["omitted"]
        for child in node.values():
            yield from omitted_counts(child)
    elif isinstance(node, list):
        for child in node:
            yield from omitted_counts(child)


def check_cut_line(value: Any, line: str, limit: int, whole: bool = True) -> None:
    assert len(line) + 1 <= limit and line.isascii()
    node = parse(line)
    printed = check_rendering(value, node)
    assert printed + sum(omitted_counts(node)) == tree_size(value)
    # Whatever precedes the first cut node is printed as the whole line prints it.
    cut_at = line.find('{"type":"cut"')
    if cut_at >= 0 and whole:  # (only for values whose whole line can be built)
        assert whole_line(value).startswith(line[:cut_at])
