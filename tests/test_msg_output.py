"""The compute node's bounded MSG lines (SCN-3), against the vectors' JSON notation.

The oracle is :func:`skyllh_cluster.wire.vector_json.value_to_json`: a whole
line is exactly ``MSG `` and its compact JSON, and parses back to the value.
A cut line is checked node by node against the value: whatever it prints is
exact, and every node it leaves out is counted in exactly one cut node.
"""

from __future__ import annotations

import math
import re
import struct
import sys
from typing import Any, List

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skyllh_cluster.conformance.strategies import values
from skyllh_cluster.msg_output import (
    LEGACY_PREFIX,
    LINE_LIMIT,
    int_to_decimal,
    legacy_line,
    msg_line,
    tree_size,
)
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire.values import MAX_DEPTH, check_value, values_equal
from skyllh_cluster.wire.vector_json import unlimited_int_text, value_from_json
from msg_lines import check_cut_line, is_cut, parse, unlimited_str, whole_line

FRAME_INT = (1 << (65500 * 8)) - 12345  # about the largest int one frame carries: 157,740 digits


def short_id(value: Any) -> str:
    """A test id that neither str() of a big int nor a 60000-char str can blow up."""
    if type(value) is int and value.bit_length() > 64:
        return f"int-{value.bit_length()}-bits"
    text = ascii(value)
    return text if len(text) <= 40 else f"{type(value).__name__}-{len(text)}"


# -- whole lines, type by type ------------------------------------------------------------------
EVERY_TYPE = [
    None,
    True,
    False,
    0,
    -123,
    2**63,
    -(2**2039),
    10**5000,
    -(10**5000) + 1,
    FRAME_INT,
    1.5,
    -0.0,
    float("inf"),
    float("nan"),
    struct.unpack(">d", bytes.fromhex("7ff8000000000001"))[0],  # a NaN with a payload
    "",
    "hé",
    "\ud800",
    "\udfff\ud800x",
    "\U0001f600",
    "line\nbreak",
    b"",
    b"\x00\xff",
    [],
    (),
    {},
    [1, (2, 3)],
    (1,),
    {1: None, "k": [True, 1.0, 1], (1, b"x"): {}},
    {1: "int", 1.0: "float"},
]


@pytest.mark.parametrize("value", EVERY_TYPE + list(SCENARIO_PAYLOADS), ids=short_id)
def test_a_line_that_fits_is_the_vectors_json_byte_for_byte(value: Any) -> None:
    line = msg_line(value)
    assert line == whole_line(value)
    assert line.isascii()
    assert values_equal(value_from_json(parse(line)), value)


def test_the_exact_bytes_of_each_scalar() -> None:
    assert msg_line(None) == 'MSG {"type":"none"}'
    assert msg_line(True) == 'MSG {"type":"bool","value":true}'
    assert msg_line(-123) == 'MSG {"type":"int","value":"-123"}'
    assert msg_line(1.5) == 'MSG {"type":"float","bits":"3ff8000000000000"}'
    assert msg_line("h\xe9") == 'MSG {"type":"str","utf8":"68c3a9"}'
    assert msg_line("\ud800") == 'MSG {"type":"str","utf8":"eda080"}'
    assert msg_line(b"\x00\xff") == 'MSG {"type":"bytes","hex":"00ff"}'
    assert msg_line([(), {1: b""}]) == (
        'MSG {"type":"list","items":[{"type":"tuple","items":[]},'
        '{"type":"dict","items":[[{"type":"int","value":"1"},{"type":"bytes","hex":""}]]}]}'
    )


def test_every_scenario_payload_is_printed_whole() -> None:
    for payload in SCENARIO_PAYLOADS:
        line = msg_line(payload)
        assert '"type":"cut"' not in line and len(line) + 1 <= LINE_LIMIT // 8


@given(values())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_generated_values_round_trip_through_the_line(value: Any) -> None:
    line = msg_line(value)
    assert line == whole_line(value)
    assert values_equal(value_from_json(parse(line)), value)


