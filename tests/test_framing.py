"""FrameBuffer and encode_frame: FRM-1 to FRM-5, h11-style reader tests."""

from __future__ import annotations

import pytest

from skyllh_cluster.errors import LocalProtocolError, RemoteProtocolError
from skyllh_cluster.wire.framing import MAX_PAYLOAD, FrameBuffer, encode_frame

PAYLOADS = [b"a", b"hello", bytes(range(256)), b"x" * 300, b"\x00" * MAX_PAYLOAD]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


def drain(buf: FrameBuffer) -> list:
    out = []
    while True:
        payload = buf.next_payload()
        if payload is None:
            return out
        out.append(payload)


def test_encode_frame_prefix_is_u16_little_endian() -> None:
    assert encode_frame(b"\x01" * 0x0102)[:2] == b"\x02\x01"
    assert encode_frame(b"abc") == b"\x03\x00abc"


def test_largest_payload_fits() -> None:
    frame = encode_frame(b"y" * MAX_PAYLOAD)
    assert frame[:2] == b"\xff\xff" and len(frame) == MAX_PAYLOAD + 2


def test_oversized_payload_is_refused_before_anything_is_built() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(b"y" * (MAX_PAYLOAD + 1))
    assert info.value.clause == "FRM-2"
    assert "65536 bytes" in info.value.reason


def test_empty_payload_is_refused() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(b"")
    assert info.value.clause == "FRM-3"


def test_whole_stream_at_once() -> None:
    buf = FrameBuffer()
    buf.feed(STREAM)
    assert drain(buf) == PAYLOADS
    assert buf.buffered == 0 and not buf.in_frame
    assert buf.stream_offset == len(STREAM)


def test_byte_by_byte() -> None:
    buf = FrameBuffer()
    got = []
    for i in range(len(STREAM)):
        buf.feed(STREAM[i : i + 1])
        got.extend(drain(buf))
    assert got == PAYLOADS
    assert buf.stream_offset == len(STREAM)


@pytest.mark.parametrize("split", [1, 2, 3, 7, 259, 600, len(STREAM) - 1])
def test_split_at_any_point(split: int) -> None:
    buf = FrameBuffer()
    buf.feed(STREAM[:split])
    first = drain(buf)
    buf.feed(STREAM[split:])
    assert first + drain(buf) == PAYLOADS


def test_trailing_partial_frame_waits_then_fails_at_eof() -> None:
    buf = FrameBuffer()
    buf.feed(encode_frame(b"ok") + b"\x05\x00ab")
    assert buf.next_payload() == b"ok"
    assert buf.next_payload() is None
    assert buf.in_frame and buf.buffered == 4
    buf.feed(b"")
    assert buf.at_eof
    with pytest.raises(RemoteProtocolError) as info:
        buf.next_payload()
    assert info.value.clause == "FRM-5"
    assert info.value.offset == 4  # the cut frame starts after b"\x02\x00ok"


def test_half_a_length_prefix_is_in_frame() -> None:
    buf = FrameBuffer()
    buf.feed(b"\x05")
    assert buf.in_frame and buf.next_payload() is None


def test_clean_eof_between_frames() -> None:
    buf = FrameBuffer()
    buf.feed(encode_frame(b"z"))
    buf.feed(b"")
    buf.feed(b"")  # a second EOF is harmless
    assert drain(buf) == [b"z"]
    assert buf.next_payload() is None


def test_data_after_eof_is_a_bug_of_the_caller() -> None:
    buf = FrameBuffer()
    buf.feed(b"")
    with pytest.raises(RuntimeError):
        buf.feed(b"x")


def test_zero_length_frame_is_returned_for_the_decoder_to_refuse() -> None:
    buf = FrameBuffer()
    buf.feed(b"\x00\x00")
    assert buf.next_payload() == b""


def test_long_lived_buffer_compacts_and_keeps_offsets() -> None:
    buf = FrameBuffer()
    frame = encode_frame(b"p" * 1000)
    buf.feed(frame[:1])  # from here on, part of a frame is always waiting
    for _ in range(20):
        buf.feed(frame[1:] + frame[:1])
        assert buf.next_payload() == b"p" * 1000
        assert buf.next_payload() is None and buf.in_frame
    assert buf.stream_offset == 20 * len(frame)
    assert buf.buffered == 1
    assert len(buf._data) < 5 * len(frame)  # it did not keep every byte


def test_a_buffer_read_to_its_end_keeps_no_bytes() -> None:
    # A master holds thousands of connections that are idle after their
    # RegisterCN; none of them should hold on to it.
    buf = FrameBuffer()
    buf.feed(encode_frame(b"r" * 100) + encode_frame(b"s"))
    assert buf.next_payload() == b"r" * 100
    assert buf.next_payload() == b"s"
    assert len(buf._data) == 0 and buf.stream_offset == 102 + 3 and buf.buffered == 0
