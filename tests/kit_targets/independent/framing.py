"""Frames (FRM-1): a u16 little-endian length, then exactly that many payload bytes."""

from __future__ import annotations

import struct
from typing import List, Optional

MAX_PAYLOAD = 65535


def frame(payload: bytes) -> bytes:
    """The frame of ``payload``; FRM-2 and FRM-3 are local errors, nothing is written."""
    if not payload:
        raise ValueError("[FRM-3] a frame is never empty")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"[FRM-2] a payload of {len(payload)} bytes does not fit a frame")
    return struct.pack("<H", len(payload)) + payload


class FrameSplitter:
    """Cuts a byte stream into payloads, however it was split (FRM-4).

    ``offset`` is the stream offset of the first byte not yet returned: the
    start of the frame in progress, as ERR-2 and FRM-5 report it.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.offset = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_payload(self) -> Optional[bytes]:
        """The next complete payload, or None until more bytes arrive."""
        if len(self._buffer) < 2:
            return None
        length = self._buffer[0] | self._buffer[1] << 8
        if len(self._buffer) < 2 + length:
            return None
        payload = bytes(self._buffer[2 : 2 + length])
        del self._buffer[: 2 + length]
        self.offset += 2 + length
        return payload

    def payloads(self) -> List[bytes]:
        """Every complete payload buffered, in order."""
        found = []
        while (payload := self.next_payload()) is not None:
            found.append(payload)
        return found

    @property
    def inside_frame(self) -> bool:
        """Whether part of a frame is buffered: end of stream now is FRM-5."""
        return bool(self._buffer)

    @property
    def pending(self) -> int:
        """How many bytes are buffered beyond the frames returned."""
        return len(self._buffer)
