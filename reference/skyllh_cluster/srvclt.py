"""Blocking socket helpers with the names and signatures of ``skyllh.cluster.srvclt``.

This is the seed's thin layer between a connected TCP socket and whole
frames (spec section 2).  The frame I/O itself lives in
:mod:`skyllh_cluster.blocking` (below the commands, which send and receive
with it) and the framing rules in :mod:`skyllh_cluster.wire.framing`; this
module gives them the original's names.

What differs from the original:

* :func:`receive_object_from_socket` decodes with the safe decoder
  (:func:`skyllh_cluster.commands.receive_command_from_socket`, the same
  core as :func:`skyllh_cluster.codec.loads`), never with :mod:`pickle`, so a peer
  can no longer make this process run code.  A payload outside the profile
  raises :class:`~skyllh_cluster.errors.RemoteProtocolError`.
* :attr:`Message.length` counts the bytes of the encoded message, so a
  ``str`` with non-ASCII characters gets a correct length prefix (the
  original counted characters).
* :meth:`Message.as_socket_msg` refuses a message over 65535 bytes with
  :class:`~skyllh_cluster.errors.LocalProtocolError` (FRM-2) instead of an
  ``OverflowError``, and an empty one (FRM-3); in both cases before anything
  is sent.
"""

from __future__ import annotations

import socket

from .blocking import Message, read_from_socket, send_to_socket
from .commands import Command, receive_command_from_socket

__all__ = [
    "Message",
    "send_to_socket",
    "read_from_socket",
    "receive_object_from_socket",
]


def receive_object_from_socket(sock: socket.socket, blocksize: int = 2048) -> Command:
    """Read one frame from ``sock`` and decode its payload safely into a command.

    Raises:
        RemoteProtocolError: the payload is outside the profile.  Its offset
            counts from the first byte of the frame (the length prefix).
        RuntimeError: ``'Socket connection broken!'`` when the peer closes
            the connection first.
    """
    return receive_command_from_socket(sock, blocksize=blocksize)
