"""Hostile payloads at the decoder (issue "Hardening", F1 to F4): refused cheaply, in every path.

Every payload is built by hand as bytes (tests/hostile_payloads.py).  Each
must be refused with a ProtocolError, never another exception, by ``loads``
(templates first), by the tokenizer alone and by the grammar, with a short
reason.  How long a refusal takes is a figure for benchmarks/bench_codec.py,
not an assertion here.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, List

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hostile_payloads import CORPUS, f3_colliding_keys, f3_colliding_msg_keys, f4_deep_tuple_key, long_int, with_extra_entry
from skyllh_cluster.codec import loads, loads_checked, make_command
from skyllh_cluster.commands import Command
from skyllh_cluster.conformance.strategies import payload_mutations
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.wire.decoder import decode_payload

MAX_REASON = 200  # far below the 64 KB: a reason names types, counts and offsets


def core_only(payload: bytes) -> Command:
    return make_command(*decode_payload(payload, templates=False))


PATHS: List[Callable[[bytes], Any]] = [loads, core_only, loads_checked]


def refusals(payload: bytes) -> List[ProtocolError]:
    found = []
    for decode in PATHS:
        with pytest.raises(ProtocolError) as info:
            decode(payload)
        assert len(info.value.reason) < MAX_REASON and len(str(info.value)) < MAX_REASON
        found.append(info.value)
    assert len({error.clause for error in found}) == 1, found
    return found


def test_the_default_int_digit_limit_is_in_force() -> None:
    assert sys.get_int_max_str_digits() == sys.int_info.default_max_str_digits


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_hostile_payload_is_refused_in_every_path(name: str) -> None:
    payload = CORPUS[name]()
    assert len(payload) <= 0xFFFF
    refusals(payload)


@pytest.mark.parametrize("class_name, clause", [(b"RegisterCN", "CMD-3"), (b"MSG", "CMD-4")])
def test_f1_an_int_key_of_5001_digits_is_a_protocol_error(class_name: bytes, clause: str) -> None:
    payload = CORPUS[f"F1 {class_name.decode()}"]()
    assert [error.clause for error in refusals(payload)] == [clause] * 3


def test_f2_a_reference_bomb_key_is_refused_by_its_cost() -> None:
    assert refusals(CORPUS["F2 MSG"]())[0].clause == "ENC-6"
    assert refusals(CORPUS["F2 RegisterCN"]())[0].clause == "ENC-6"


def test_f3_a_registration_state_is_refused_before_its_keys_are_hashed() -> None:
    assert refusals(f3_colliding_keys())[0].clause == "CMD-3"
    assert refusals(f3_colliding_keys(before_the_command=True))[0].clause == "CMD-1"
    # One entry too many is enough, whatever the keys.
    third = with_extra_entry(b"RegisterCN", b"\x8c\x01x\x94")
    assert "3 entries" in refusals(third)[0].reason


@pytest.mark.parametrize("as_tuples", [False, True], ids=["ints", "tuples"])
def test_f3_keys_of_one_hash_are_refused_at_the_65th(as_tuples: bool) -> None:
    """A valid MSG but for its keys: 64 of one hash decode, the 65th is ENC-6 (at its SETITEMS)."""
    allowed = f3_colliding_msg_keys(64, as_tuples)
    assert len(loads(allowed).msg) == len(loads_checked(allowed).msg) == len(core_only(allowed).msg) == 64
    error = refusals(f3_colliding_msg_keys(65, as_tuples))[0]
    assert error.clause == "ENC-6" and "same hash" in error.reason
    assert error.offset == len(f3_colliding_msg_keys(65, as_tuples)) - 4


def decode_in_small_thread(decode: Callable[[bytes], Any], payload: bytes) -> Any:
    """Run ``decode`` in a thread with a 512 KiB stack (macOS's default): its outcome, or the crash."""
    outcome: List[Any] = []

    def target() -> None:
        try:
            outcome.append(decode(payload))
        except BaseException as exc:  # noqa: BLE001 - the outcome is what the test looks at
            outcome.append(exc)

    previous = threading.stack_size(512 * 1024)
    try:
        thread = threading.Thread(target=target)
        thread.start()
    finally:
        threading.stack_size(previous)
    thread.join(timeout=120)
    assert not thread.is_alive()
    return outcome[0]


@pytest.mark.parametrize("decode", PATHS, ids=["loads", "core", "grammar"])
def test_f4_a_65000_deep_tuple_key_is_refused_on_a_small_stack(decode: Callable[[bytes], Any]) -> None:
    result = decode_in_small_thread(decode, f4_deep_tuple_key())
    assert isinstance(result, ProtocolError) and result.clause == "ENC-6"


def outcome(decode: Callable[[bytes], Any], payload: bytes) -> Any:
    try:
        return decode(payload)
    except ProtocolError as exc:
        assert len(exc.reason) < MAX_REASON
        return exc


def hostile_seeds() -> st.SearchStrategy[bytes]:
    big = st.integers(min_value=10**4400, max_value=10**6000) | st.integers(max_value=-(10**4400), min_value=-(10**6000))
    extra_keys = big.map(long_int) | st.sampled_from([b"N", b"\x8c\x01x\x94", b"]\x94"])
    return st.sampled_from([b"RegisterCN", b"MSG"]).flatmap(
        lambda name: extra_keys.map(lambda key: with_extra_entry(name, key))
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payload_mutations(hostile_seeds()) | hostile_seeds())
@example(with_extra_entry(b"MSG", long_int(-(10**5000))))
def test_only_protocol_errors_escape_under_the_default_digit_limit(payload: bytes) -> None:
    results = [outcome(decode, payload) for decode in PATHS]
    assert all(isinstance(result, (ProtocolError, Command)) for result in results)
    assert len({type(result) for result in results}) == 1