# -- legacy lines ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [v for v in EVERY_TYPE if not (type(v) is int and abs(v) > 10**4000)], ids=short_id)
def test_the_legacy_line_is_str_of_the_value(value: Any) -> None:
    assert legacy_line(value) == LEGACY_PREFIX + str(value)


def test_the_legacy_line_writes_big_ints_that_str_refuses() -> None:
    if getattr(sys, "get_int_max_str_digits", lambda: 0)():
        with pytest.raises(ValueError):
            str(10**5000)
    assert legacy_line(10**5000) == LEGACY_PREFIX + "1" + "0" * 5000
    assert legacy_line([FRAME_INT]) == LEGACY_PREFIX + "[" + unlimited_str(FRAME_INT) + "]"


@given(values())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_generated_legacy_lines_are_str_of_the_value(value: Any) -> None:
    with unlimited_int_text():
        expected = LEGACY_PREFIX + str(value)
    assert legacy_line(value) == expected


# -- big ints, without the interpreter's limit --------------------------------------------------
@pytest.mark.parametrize(
    "value", [0, 1, -1, 2**2000, 2**2001 - 1, -(2**2001), 10**4300, 10**4301, 10**5000 - 1, -(10**5000), FRAME_INT],
    ids=short_id,
)
def test_int_to_decimal_is_exact(value: int) -> None:
    assert int_to_decimal(value) == unlimited_str(value)


def test_int_to_decimal_leaves_the_interpreters_limit_alone(monkeypatch) -> None:
    def refuse(limit: int) -> None:
        raise AssertionError("sys.set_int_max_str_digits was called")

    monkeypatch.setattr(sys, "set_int_max_str_digits", refuse, raising=False)
    assert int_to_decimal(10**5000) == "1" + "0" * 5000
    assert msg_line(-(10**5000)) == 'MSG {"type":"int","value":"-1' + "0" * 5000 + '"}'


@given(st.integers(-(2**9000), 2**9000))
@example(2**2000)
@example(-(2**2001) + 1)
def test_int_to_decimal_agrees_with_str(value: int) -> None:
    assert int_to_decimal(value) == unlimited_str(value)


def test_an_int_whose_digits_alone_overflow_the_line_is_one_cut_node() -> None:
    huge = -(1 << 4_000_000)  # 1.2 million digits: never converted
    assert msg_line(huge) == 'MSG {"type":"cut","omitted":1}'
    assert msg_line([1, huge, 2]) == (
        'MSG {"type":"list","items":[{"type":"int","value":"1"},{"type":"cut","omitted":2}]}'
    )
    assert legacy_line(huge) == LEGACY_PREFIX + "<cut: 1 omitted>"


# -- cut lines -----------------------------------------------------------------------------------
def million_shared_references() -> Any:
    """10**6 references to one 100-char str: a 4 KB frame, a 230 MB line in full."""
    inner = ("x" * 100,) * 1000
    return (inner,) * 1000


def test_a_million_shared_references_are_cut_to_one_mebibyte() -> None:
    value = million_shared_references()
    assert tree_size(value) == 1 + 1000 * (1 + 1000)
    line = msg_line(value)
    assert LINE_LIMIT - 200 < len(line) + 1 <= LINE_LIMIT
    check_cut_line(value, line, LINE_LIMIT, whole=False)
    node = parse(line)
    assert node["items"][-1]["type"] == "cut"  # the outer tuple's remaining items
    assert node["items"][-2]["items"][-1]["type"] == "cut"  # the inner tuple it was printing


def test_the_legacy_line_is_cut_too() -> None:
    value = million_shared_references()
    line = legacy_line(value)
    assert LINE_LIMIT - 200 < len(line) + 1 <= LINE_LIMIT
    assert line.startswith(LEGACY_PREFIX + "(('" + "x" * 100 + "', ")
    omitted = [int(n) for n in re.findall(r"<cut: (\d+) omitted>", line)]
    assert len(omitted) == 2 and omitted[0] < 1000 and omitted[1] > 980_000
    printed_strs = line.count("'" + "x" * 100 + "'")
    printed_tuples = line.count("(")
    assert printed_strs + printed_tuples + sum(omitted) == tree_size(value)


