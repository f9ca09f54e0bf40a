"""The optional C loop of a broadcast's send(2) calls (skyllh_cluster.master._sendmany).

Over real sockets: every result is what ``socket.send`` would have returned,
or minus the errno it would have raised.
"""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from skyllh_cluster.master import node as node_module

sendmany = pytest.importorskip("skyllh_cluster.master._sendmany") if sys.platform != "linux" else None
if sendmany is None:  # on Linux the package is built with it: its absence is a failure, not a skip
    from skyllh_cluster.master import _sendmany as sendmany


def test_the_engine_uses_the_c_loop_where_it_is_built():
    assert node_module.native_send_each is sendmany.send_each


def test_each_socket_gets_the_bytes_in_order():
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        assert sendmany.send_each([ours.fileno() for ours, _ in pairs], b"frame") == [5] * 5
        assert sendmany.send_each((ours.fileno() for ours, _ in pairs[:2]), memoryview(b"xy")) == [2, 2]
        for index, (_, theirs) in enumerate(pairs):
            assert theirs.recv(16) == (b"framexy" if index < 2 else b"frame")
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_failures_come_back_as_minus_errno_and_do_not_stop_the_others():
    full, full_peer = socket.socketpair()
    gone, gone_peer = socket.socketpair()
    fine, fine_peer = socket.socketpair()
    closed = socket.socket()
    closed_fd = closed.fileno()
    closed.close()
    gone_peer.close()
    full.setblocking(False)
    try:
        while True:  # fill the buffer: the next send would block
            full.send(b"x" * 65536)
    except BlockingIOError:
        pass
    try:
        results = sendmany.send_each([full.fileno(), gone.fileno(), closed_fd, fine.fileno()], b"abc")
        assert results == [-errno.EAGAIN, -errno.EPIPE, -errno.EBADF, 3]
        assert fine_peer.recv(3) == b"abc"
        # The engine turns them into what socket.send gives: 0 for a full buffer, else the error.
        outcomes = [node_module.outcome_of_send(taken) for taken in results]
        assert outcomes[0] == 0 and outcomes[3] == 3
        assert isinstance(outcomes[1], BrokenPipeError) and outcomes[1].errno == errno.EPIPE
        assert isinstance(outcomes[2], OSError) and outcomes[2].errno == errno.EBADF
    finally:
        for sock in (full, full_peer, gone, fine, fine_peer):
            sock.close()


def test_a_socket_that_takes_part_of_the_frame_says_how_much():
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        (taken,) = sendmany.send_each([ours.fileno()], b"z" * 1_000_000)
        assert 0 < taken < 1_000_000
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize(
    "fds, data, error",
    [
        ([-1], b"x", ValueError),
        ([2**40], b"x", (ValueError, OverflowError)),
        (["3"], b"x", TypeError),
        (3, b"x", TypeError),
        ([0], "text", TypeError),
    ],
)
def test_bad_arguments_raise_before_anything_is_sent(fds, data, error):
    with pytest.raises(error):
        sendmany.send_each(fds, data)


def test_nothing_to_send_to():
    assert sendmany.send_each([], b"x") == []
