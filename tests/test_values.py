"""The MSG value subset (VAL-1 to VAL-4, ENC-6) and exact equality."""

from __future__ import annotations

import collections
import enum

import pytest

from skyllh_cluster.errors import LocalProtocolError
from skyllh_cluster.wire.values import MAX_DEPTH, check_value, values_equal


def nested_lists(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**100), 1.5, float("nan"), "ü✓", b"\x00", [], (), {}, [1, (2, {"a": b""})],
     {None: 1, True: 2, 3: 4, 2.5: 5, "s": 6, b"b": 7, (1, ("x",)): 8}, nested_lists(MAX_DEPTH)],
)
def test_values_of_the_subset_pass(value: object) -> None:
    check_value(value)


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value, type_name",
    [(object(), "builtins.object"), ({1, 2}, "builtins.set"), (bytearray(b"x"), "builtins.bytearray"),
     (Colour.RED, "Colour"), (collections.OrderedDict(), "collections.OrderedDict"), ([1, [complex(1, 2)]], "builtins.complex")],
)
def test_values_outside_the_subset_are_refused_by_name(value: object, type_name: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_value(value)
    assert info.value.clause == "VAL-1"
    assert type_name in info.value.reason


def test_unhashable_looking_keys_outside_the_subset() -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_value({frozenset(): 1})
    assert info.value.clause == "VAL-2"


@pytest.mark.parametrize("make", [lambda: _cyclic_list(), lambda: _cyclic_dict(), lambda: (_cyclic_list(),)])
def test_cycles_are_refused(make) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_value(make())
    assert info.value.clause == "VAL-3"


def _cyclic_list() -> list:
    a: list = []
    a.append([a])
    return a


def _cyclic_dict() -> dict:
    d: dict = {}
    d["self"] = d
    return d


def test_shared_but_acyclic_values_pass() -> None:
    shared = [1, 2]
    check_value([shared, shared, {"again": shared}])


def test_too_deep_is_refused() -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_value(nested_lists(MAX_DEPTH + 1))
    assert info.value.clause == "ENC-6"


@pytest.mark.parametrize(
    "a, b",
    [(1, True), (1, 1.0), (0.0, -0.0), ([1], (1,)), ({"a": 1, "b": 2}, {"b": 2, "a": 1}), ([1, 2], [1]),
     ({"a": 1}, {"a": 2}), ({"a": 1}, {}), ("a", b"a")],
)
def test_exact_inequality(a: object, b: object) -> None:
    assert not values_equal(a, b)


@pytest.mark.parametrize(
    "a, b", [(float("nan"), float("nan")), ([1, (2.5, {"k": None})], [1, (2.5, {"k": None})]), (2**70, 2**70)]
)
def test_exact_equality(a: object, b: object) -> None:
    assert values_equal(a, b)


def test_a_sharing_bomb_is_refused_without_walking_it_all() -> None:
    from skyllh_cluster.wire.values import MAX_VALUE_COST

    bomb: list = [0]
    for _ in range(25):  # 2**25 leaves as a tree, 26 lists in memory
        bomb = [bomb, bomb]
    with pytest.raises(LocalProtocolError) as info:
        check_value(bomb)
    assert info.value.clause == "ENC-6" and str(MAX_VALUE_COST) in info.value.reason
