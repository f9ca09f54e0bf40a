"""Framing (spec section 2): a u16 little-endian length, then the payload.

:class:`FrameBuffer` is the sans-I/O reader: feed it whatever arrived, in
pieces of any size, and take whole payloads out.  It never blocks, never
touches a socket, and keeps count of the stream offset so that an error can
say where in the stream it happened.
"""

from __future__ import annotations

from typing import Optional

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = ["HEADER_SIZE", "MAX_PAYLOAD", "encode_frame", "FrameBuffer"]

HEADER_SIZE = 2
MAX_PAYLOAD = 0xFFFF


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` behind its length prefix.

    Raises :class:`LocalProtocolError` (FRM-2) for a payload over 65535 bytes
    and (FRM-3) for an empty one, so that nothing is ever half sent.
    """
    size = len(payload)
    if size > MAX_PAYLOAD:
        raise LocalProtocolError(
            "FRM-2", f"a payload of {size} bytes does not fit in a frame (at most {MAX_PAYLOAD})"
        )
    if not size:
        raise LocalProtocolError("FRM-3", "refusing to send an empty frame")
    return size.to_bytes(HEADER_SIZE, "little") + payload


class FrameBuffer:
    """Reassembles frames from a byte stream (FRM-1, FRM-4, FRM-5).

    >>> buf = FrameBuffer()
    >>> buf.feed(b"\\x03\\x00ab")
    >>> buf.next_payload() is None
    True
    >>> buf.feed(b"c\\x01\\x00z")
    >>> buf.next_payload(), buf.next_payload()
    (b'abc', b'z')
    """

    __slots__ = ("_data", "_pos", "_consumed", "_eof")

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0  # start of the unread part of _data
        self._consumed = 0  # stream offset of _data[0]
        self._eof = False

    @property
    def stream_offset(self) -> int:
        """Offset in the stream of the first byte not yet returned in a frame."""
        return self._consumed + self._pos

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned."""
        return len(self._data) - self._pos

    @property
    def in_frame(self) -> bool:
        """Whether part of a frame has arrived and the rest has not (FRM-6)."""
        return self.buffered > 0 and not self._has_whole_frame()

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer; ``b""`` means the peer closed."""
        if self._eof:
            if data:
                raise RuntimeError("received data after end of stream")
            return
        if not data:
            self._eof = True
            return
        self._data += data

    @property
    def at_eof(self) -> bool:
        """Whether the peer has closed its side."""
        return self._eof

    def _has_whole_frame(self) -> bool:
        avail = len(self._data) - self._pos
        if avail < HEADER_SIZE:
            return False
        size = self._data[self._pos] | (self._data[self._pos + 1] << 8)
        return avail >= HEADER_SIZE + size

    def next_payload(self) -> Optional[bytes]:
        """Return the next whole payload, or ``None`` if more bytes are needed.

        After end of stream, raises :class:`RemoteProtocolError` (FRM-5) if a
        frame was cut short; the partial frame is never returned.
        """
        data, pos = self._data, self._pos
        avail = len(data) - pos
        if avail >= HEADER_SIZE:
            size = data[pos] | (data[pos + 1] << 8)
            end = pos + HEADER_SIZE + size
            if len(data) >= end:
                payload = bytes(data[pos + HEADER_SIZE : end])
                self._pos = end
                if end == len(data) or (end > 4096 and end * 2 > len(data)):
                    # Drop what was read: at once when nothing follows (a
                    # master keeps thousands of idle connections), else now
                    # and then, so that a long-lived connection does not keep
                    # every byte it ever received.
                    del data[:end]
                    self._consumed += end
                    self._pos = 0
                return payload
        if self._eof and avail:
            raise RemoteProtocolError(
                "FRM-5",
                f"the connection closed inside a frame ({avail} of its bytes arrived)",
                self.stream_offset,
            )
        return None
