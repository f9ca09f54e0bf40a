"""Blocking frame I/O on a connected socket: the seed's :class:`Message` and its helpers.

Whole frames (spec section 2) moved over a blocking TCP socket, with the
names and signatures of ``skyllh.cluster.srvclt``.  This module knows bytes
and frames only, nothing of commands: :mod:`skyllh_cluster.commands` sends
and receives with it, and :mod:`skyllh_cluster.srvclt` is its public face,
under the original's names.  The framing rules live in
:mod:`skyllh_cluster.wire.framing`.
"""

from __future__ import annotations

import socket
from typing import Any, Union

from .wire.framing import HEADER_SIZE, encode_frame

__all__ = ["Message", "send_to_socket", "read_from_socket", "receive_payload"]


class Message:
    """One frame's payload: ``bytes``, or text sent as UTF-8.

    Args:
        msg: The payload.  ``bytes`` are kept as they are; anything else is
            cast with ``str()``, as the original does.

    Raises:
        TypeError: ``msg`` cannot be cast to ``str``.
    """

    @staticmethod
    def receive(sock: socket.socket, blocksize: int = 2048, as_bytes: bool = False) -> "Message":
        """Read exactly one frame from ``sock`` and return its payload as a Message.

        Reads no byte beyond the frame, so that frames sent back to back can
        be read one call at a time.

        Args:
            sock: A connected, blocking stream socket.
            blocksize: The most bytes asked of one ``recv`` call.
            as_bytes: Keep the payload as ``bytes``; otherwise it is decoded
                as UTF-8 into a ``str``.

        Raises:
            RuntimeError: ``'Socket connection broken!'`` when the peer closes
                the connection before the frame is complete, as the original.
            UnicodeDecodeError: ``as_bytes`` is false and the payload is not
                UTF-8.
        """
        payload = receive_payload(sock, blocksize)
        if as_bytes:
            return Message(payload)
        return Message(payload.decode("utf-8"))

    def __init__(self, msg: Union[bytes, str, Any]) -> None:
        self.msg = msg

    @property
    def msg(self) -> Union[bytes, str]:
        """The payload: a ``bytes`` instance or a ``str`` instance."""
        return self._msg

    @msg.setter
    def msg(self, m: Any) -> None:
        if isinstance(m, bytes):
            self._msg: Union[bytes, str] = m
            return
        try:
            self._msg = str(m)
        except Exception as exc:  # str() runs arbitrary __str__ code
            raise TypeError("The msg property must be of type bytes or castable to type str!") from exc

    def _encoded(self) -> bytes:
        msg = self._msg
        return msg if isinstance(msg, bytes) else msg.encode("utf-8")

    @property
    def length(self) -> int:
        """The length of the message in bytes, as it goes on the wire (UTF-8 for a ``str``)."""
        return len(self._encoded())

    def as_socket_msg(self) -> bytes:
        """Return the frame that carries this message: the u16 length, then the bytes.

        Raises:
            LocalProtocolError: FRM-2 when the message is over 65535 bytes,
                FRM-3 when it is empty.
        """
        return encode_frame(self._encoded())

    def send(self, sock: socket.socket) -> None:
        """Send this message as one frame on ``sock``.

        The frame is built first, so a message that does not fit sends nothing.
        """
        send_to_socket(sock, self.as_socket_msg())

    def __repr__(self) -> str:
        return f"Message({self._msg!r})"


def send_to_socket(sock: socket.socket, msg: bytes) -> None:
    """Send all of ``msg`` on ``sock``, calling ``send`` until every byte is out.

    Raises:
        RuntimeError: ``'Socket connection broken!'`` when ``send`` sends
            nothing, as the original.
    """
    view = memoryview(msg)
    while view:
        sent = sock.send(view)
        if sent == 0:
            raise RuntimeError("Socket connection broken!")
        view = view[sent:]


def read_from_socket(sock: socket.socket, size: int, blocksize: int = 2048) -> bytes:
    """Read exactly ``size`` bytes from ``sock``, at most ``blocksize`` per ``recv``.

    Raises:
        RuntimeError: ``'Socket connection broken!'`` when the peer closes
            the connection first, as the original.
    """
    chunks = []
    missing = size
    while missing > 0:
        chunk = sock.recv(min(missing, blocksize))
        if not chunk:
            raise RuntimeError("Socket connection broken!")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def receive_payload(sock: socket.socket, blocksize: int = 2048) -> bytes:
    """Read exactly one frame from ``sock`` and return its payload, reading no byte beyond it."""
    header = read_from_socket(sock, HEADER_SIZE, blocksize=blocksize)
    return read_from_socket(sock, int.from_bytes(header, "little"), blocksize=blocksize)
