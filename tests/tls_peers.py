"""Test peers for the TLS and allow-list tests: raw sockets that write and read exact bytes, unpickling nothing."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Optional, Tuple

from master_peers import WAIT, RawNode


class TLSPeer(RawNode):
    """A raw compute node inside TLS (``read_exact`` and ``close`` as :class:`RawNode`'s)."""

    def __init__(self, address: Tuple[str, int], context: ssl.SSLContext, rcvbuf: Optional[int] = None) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting: the window is then small from the start
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(WAIT)
        try:
            raw.connect(address)
            self.sock = context.wrap_socket(raw, server_hostname=address[0])
        except BaseException:
            raw.close()
            raise
        self.reset = False

    def read_to_end(self) -> Tuple[bytes, Optional[BaseException]]:
        """Every application byte until the master closes, and the error that ended it, if any."""
        chunks = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except (ssl.SSLError, ConnectionError) as exc:
                return b"".join(chunks), exc
            if not chunk:
                return b"".join(chunks), None
            chunks.append(chunk)
        raise TimeoutError("the master did not close the connection")


class SourcePeer(RawNode):
    """A raw plain peer whose connection comes from ``source`` (another loopback address)."""

    def __init__(self, address: Tuple[str, int], source: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        try:
            self.sock.bind((source, 0))
            self.sock.connect(address)
        except BaseException:
            self.sock.close()
            raise
        self.reset = False


def received_from(address: Tuple[str, int], source: str, data: bytes = b"") -> bytes:
    """Connect from ``source``, send ``data``, and return every byte the master sends before it closes.

    A master that resets the connection at once may do so before
    ``connect`` returns, or while ``data`` is sent: that, too, is nothing received.
    """
    try:
        peer = SourcePeer(address, source)
    except ConnectionError:
        return b""
    try:
        try:
            peer.send(data)
        except ConnectionError:
            pass
        return peer.read_to_eof()
    finally:
        peer.close()
