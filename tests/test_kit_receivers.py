"""The kit's receiver checks and output reader, without a target: what they accept and what they refuse.

* :func:`judge_output` (SCN-3, CN-11): exact values pass; every kind of
  difference fails under the right clause; cut lines only where the spec
  allows them; the original's legacy lines are judged as far as ``str()``
  allows.
* The bad frames the kit sends are bad: each is refused by the normative
  grammar under the clause the kit files it under.
"""

from __future__ import annotations

import json
from typing import Any, List

import pytest

from skyllh_cluster.codec import loads_checked
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire.vector_json import value_to_json

from skyllh_cluster.conformance import payloads, refusals
from skyllh_cluster.conformance.node_output import LINE_LIMIT, full_line_size, judge_output, mixed_forms


def _lines(values: List[Any]) -> bytes:
    return b"".join(b"MSG " + json.dumps(value_to_json(v)).encode() + b"\n" for v in values)


def test_exact_values_pass_whatever_the_whitespace_and_member_order() -> None:
    out = b"starting\n" + _lines(SCENARIO_PAYLOADS) + b"done\n"
    assert judge_output(SCENARIO_PAYLOADS, out).ok
    reordered = b'MSG {"value" : "-7",   "type":"int"}\n'
    assert judge_output([-7], reordered).ok
    assert judge_output(["\ud800"], b'MSG {"type":"str","utf8":"EDA080"}\n').ok


@pytest.mark.parametrize(
    "sent, printed, clause",
    [
        (1, True, "CN-11"),
        (True, 1, "CN-11"),
        (1, 1.0, "CN-11"),
        ([1, 2], (1, 2), "CN-11"),
        (0.0, -0.0, "CN-11"),
        (b"ab", "ab", "CN-11"),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, "CN-11"),
        ("\ud800", "\ufffd", "CN-11"),
    ],
)
def test_any_difference_fails_cn11(sent: Any, printed: Any, clause: str) -> None:
    verdict = judge_output([sent], _lines([printed]))
    assert verdict.failure is not None and verdict.failure[0] == clause


def test_missing_extra_and_reordered_values_fail() -> None:
    assert judge_output([1, 2], _lines([1])).failure[0] == "CN-11"
    assert judge_output([1, 2], _lines([1, 2, 2])).failure[0] == "CN-11"
    assert judge_output([1, 2], _lines([2, 1])).failure[0] == "CN-11"


@pytest.mark.parametrize(
    "line",
    [b"MSG {not json}\n", "MSG {\"type\":\"str\",\"utf8\":\"61\",\"x\":\"\u00e9\"}\n".encode(), b"MSG [1]\n",
     b'MSG {"type":"cut","omitted":1}\n'],
)
def test_malformed_lines_fail_scn3(line: bytes) -> None:
    verdict = judge_output(["a"], line)
    assert verdict.failure is not None and verdict.failure[0] == "SCN-3"


def test_no_line_at_all_fails_scn3_and_none_needed_for_no_msg() -> None:
    assert judge_output([1], b"hello\n").failure[0] == "SCN-3"
    assert judge_output([], b"").ok


def test_cut_lines_only_beyond_the_limit_and_with_the_right_count() -> None:
    row = ["z" * 100] * 1000
    value = [row] * 1000
    assert full_line_size(value) > LINE_LIMIT
    cut = {"type": "list", "items": [{"type": "list", "items": [{"type": "cut", "omitted": 1000}]},
                                     {"type": "cut", "omitted": 999 * 1001}]}
    assert judge_output([value], b"MSG " + json.dumps(cut).encode() + b"\n").ok
    cut["items"][1]["omitted"] = 5
    assert judge_output([value], b"MSG " + json.dumps(cut).encode() + b"\n").failure[0] == "SCN-3"


def test_legacy_lines_are_judged_as_far_as_str_allows() -> None:
    legacy = b"".join(b"Received general message: " + str(v).encode() + b"\n" for v in SCENARIO_PAYLOADS)
    verdict = judge_output(SCENARIO_PAYLOADS, legacy)
    assert verdict.ok and verdict.form == "legacy"
    assert judge_output([1], b"Received general message: True\n").failure[0] == "CN-11"
    multi = judge_output(["a\nb"], b"Received general message: a\nb\n")
    assert multi.failure is None and multi.inconclusive is not None


def test_legacy_lines_for_some_values_and_msg_lines_for_others_are_mixed_forms() -> None:
    values = ["a", [1], 2.5]
    mixed = b"Received general message: a\n" + _lines([[1]]) + b"Received general message: 2.5\n"
    assert mixed_forms(len(values), mixed) is not None
    both = b"".join(b"Received general message: " + str(v).encode() + b"\n" + _lines([v]) for v in values)
    assert mixed_forms(len(values), both) is None
    assert mixed_forms(len(values), _lines(values)) is None
    assert mixed_forms(len(values), b"".join(b"Received general message: " + str(v).encode() + b"\n" for v in values)) is None


def test_foreign_opcodes_in_a_msg_are_refused_under_enc2() -> None:
    ops = payloads.foreign_value_ops()
    assert {"BINSTRING", "SHORT_BINSTRING", "PERSID", "BINPERSID"} <= set(ops)
    cases = {c.label: c for c in refusals.role_cases("cn")}
    for name in ops:
        if name != "INT":  # the kit's own "MSG with its value written with INT" stands for it
            assert cases[f"MSG whose value is written with {name}"].clause == "ENC-2", name


def test_every_bad_frame_the_kit_sends_is_refused_under_its_clause() -> None:
    for role in ("master", "cn"):
        for case in refusals.role_cases(role) + refusals.ack_cases():
            with pytest.raises(ProtocolError) as info:
                loads_checked(case.data[2:])
            assert info.value.clause == case.clause, case.label
    for case in refusals.invalid_vectors():
        with pytest.raises(ProtocolError):
            loads_checked(case.data[2:])


def test_hostile_frames_are_refused_under_their_declared_clause() -> None:
    for role in ("master", "cn"):
        for case in refusals.hostile_cases(role):
            assert len(case.data) <= 65537, case.label
            with pytest.raises(ProtocolError) as info:
                loads_checked(case.data[2:])
            assert info.value.clause == case.clause, case.label
