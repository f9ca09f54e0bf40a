"""The canary listener: evidence that a target ran code from a payload.

The kit's malicious payloads (:func:`~.payloads.canary`) do one harmless
thing when an unrestricted unpickler loads them: they open a TCP connection
to this listener.  A connection here is therefore proof, not a guess, that
the target executed what it received (SEC-1, ENC-5).

No connection is proof of nothing by itself: a target that has not read the
frame yet makes no connection either (under load, the original master was
seen to pass that way).  :meth:`Canary.judge` therefore passes only on
positive evidence that the target *handled* the bait -- it closed the
connection, replied, or exited, which it can only do after reading the frame
-- and no connection came by then, plus a grace period.  Without such
evidence within the patience, the check is :class:`~.failures.Inconclusive`.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Callable, List, Optional, Sequence, Tuple

from .failures import ClauseFailure, Inconclusive, KitError
from .transcript import Transcript

__all__ = ["Canary", "Evidence"]

#: Waits up to the given seconds for the target to show that it handled what
#: was sent; returns what it did ("closed the connection") or ``None``.
Evidence = Callable[[float], Optional[str]]


class Canary:
    """A listening socket on ``host`` that records who connects to it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.bind((host, 0))
        except OSError as exc:
            self._sock.close()
            raise KitError(f"cannot open the canary listener on {host}: {exc}") from exc
        self._sock.listen(16)
        self._sock.setblocking(False)
        self.host, self.port = self._sock.getsockname()[:2]
        self.hits: List[Tuple[str, int]] = []

    def __enter__(self) -> "Canary":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening."""
        self._sock.close()

    def check(self, wait: float) -> List[Tuple[str, int]]:
        """Accept connections for up to ``wait`` seconds; return everyone who connected.

        Returns as soon as one connection has come: one is proof enough.
        """
        deadline = time.monotonic() + wait
        while not self.hits:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                break
            try:
                conn, peer = self._sock.accept()
            except BlockingIOError:
                continue
            conn.close()
            self.hits.append(peer[:2])
        return list(self.hits)

    def evidence(self) -> str:
        """One line describing the connections back, for the report."""
        who = ", ".join(f"{h}:{p}" for h, p in self.hits)
        return f"the canary listener at {self.host}:{self.port} got a connection from {who}: the target ran the payload"

    def judge(
        self,
        handled: Evidence,
        *,
        what: str,
        patience: float,
        grace: float,
        transcripts: Callable[[], Sequence[Transcript]] = tuple,
        gone: Optional[Callable[[], bool]] = None,
    ) -> str:
        """Decide whether the target ran the bait, on evidence only.

        Waits until the target shows it handled the bait (``handled``) or a
        canary connection comes, for at most ``patience`` seconds; then gives
        stray connections ``grace`` seconds more.  Returns what the target did.
        ``gone`` says when waiting longer cannot help (the connection was
        reset without evidence): the check is then inconclusive at once.

        Raises:
            ClauseFailure: a canary connection came: the target ran the payload.
            Inconclusive: the target showed no sign of handling the bait in time.
        """
        deadline = time.monotonic() + patience
        seen: Optional[str] = None
        while seen is None:
            if self.check(0):
                raise ClauseFailure(self.evidence(), transcripts=transcripts())
            left = deadline - time.monotonic()
            if gone is not None and gone():
                if self.check(grace):
                    raise ClauseFailure(self.evidence(), transcripts=transcripts())
                raise Inconclusive(
                    f"no evidence that the target handled {what}: it reset the connection, which a TCP stack "
                    "does when the bytes were never read, and no canary connection came",
                    transcripts=transcripts(),
                )
            if left <= 0:
                raise Inconclusive(
                    f"no evidence that the target handled {what}: within {patience:g} s it neither closed the "
                    "connection nor replied nor exited, and no canary connection came; it may not have read the "
                    "frame yet (a larger --conformance-timeout gives it longer)",
                    transcripts=transcripts(),
                )
            seen = handled(min(0.05, left))
        if self.check(grace):
            raise ClauseFailure(f"{self.evidence()} (seen after the target {seen})", transcripts=transcripts())
        return seen
