"""One compute node's connection, as the master's engine holds it.

A :class:`Node` pairs a non-blocking socket with the sans-I/O
:class:`~skyllh_cluster.protocol.Connection` of the master's side and an
outbox for bytes the socket did not take yet.  It makes no protocol decision
of its own: those come from the connection, and what to do about them from
:class:`~skyllh_cluster.master.server.MasterServer`.
"""

from __future__ import annotations

import errno
import operator
import os
import socket
import ssl
import time
from collections import deque
from typing import Deque, List, Optional, Sequence, Tuple, Union

from ..commands import RegisterCN
from ..protocol.connection import Connection

__all__ = ["Node", "send_frame_to_each", "outcome_of_send", "BEHIND", "native_send_each"]

_Chunk = Union[bytes, memoryview]

#: What a non-blocking ``send`` raises when the socket cannot take bytes now.
#: A TLS socket raises ``SSLWantWriteError`` (or, while it waits for a record
#: from the peer, ``SSLWantReadError``) instead of ``BlockingIOError``; after
#: either, OpenSSL wants the same bytes offered again, which the outbox does.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError)


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
        tls: Whether ``sock`` is a TLS socket (its sends cannot go through
            the C loop, which writes to raw descriptors).
        handshaking: Whether its TLS handshake is still under way; nothing
            is read from it as protocol bytes until it is done (TLS-5).
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
        "behind_since",
        "tls",
        "handshaking",
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
        #: ``time.monotonic()`` when bytes were last queued for the node
        #: after none were (meaningful while :attr:`has_queued`).
        self.behind_since = 0.0
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.handshaking = False

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
        except WOULD_BLOCK:
            sent = 0  # a TLS socket wants these very bytes again: they are queued whole
        return self.queue_unsent(data, sent)

    def queue_unsent(self, data: bytes, sent: int) -> bool:
        """Queue what the socket did not take of ``data`` (it took ``sent`` bytes); return whether it took all."""
        if sent == len(data):
            return True
        if not self._outbox:
            self._outbox = deque()
            self.behind_since = time.monotonic()
        self._outbox.append(memoryview(data)[sent:])  # type: ignore[union-attr]
        return False

    def flush(self) -> bool:
        """Write queued bytes until the socket would block; return whether none are left."""
        outbox = self._outbox
        while outbox:
            chunk = outbox[0]
            try:
                sent = self.sock.send(chunk)
            except WOULD_BLOCK:
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


#: What :func:`send_frame_to_each` returns for a node that has bytes queued.
BEHIND = "behind queued bytes"

try:  # the optional C loop of send(2) calls (master/_sendmany.c)
    from ._sendmany import send_each as native_send_each
except ImportError:  # pragma: no cover - built wherever a C compiler was at install time
    native_send_each = None
#: ``native_send_each`` is the C loop of ``send`` calls, or ``None`` where
#: it was not built.  A documented test hook: tests set this module
#: attribute to ``None`` to make :func:`send_frame_to_each` take its Python loop.

_outbox_of = operator.attrgetter("_outbox")
_tls_of = operator.attrgetter("tls")
_sock_of = operator.attrgetter("sock")
_fileno_of = operator.methodcaller("fileno")
_WOULD_BLOCK = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})


def send_frame_to_each(frame: bytes, close_after: bool, nodes: Sequence[Node]) -> List[object]:
    """Offer ``frame`` once to each node's socket; for a broadcast, touches only ``nodes``.

    Runs on a fan-out thread for a chunk of a broadcast.  Returns, for each
    node, the number of bytes its socket took, the socket's error, or
    :data:`BEHIND`: bytes are queued for the node, and the engine's thread
    writes the frame after them.  The sends are made by the C loop
    (:data:`native_send_each`) when it is built, with the GIL released once
    per chunk; by one Python loop per chunk when it is not, when a node of
    the chunk has bytes queued (rare: the C loop has no way to skip it), or
    when a node of the chunk speaks TLS (the record layer is OpenSSL's, in
    the process, not the kernel's).
    """
    for node in nodes:
        node.close_when_flushed = close_after
    if native_send_each is not None and not any(map(_outbox_of, nodes)) and not any(map(_tls_of, nodes)):
        taken = native_send_each(list(map(_fileno_of, map(_sock_of, nodes))), frame)
        if taken.count(len(frame)) == len(taken):  # every socket took the whole frame
            return taken  # type: ignore[no-any-return]
        return [outcome_of_send(count) for count in taken]
    outcomes: List[object] = []
    record = outcomes.append
    for node in nodes:
        if node._outbox:  # (has_queued, without a property call per node)
            record(BEHIND)
            continue
        try:
            record(node.sock.send(frame))
        except WOULD_BLOCK:
            record(0)
        except OSError as exc:
            record(exc)
    return outcomes


def outcome_of_send(taken: int) -> object:
    """What ``socket.send`` would have returned or raised, for one result of the C loop.

    The C loop returns the count of bytes sent, or ``-errno``.
    """
    if taken >= 0:
        return taken
    if -taken in _WOULD_BLOCK:
        return 0
    return OSError(-taken, os.strerror(-taken))  # the subclass for the errno, as socket.send raises
