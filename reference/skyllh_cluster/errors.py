"""The errors of the SkyLLH cluster protocol.

Every violation of the protocol surfaces as a :class:`ProtocolError`, which
names the clause of ``spec/protocol.md`` that was broken, the byte offset at
which it was detected (when there is one) and a human-readable reason.

As in h11, the error says whose fault it was:

* :class:`RemoteProtocolError`: the peer sent something the spec forbids; the
  right response is to close that one connection.
* :class:`LocalProtocolError`: this side tried to do something the spec
  forbids (send a command in the wrong state, send a payload that does not fit
  in a frame, encode a value outside the subset); nothing was sent.

The codec's :func:`skyllh_cluster.loads` raises plain :class:`ProtocolError`,
since a codec does not know which side produced the bytes.
"""

from __future__ import annotations

from typing import Optional

from .clauses import CLAUSES

__all__ = ["ProtocolError", "LocalProtocolError", "RemoteProtocolError", "excerpt", "EXCERPT_SIZE"]

#: The most characters of a peer's text that a reason quotes.
EXCERPT_SIZE = 40


class ProtocolError(ValueError):
    """A violation of the SkyLLH cluster protocol.

    Attributes:
        clause: The ID of the violated clause, for example ``"ENC-2"``.
        reason: What was wrong, in words.
        offset: Byte offset into the payload (or stream) where the problem
            was detected, or ``None`` when the error is not about bytes.
    """

    def __init__(self, clause: str, reason: str, offset: Optional[int] = None) -> None:
        if clause not in CLAUSES:
            raise KeyError(f"unknown clause ID {clause!r}")
        self.clause = clause
        self.reason = reason
        self.offset = offset
        super().__init__(str(self))

    def __str__(self) -> str:
        where = "" if self.offset is None else f" at offset {self.offset}"
        return f"[{self.clause}]{where}: {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.clause!r}, {self.reason!r}, offset={self.offset!r})"

    def __reduce__(self):  # keep the three fields through pickling and copying
        return (type(self), (self.clause, self.reason, self.offset))

    def with_offset(self, base: int) -> "ProtocolError":
        """Return the same error with its offset moved by ``base`` bytes.

        Used to turn an offset within a payload into an offset within the
        stream, which is 2 bytes (the length prefix) further on per frame.
        """
        offset = None if self.offset is None else self.offset + base
        return type(self)(self.clause, self.reason, offset)

    def as_remote(self) -> "RemoteProtocolError":
        """Return this error blamed on the peer."""
        return RemoteProtocolError(self.clause, self.reason, self.offset)

    def as_local(self) -> "LocalProtocolError":
        """Return this error blamed on this side."""
        return LocalProtocolError(self.clause, self.reason, self.offset)


class LocalProtocolError(ProtocolError):
    """This side tried to break the protocol; nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; close the connection it came on."""


def excerpt(text: str, limit: int = EXCERPT_SIZE) -> str:
    """A short, printable quote of ``text`` for an error reason.

    Reasons must not echo a peer's data unbounded: this keeps at most
    ``limit`` characters, escapes anything unprintable, and says how much
    was left out.
    """
    head = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    head = "".join(char if char.isprintable() else repr(char)[1:-1] for char in head)
    if len(text) > limit:
        return f"{head}... ({len(text) - limit} more characters)"
    return head
