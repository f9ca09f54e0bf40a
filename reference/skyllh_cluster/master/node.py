"""One compute node's connection, as the master's engine holds it.

A :class:`Node` pairs a non-blocking socket with the sans-I/O
:class:`~skyllh_cluster.protocol.Connection` of the master's side and an
outbox for bytes the socket did not take yet.  It makes no protocol decision
of its own: those come from the connection, and what to do about them from
:class:`~skyllh_cluster.master.server.MasterServer`.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Deque, Optional, Tuple, Union

from ..commands import RegisterCN
from ..protocol.connection import Connection

__all__ = ["Node"]

_Chunk = Union[bytes, memoryview]


class Node:
    """A compute node's connection to the master.

    Attributes:
        sock: The connection's socket (non-blocking while the engine owns it).
        addr: The node's address, as the master saw it.
        port: The node's port, as the master saw it.
        connection: The master's side of the protocol for this connection.
        accepted_at: ``time.monotonic()`` when the connection was accepted;
            the registration timeout (MST-7) runs from here.
        failure: Why the engine dropped this node, once it has.
    """

    __slots__ = (
        "sock",
        "addr",
        "port",
        "connection",
        "accepted_at",
        "key",
        "failure",
        "closed",
        "close_when_flushed",
        "_outbox",
        "events",
    )

    def __init__(self, sock: socket.socket, addr: str, port: int, connection: Connection, accepted_at: float) -> None:
        self.sock = sock
        self.addr = addr
        self.port = port
        self.connection = connection
        self.accepted_at = accepted_at
        #: The node's identification key, ``"addr:port"`` as in the original.
        self.key = f"{addr}:{port}"
        self.failure: Optional[BaseException] = None
        #: Whether the engine has closed this node's socket.
        self.closed = False
        #: Close the connection once the outbox is empty (after ShutdownCN, MST-6).
        self.close_when_flushed = False
        # Made when something is first queued: a deque costs some 600 bytes,
        # and most nodes never have anything queued.
        self._outbox: "Deque[_Chunk] | Tuple[()]" = ()
        #: The selector events the engine watches for this node (0: none).
        self.events = 0

    @property
    def registration(self) -> Optional[RegisterCN]:
        """The node's RegisterCN, once received."""
        return self.connection.registration

    @property
    def registered(self) -> bool:
        """Whether the node's RegisterCN arrived (the engine answers it at once)."""
        return self.connection.registration is not None

    @property
    def pending(self) -> int:
        """Bytes queued for the node that its socket has not taken yet."""
        return sum(len(chunk) for chunk in self._outbox)

    @property
    def has_queued(self) -> bool:
        """Whether bytes are queued; a new frame must then go behind them."""
        return bool(self._outbox)

    def write(self, data: bytes) -> bool:
        """Write ``data`` after anything still queued; return whether all went out.

        What the socket does not take now stays queued for :meth:`flush`.
        Raises the socket's :class:`OSError` when the connection is broken.
        """
        if self._outbox:
            self._outbox.append(data)  # type: ignore[union-attr]
            return self.flush()
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        return self.queue_unsent(data, sent)

    def queue_unsent(self, data: bytes, sent: int) -> bool:
        """Queue what the socket did not take of ``data`` (it took ``sent`` bytes); return whether it took all."""
        if sent == len(data):
            return True
        if not self._outbox:
            self._outbox = deque()
        self._outbox.append(memoryview(data)[sent:])  # type: ignore[union-attr]
        return False

    def flush(self) -> bool:
        """Write queued bytes until the socket would block; return whether none are left."""
        outbox = self._outbox
        while outbox:
            chunk = outbox[0]
            try:
                sent = self.sock.send(chunk)
            except BlockingIOError:
                return False
            if sent < len(chunk):
                outbox[0] = memoryview(chunk)[sent:]  # type: ignore[index]
                return False
            outbox.popleft()  # type: ignore[union-attr]
        return True

    def discard_outbox(self) -> None:
        """Forget queued bytes (the connection is being dropped)."""
        self._outbox = ()

    def __repr__(self) -> str:
        return f"<Node {self.key} {self.connection.state.name}{' closed' if self.closed else ''}>"
