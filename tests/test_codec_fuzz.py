"""Property tests: round trips against the original's pickle, decoder/grammar agreement, fuzzing."""

from __future__ import annotations

import pickle
import struct
from typing import Any, List

import skyllh.cluster.commands as original
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skyllh_cluster.codec import dumps, loads, loads_checked, make_command
from skyllh_cluster.commands import MSG, Command, RegisterCN
from skyllh_cluster.conformance.strategies import commands, payload_mutations, split_points, values
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.wire.decoder import decode_payload
from skyllh_cluster.wire.framing import FrameBuffer, encode_frame
from skyllh_cluster.wire.grammar import Pickle, parse_opcodes
from skyllh_cluster.wire.values import values_equal

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def as_original(command: Command) -> Any:
    """The original's command with the very same state objects (so identities match)."""
    cls = getattr(original, type(command).__name__)
    theirs = cls.__new__(cls)
    theirs.__dict__.update(command.__dict__)
    return theirs


def fits(command: Command) -> bool:
    try:
        dumps(command)
    except ProtocolError:
        return False
    return True


def outcome(decode: Any, payload: bytes) -> Any:
    try:
        return decode(payload)
    except ProtocolError as exc:
        return exc


def core_only(payload: bytes) -> Command:
    """The tokenizer and the core without any template (the documented test hook)."""
    return make_command(*decode_payload(payload, templates=False))


def assert_agree(payload: bytes) -> None:
    """loads (templates first), the tokenizer alone and the grammar: one result, or three refusals."""
    results = [outcome(decode, payload) for decode in (loads, core_only, loads_checked)]
    fast = results[0]
    if any(isinstance(r, ProtocolError) for r in results):
        assert all(isinstance(r, ProtocolError) for r in results), (payload.hex(), results)
        assert all(r.offset is not None for r in results)
        assert results[0].clause == results[1].clause, (payload.hex(), results)  # one tokenizer, one core
        return
    for other in results[1:]:
        assert type(fast) is type(other) and list(fast.__dict__) == list(other.__dict__), payload.hex()
        assert all(values_equal(fast.__dict__[k], other.__dict__[k]) for k in fast.__dict__), payload.hex()


@FAST
@given(commands())
def test_round_trip(command: Command) -> None:
    if fits(command):
        assert loads(dumps(command)) == command


@FAST
@given(commands())
def test_dumps_is_the_originals_pickle(command: Command) -> None:
    if fits(command):
        assert dumps(command) == pickle.dumps(as_original(command), protocol=4)


@FAST
@given(commands(), st.sampled_from([2, 3, 4, 5]))
def test_loads_accepts_the_original_at_every_protocol(command: Command, protocol: int) -> None:
    payload = pickle.dumps(as_original(command), protocol=protocol)
    if len(payload) <= 0xFFFF:
        assert loads(payload) == command


@SLOW
@given(commands())
def test_grammar_builds_the_encoders_payloads(command: Command) -> None:
    if fits(command):
        payload = dumps(command)
        protocol, ops = parse_opcodes(payload)
        assert Pickle.build({"protocol": protocol, "ops": [{"op": o.code, "arg": o.arg} for o in ops]}) == payload


@SLOW
@given(commands(), st.sampled_from([2, 3, 4, 5]))
def test_decoder_and_grammar_agree_on_valid_payloads(command: Command, protocol: int) -> None:
    assert_agree(pickle.dumps(as_original(command), protocol=protocol))


def original_payloads() -> st.SearchStrategy[bytes]:
    return st.tuples(commands(values(max_leaves=6)), st.sampled_from([2, 3, 4, 5])).map(
        lambda pair: pickle.dumps(as_original(pair[0]), protocol=pair[1])
    )


