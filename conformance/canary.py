"""The canary listener: evidence that a target ran code from a payload.

The kit's malicious payloads (:func:`~.payloads.canary`) do one harmless
thing when an unrestricted unpickler loads them: they open a TCP connection
to this listener.  A connection here is therefore proof, not a guess, that
the target executed what it received (SEC-1, ENC-5); no connection within the
wait means it did not.
"""

from __future__ import annotations

import select
import socket
import time
from typing import List, Tuple

from .failures import KitError

__all__ = ["Canary"]


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
