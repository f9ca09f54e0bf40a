"""The master's pollers: epoll on Linux and the selectors fallback report the same readiness.

Each test runs on both, over real socket pairs, so that the fallback other
operating systems get is checked against the one the engine uses here.
"""

from __future__ import annotations

import select
import socket
from typing import Iterator, List, Optional, Tuple

import pytest

from skyllh_cluster.master.poller import READ, WRITE, DefaultPoller, EpollPoller, SelectorsPoller

POLLERS = [SelectorsPoller] + ([EpollPoller] if hasattr(select, "epoll") else [])


@pytest.fixture(params=POLLERS, ids=lambda kind: kind.__name__)
def poller(request) -> Iterator:
    made = request.param()
    yield made
    made.close()


@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_the_default_is_epoll_where_the_os_has_it():
    assert DefaultPoller is (EpollPoller if hasattr(select, "epoll") else SelectorsPoller)


def test_nothing_is_ready_until_data_arrives(poller, pair):
    ours, theirs = pair
    poller.register(ours.fileno(), READ, "node")
    assert poller.poll(0) == []
    theirs.send(b"x")
    assert poller.poll(1.0) == [("node", READ)]


def test_writable_is_reported_only_while_watched(poller, pair):
    ours, _ = pair
    poller.register(ours.fileno(), READ, "node")
    assert poller.poll(0) == []
    poller.modify(ours.fileno(), READ | WRITE, "flushing")
    assert poller.poll(0) == [("flushing", WRITE)]
    poller.modify(ours.fileno(), READ, "node")
    assert poller.poll(0) == []


def test_a_closed_peer_is_readable(poller, pair):
    ours, theirs = pair
    poller.register(ours.fileno(), READ, "node")
    theirs.close()
    assert poller.poll(1.0) == [("node", READ)]


def test_a_reset_peer_is_readable_and_writable_when_both_are_watched(poller):
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    try:
        # SO_LINGER 0: closing sends a reset, which epoll reports as EPOLLERR|EPOLLHUP.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        poller.register(accepted.fileno(), READ | WRITE, "node")
        client.close()
        ready: List[Tuple[object, int]] = []
        for _ in range(20):  # bounded: the reset arrives on loopback at once
            ready = poller.poll(0.1)
            if ready and ready[0][1] == READ | WRITE:
                break
        assert ready == [("node", READ | WRITE)]
    finally:
        accepted.close()


def test_unregistered_descriptors_are_not_reported(poller, pair):
    ours, theirs = pair
    poller.register(ours.fileno(), READ, "node")
    poller.unregister(ours.fileno())
    theirs.send(b"x")
    assert poller.poll(0) == []


def test_misuse_raises_key_error(poller, pair):
    ours, _ = pair
    with pytest.raises(KeyError):
        poller.unregister(ours.fileno())
    with pytest.raises(KeyError):
        poller.modify(ours.fileno(), READ, "node")
    poller.register(ours.fileno(), READ, "node")
    with pytest.raises(KeyError):
        poller.register(ours.fileno(), READ, "again")


def test_many_sockets_are_reported_in_one_poll(poller):
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        for index, (ours, theirs) in enumerate(pairs):
            poller.register(ours.fileno(), READ, index)
            theirs.send(b"x")
        assert sorted(data for data, _ in poller.poll(1.0)) == list(range(50))
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


class _RecordingEpoll:
    def __init__(self) -> None:
        self.timeouts: List[Optional[float]] = []

    def poll(self, timeout: float, maxevents: int) -> list:
        self.timeouts.append(timeout)
        return []


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")
@pytest.mark.parametrize(
    "asked, given",
    [(None, -1), (0, 0), (-3.0, 0), (0.0001, 0.001), (0.5, 0.5), (0.0015, 0.002)],
)
def test_epoll_timeouts_are_rounded_up_to_whole_milliseconds(asked, given):
    # epoll counts milliseconds: 0.1 ms rounded down would be a busy loop.
    recording = _RecordingEpoll()
    poller = EpollPoller(recording)  # the documented test hook
    assert poller.poll(asked) == []
    assert recording.timeouts == [pytest.approx(given)]