def test_sharing_is_measured_not_expanded() -> None:
    # 2**201 - 1 nodes as a tree, 201 objects as a graph: expanding it would never end.
    value: Any = "leaf"
    for _ in range(MAX_DEPTH):
        value = (value, value)
    assert tree_size(value) == 2 ** (MAX_DEPTH + 1) - 1
    line = msg_line(value)
    check_cut_line(value, line, LINE_LIMIT, whole=False)
    legacy = legacy_line(value)
    assert len(legacy) < LINE_LIMIT


def test_a_long_str_is_one_cut_node_and_its_siblings_stay() -> None:
    value = {"before": 1, "long": "é" * 300_000, "after": 2}
    line = msg_line(value)
    check_cut_line(value, line, LINE_LIMIT)
    items = parse(line)["items"]
    assert items[1][1] == {"type": "cut", "omitted": 1}
    assert len(items) == 3 or is_cut(items[2])


def test_dict_entries_are_cut_as_a_run() -> None:
    value = {index: "v" * 50 for index in range(100)}
    line = msg_line(value, limit=2000)
    check_cut_line(value, line, 2000)
    items = parse(line)["items"]
    assert is_cut(items[-1]) and items[-1]["omitted"] == 2 * (100 - (len(items) - 1))


@given(values(max_leaves=40), st.integers(40, 600))
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@example([1, (2, 3)], 40)
@example({(1, 2): [b"x" * 30]}, 60)
def test_any_value_cut_to_any_limit_is_exact_where_printed_and_counts_the_rest(value: Any, limit: int) -> None:
    line = msg_line(value, limit)
    if len(whole_line(value)) + 1 <= limit:
        assert line == whole_line(value)
    else:
        check_cut_line(value, line, limit)


@given(values(max_leaves=40), st.integers(45, 600))
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
def test_any_legacy_line_cut_to_any_limit_is_a_prefix_then_cut_nodes(value: Any, limit: int) -> None:
    with unlimited_int_text():
        whole = LEGACY_PREFIX + str(value)
    line = legacy_line(value, limit)
    assert len(line) + 1 <= limit
    if len(whole) + 1 <= limit:
        assert line == whole
        return
    cut_at = line.index("<cut: ")
    assert whole.startswith(line[:cut_at])
    omitted = [int(n) for n in re.findall(r"<cut: (\d+) omitted>", line)]
    assert 1 <= sum(omitted) <= tree_size(value)


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("render", [msg_line, legacy_line, tree_size])
def test_values_outside_the_subset_are_refused(render) -> None:
    with pytest.raises(TypeError, match="set is not a value of the MSG subset"):
        render([{1}])
    cycle: List[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="contains itself"):
        render(cycle)
    deep: Any = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper than"):
        render(deep)


def test_the_deepest_value_of_the_subset_is_rendered() -> None:
    deepest: Any = []
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    check_value(deepest)  # the subset's own bound
    assert msg_line(deepest) == whole_line(deepest)
    assert legacy_line(deepest) == LEGACY_PREFIX + "[" * MAX_DEPTH + "]" * MAX_DEPTH


def test_a_limit_without_room_for_a_value_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        msg_line(1, limit=20)
    assert msg_line(10**6, limit=len('MSG {"type":"cut","omitted":1}') + 1) == 'MSG {"type":"cut","omitted":1}'
    with pytest.raises(ValueError, match="no room"):
        legacy_line(1, limit=len(LEGACY_PREFIX) + 10)
    assert legacy_line("x" * 17, limit=len(LEGACY_PREFIX) + 17) == LEGACY_PREFIX + "<cut: 1 omitted>"


def test_the_lower_bound_of_digits_is_a_lower_bound() -> None:
    from skyllh_cluster.msg_output import _fewest_digits

    for bits in range(0, 20000, 7):
        for value in (1 << bits, (1 << bits) - 1, -(1 << bits)):
            assert _fewest_digits(value) <= len(unlimited_str(value))
    assert _fewest_digits(10**5000) >= math.floor(5000 * 0.999)
