"""Blocking reads that tests use on the raw sockets of their scripted peers."""

from __future__ import annotations

import socket


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes; fail the test if the peer closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the peer closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def recv_until_eof(sock: socket.socket) -> bytes:
    """Read until the peer closes (the socket's timeout bounds each read)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