def canonical_payloads() -> st.SearchStrategy[bytes]:
    """Canonical payloads: the shapes the templates take, and their near misses once mutated."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
    return (commands(values(max_leaves=4)) | scalars.map(MSG)).filter(fits).map(dumps)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(payload_mutations(canonical_payloads()) | canonical_payloads())
@example(dumps(MSG("h\u00e9")).replace(b"\xc3\xa9", b"\xed\xa0"))  # a cut surrogate in the one-str template
@example(dumps(RegisterCN(1, 2))[:-3] + b"ub")  # the RegisterCN template cut short
@example(dumps(MSG(2**64))[:-4] + b"sb.")  # LONG1 shorter than its length byte says
def test_templates_agree_with_the_core(payload: bytes) -> None:
    assert_agree(payload)


def template_values() -> st.SearchStrategy[Any]:
    """Values of the shapes the MSG templates read: scalars, and containers of them two levels deep.

    Dicts have str keys (the templates take no other); runs of small ints and
    lists longer than one APPENDS batch are drawn on purpose.
    """
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | st.binary(max_size=30)
    flat = st.one_of(
        st.lists(scalars, max_size=6),
        st.lists(scalars, max_size=6).map(tuple),
        st.dictionaries(st.text(max_size=8), scalars, max_size=6),
        st.lists(st.integers(0, 255), min_size=2, max_size=1200),  # runs of BININT1, batches of 1000
        st.dictionaries(st.text(max_size=3), st.tuples(scalars, scalars), max_size=3),  # TUPLE2 values
    )
    containers = st.one_of(
        flat,
        st.lists(flat | scalars, max_size=5),
        st.lists(scalars, max_size=5).map(tuple),
        st.dictionaries(st.text(max_size=8), flat | scalars, max_size=5),
    )
    return scalars | containers


@st.composite
def value_mutations(draw: st.DrawFn, payloads: st.SearchStrategy[bytes]) -> bytes:
    """A canonical MSG with its value's bytes edited and its FRAME length made right again.

    Most edits elsewhere break the frame header, which no template then takes:
    these reach the templates' reading of the value itself.
    """
    payload = draw(payloads)
    value = bytearray(payload[56:-3])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(value)))
        kind = draw(st.sampled_from(["set", "insert", "delete", "splice"]))
        if kind == "set" and at < len(value):
            value[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            value[at:at] = draw(st.binary(min_size=1, max_size=2))
        elif kind == "delete":
            del value[at : at + draw(st.integers(1, 2))]
        else:
            value[at:at] = draw(st.sampled_from([b"a", b"e", b"s", b"u", b"t", b"(", b"\x94", b"\x85", b"\x86", b"h\x05", b"]", b"}"]))
    body = payload[11:56] + bytes(value) + payload[-3:]
    return payload[:3] + struct.pack("<Q", len(body)) + body


def template_payloads() -> st.SearchStrategy[bytes]:
    return template_values().map(MSG).filter(fits).map(dumps)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(template_payloads() | value_mutations(template_payloads()))
@example(dumps(MSG([[], 1])))  # an empty list, then an item that is not its own
@example(dumps(MSG([{}, "k", 1])))  # an empty dict, then what looks like one entry
@example(dumps(MSG({"k": (1, 2), "j": 3})))  # a TUPLE2 value: the entries are read again as items
@example(dumps(MSG([(1, 2)])))  # a one-item list whose item is a TUPLE2
@example(dumps(MSG(list(range(256)) * 5)))  # runs longer than the window, two batches
@example(dumps(MSG((1, "a", None))))  # the value a TUPLE3 of scalars
@example(dumps(MSG(([1], 2))))  # a TUPLE2 holding a list: not a template's shape
@example(dumps(MSG((1, 2, 3, 4))))  # MARK ... TUPLE
@example(dumps(MSG([[[1]]])))  # three levels: the core
def test_value_templates_agree_with_the_core(payload: bytes) -> None:
    assert_agree(payload)
    try:
        first, second = loads(payload), loads(payload)
    except ProtocolError:
        return
    core = core_only(payload)
    assert dumps(first) == dumps(core)  # the same objects shared, and no others
    assert not {id(part) for part in containers_of(first.msg)} & {id(part) for part in containers_of(second.msg)}


def containers_of(value: Any) -> List[Any]:
    """Every list and dict in ``value`` (the mutable parts no two results may share)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if type(item) in (list, dict):
            found.append(item)
        if type(item) in (list, tuple):
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.values())
    return found


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload_mutations(original_payloads()))
@example(bytes.fromhex("8004") + b"]\x94h\x00N" + b"a.")  # mutation of a memo-referenced list
@example(b"\x80\x04\x95\x01\x00\x00\x00\x00\x00\x00\x00..")  # a frame ending at STOP, trailing byte
@example(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00\xffX\x06\x00\x00\x00latin1\x86R.")
@example(  # canonical MSG(None) whose FRAME says 1 byte: it ends inside the header
    bytes.fromhex(
        "80049501000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c034d53479493942981947d94"
        "8c036d7367944e73622e"
    )
)
def test_decoder_and_grammar_agree_on_mutated_payloads(payload: bytes) -> None:
    assert_agree(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    for payload in (data, b"\x80\x04" + data, b"\x80\x02" + data):
        result = outcome(loads, payload)
        assert isinstance(result, (ProtocolError, Command))


def feed_all(stream: bytes, cuts: List[int]) -> List[Any]:
    """Feed the stream in pieces cut at ``cuts``, then end of stream; decode every frame."""
    buffer = FrameBuffer()
    results: List[Any] = []
    bounds = [0] + cuts + [len(stream)]
    for start, end in zip(bounds, bounds[1:]):
        buffer.feed(stream[start:end]) if end > start else None
        while True:
            payload = buffer.next_payload()
            if payload is None:
                break
            results.append(outcome(loads, payload))
    buffer.feed(b"")
    try:
        tail = buffer.next_payload()
    except ProtocolError as exc:
        results.append(exc)
    else:
        assert tail is None
    return results


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payload_mutations(original_payloads()) | original_payloads(), min_size=1, max_size=4), st.data())
def test_stream_of_frames_split_anywhere(payloads: List[bytes], data: st.DataObject) -> None:
    frames = [encode_frame(p) for p in payloads if 0 < len(p) <= 0xFFFF]
    stream = b"".join(frames)
    cuts = data.draw(split_points(stream))
    whole = feed_all(stream, [])
    pieces = feed_all(stream, cuts)
    byte_by_byte = feed_all(stream, list(range(len(stream))))
    trailing = feed_all(stream + b"\x05\x00ab", cuts)
    expected = [outcome(loads, p) for p in payloads if 0 < len(p) <= 0xFFFF]
    for results in (whole, pieces, byte_by_byte):
        assert len(results) == len(expected)
        for got, want in zip(results, expected):
            assert type(got) is type(want)
    assert len(trailing) == len(expected) + 1 and trailing[-1].clause == "FRM-5"
