"""A byte transcript of one kit connection: what went each way, and when.

Every connection the kit opens or accepts records its traffic here.  When a
check fails, the transcript is attached to the failure, so that the report
shows the exact bytes that reproduce it::

    -> 0000 +0.000s: 6600800495 5b00000000 ...        (kit to target)
    <- 0000 +0.004s: 3100800495 2600000000 ...        (target to kit)
    -- +2.006s no reply within 2 s

The offset is the position of the chunk's first byte in its direction's
stream, so that an offset in a reason (``[ENC-2] at offset 30``) can be
found in the transcript.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["Entry", "Transcript", "SENT", "RECEIVED", "NOTE"]

SENT = "->"
RECEIVED = "<-"
NOTE = "--"

#: Chunks longer than this are shown by their head and their length; the
#: scenario's 60 KB frame would otherwise bury the interesting lines.
SHOWN_BYTES = 96


@dataclass(frozen=True)
class Entry:
    """One line of a transcript."""

    direction: str  # SENT, RECEIVED or NOTE
    at: float  # seconds since the transcript started
    offset: int  # stream offset of the first byte, in its direction
    data: bytes = b""
    text: str = ""

    def render(self) -> str:
        if self.direction == NOTE:
            return f"-- +{self.at:.3f}s {self.text}"
        shown = self.data[:SHOWN_BYTES].hex()
        if len(self.data) > SHOWN_BYTES:
            shown += f"... ({len(self.data)} bytes)"
        return f"{self.direction} {self.offset:04x} +{self.at:.3f}s: {shown}"


class Transcript:
    """The ordered record of one connection's traffic, with notes."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self._start = time.monotonic()
        self._entries: List[Entry] = []
        self._offsets = {SENT: 0, RECEIVED: 0}

    @property
    def started(self) -> float:
        """When the transcript started (a ``time.monotonic()`` value)."""
        return self._start

    @property
    def entries(self) -> List[Entry]:
        """The lines recorded so far, oldest first."""
        return list(self._entries)

    def elapsed(self) -> float:
        """Seconds since the transcript started."""
        return time.monotonic() - self._start

    def sent(self, data: bytes) -> None:
        """Record bytes the kit wrote."""
        self._record(SENT, data)

    def received(self, data: bytes) -> None:
        """Record bytes the target wrote."""
        self._record(RECEIVED, data)

    def note(self, text: str) -> None:
        """Record an event that is not bytes: a close, a timeout, a process exit."""
        self._entries.append(Entry(NOTE, self.elapsed(), 0, text=text))

    def bytes_in(self, direction: str) -> bytes:
        """Everything that went one way, joined."""
        return b"".join(e.data for e in self._entries if e.direction == direction)

    def _record(self, direction: str, data: bytes) -> None:
        if not data:
            return
        self._entries.append(Entry(direction, self.elapsed(), self._offsets[direction], bytes(data)))
        self._offsets[direction] += len(data)

    def render(self, limit: Optional[int] = 60) -> str:
        """The transcript as text, one line per entry (the last ``limit`` lines)."""
        lines = [entry.render() for entry in self._entries]
        if limit is not None and len(lines) > limit:
            lines = [f"-- ({len(lines) - limit} earlier lines left out)"] + lines[-limit:]
        head = f"transcript {self.label}".rstrip()
        return "\n".join([head + ":"] + ["  " + line for line in lines])
