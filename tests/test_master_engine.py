"""The master's engine (skyllh_cluster.master.server) against raw peers on 127.0.0.1.

Every hardening item of the master has a test here: bad peers during
registration (stalled mid-frame, garbage, wrong first command, malicious
pickle) are closed without an ACK and logged while the others register;
dead nodes during a broadcast; expired live times; registration timeouts;
slow readers.  Expected bytes come from the original's classes.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time

import pytest
from master_peers import (
    GOLDEN_ACK,
    GOLDEN_SHUTDOWN,
    WAIT,
    Background,
    frame,
    RawNode,
    malicious_frame,
    msg_frame,
    open_fds,
    wait_for,
)

from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN
from skyllh_cluster.errors import LocalProtocolError, RemoteProtocolError
from skyllh_cluster.master import (
    BroadcastResult,
    MasterServer,
    PeerClosedError,
    RegistrationTimeout,
    SendTimeoutError,
)
from skyllh_cluster.master import fanout
from skyllh_cluster.master.fdlimit import ensure_fd_limit
from skyllh_cluster.protocol import Connection
from skyllh_cluster.protocol.states import State

LOGGER = "skyllh_cluster.master.server"


@pytest.fixture
def server():
    with MasterServer(registration_timeout=WAIT) as engine:
        engine.listen("127.0.0.1", 0)
        yield engine


@pytest.fixture(params=["C loop", "Python loop"])
def send_path(request, monkeypatch):
    """Run a broadcast test with each way of making the sends (see master/_sendmany.c)."""
    from skyllh_cluster.master import node as node_module

    if request.param == "Python loop":  # the documented test hook of master/node.py
        monkeypatch.setattr(node_module, "native_send_each", None)
    elif node_module.native_send_each is None:  # pragma: no cover - tests/test_sendmany.py fails then on Linux
        pytest.skip("the C loop is not built here")
    return request.param


def register_nodes(engine: MasterServer, count: int, **register_kwargs):
    """Register ``count`` well-behaved raw nodes; return them with their ACKs read."""
    call = Background(lambda: engine.register(count, timeout=WAIT, **register_kwargs))
    nodes = [RawNode(engine.address).register() for _ in range(count)]
    call.result()
    for node in nodes:
        assert node.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
    return nodes


def assert_closed_without_ack(node: RawNode) -> None:
    assert node.read_to_eof() == b""


# --- registration -------------------------------------------------------------------------


def test_a_registration_is_answered_with_the_original_ack_bytes(server):
    progress = []
    (node,) = register_nodes(server, 1, progress=lambda n, count: progress.append((n.key, count)))
    (registered,) = server.nodes
    assert registered.key == node.key
    assert registered.registration == RegisterCN(registered.registration.cn_start_time, 7200)
    assert progress == [(node.key, 1)]
    assert server.address is None  # listening stopped after n registrations, as the original


TCP_INFO_SEGS_IN = 140  # offset of tcpi_segs_in in Linux's struct tcp_info (since 4.2)


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_the_ack_of_a_registercn_rides_on_the_ack_frame(server):
    from skyllh_cluster.master import server as server_module

    assert server_module.DELAYED_ACK
    (node,) = register_nodes(server, 1)
    # A new socket says 1; the accepted one inherited 0 from the listener.
    (accepted,) = server.connections
    assert accepted.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0
    # The accepted connection inherited delayed ACKs from the listener, so
    # the node received two segments in all: the SYN-ACK and the ACK frame,
    # which acknowledged its RegisterCN (no pure ACK before it).  The kernel
    # would send a pure ACK only if the master took longer than its
    # delayed-ACK timer (40 ms or more) to answer.
    info = node.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    assert int.from_bytes(info[TCP_INFO_SEGS_IN : TCP_INFO_SEGS_IN + 4], "little") == 2


def test_the_listening_socket_is_closed_after_n_registrations(server):
    address = server.address
    register_nodes(server, 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=WAIT)


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_registration_split_into_single_bytes_or_pipelined(server, pipelined):
    from master_peers import register_frame

    call = Background(lambda: server.register(1, timeout=WAIT))
    node = RawNode(server.address)
    data = register_frame()
    if pipelined:
        node.send(data)
    else:
        for i in range(len(data)):
            node.send(data[i : i + 1])
            time.sleep(0.001)
    call.result()
    assert node.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK


def test_bad_peers_are_closed_without_ack_and_logged_while_others_register(server, caplog, tmp_path):
    canary = tmp_path / "canary"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    call = Background(lambda: server.register(2, timeout=WAIT))
    garbage = RawNode(server.address).send(b"\x05\x00hello")
    wrong_first = RawNode(server.address).send(GOLDEN_ACK)
    malicious = RawNode(server.address).send(malicious_frame(str(canary)))
    old_style = RawNode(server.address).send(
        frame(pickle.dumps(__import__("master_peers").MaliciousReduce(f"touch {canary}"), protocol=2))
    )
    stalled = RawNode(server.address).send(b"\x66\x00\x80\x04")  # 4 bytes of a 104-byte frame
    for bad in (garbage, wrong_first, malicious, old_style):
        assert_closed_without_ack(bad)
    good = [RawNode(server.address).register() for _ in range(2)]
    call.result()
    for node in good:
        assert node.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
    # The stalled node never finished its frame: closed, without an ACK, when listening stopped.
    assert_closed_without_ack(stalled)
    assert not canary.exists()
    assert {n.key for n in server.nodes} == {n.key for n in good}
    text = caplog.text
    for bad in (garbage, wrong_first, malicious, old_style):
        assert f"closed the connection from {bad.key} without ACK" in text
    assert "[MST-3]" in text  # the wrong first command names its clause
    assert "[ENC-" in text  # so do the undecodable payloads


def test_a_stalled_node_is_closed_after_the_registration_timeout(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with MasterServer(registration_timeout=0.3) as engine:
        engine.listen("127.0.0.1", 0)
        call = Background(lambda: engine.register(1, timeout=WAIT))
        stalled = RawNode(engine.address).send(b"\x66\x00\x80")
        silent = RawNode(engine.address)
        assert_closed_without_ack(stalled)
        assert_closed_without_ack(silent)
        good = RawNode(engine.address).register()
        call.result()
        assert good.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
    assert "[MST-7]" in caplog.text
    assert "stalled inside a frame" in caplog.text
    assert "stalled before its first frame" in caplog.text


def test_registration_timeout_names_how_many_registered(server):
    call = Background(lambda: server.register(3, timeout=0.5))
    node = RawNode(server.address).register()
    with pytest.raises(RegistrationTimeout) as info:
        call.result()
    assert str(info.value) == "only 1 of 3 compute nodes registered within 0.5 s"
    assert (info.value.registered, info.value.n_cn, info.value.timeout) == (1, 3, 0.5)
    assert isinstance(info.value, TimeoutError)
    assert node.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
    assert [n.key for n in server.nodes] == [node.key]


def test_a_registration_beyond_n_gets_no_ack(server):
    # Both RegisterCN frames wait in the kernel before register() starts, so
    # they are read in one round; the second finds the registry full.
    nodes = [RawNode(server.address).register() for _ in range(2)]
    time.sleep(0.2)
    server.register(1, timeout=WAIT)
    received = sorted(node.sock.recv(100) for node in nodes)  # an ACK arrives whole on loopback
    assert received == [b"", GOLDEN_ACK]


def test_a_registered_node_that_leaves_is_replaced_before_registration_ends(server, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    call = Background(lambda: server.register(2, timeout=WAIT))
    first = RawNode(server.address).register()
    assert first.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
    key = first.key
    first.close()
    wait_for(lambda: f"compute node {key} lost" in caplog.text, "the master to notice")
    others = [RawNode(server.address).register() for _ in range(2)]
    call.result()
    assert {n.key for n in server.nodes} == {n.key for n in others}


def test_register_needs_listen_and_a_sane_count():
    with MasterServer() as engine:
        with pytest.raises(RuntimeError, match="listen"):
            engine.register(1)
        with pytest.raises(ValueError):
            engine.register(-1)
        engine.listen("127.0.0.1", 0)
        with pytest.raises(RuntimeError, match="already listening"):
            engine.listen("127.0.0.1", 0)
        assert engine.register(0) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"blocksize": 0},
        {"blocksize": True},
        {"registration_timeout": 0},
        {"unregistered_fraction": 0},
        {"unregistered_fraction": 1.5},
        {"slow_node_wait": -1},
        {"max_queued": -1},
    ],
)
def test_bad_engine_arguments(kwargs):
    with pytest.raises(ValueError):
        MasterServer(**kwargs)


def test_listen_failure_closes_the_socket():
    with MasterServer() as first, MasterServer() as second:
        host, port = first.listen("127.0.0.1", 0)
        before = open_fds()
        with pytest.raises(OSError):
            second.listen(host, port)
        assert open_fds() == before


# --- broadcasting ---------------------------------------------------------------------------


@pytest.mark.usefixtures("send_path")
def test_broadcast_encodes_once_and_every_node_gets_the_original_bytes(server, monkeypatch):
    nodes = register_nodes(server, 3)
    from skyllh_cluster.protocol import connection as connection_module

    encoded = []
    real = connection_module.dumps
    monkeypatch.setattr(connection_module, "dumps", lambda c: encoded.append(c) or real(c))
    result = server.broadcast(MSG({"trial": 1, "seed": [1, 2.5, None]}))
    assert encoded == [MSG({"trial": 1, "seed": [1, 2.5, None]})]
    assert result == BroadcastResult("MSG", tuple(n.key for n in nodes), {}, ())
    expected = msg_frame({"trial": 1, "seed": [1, 2.5, None]})
    for node in nodes:
        assert node.read_exact(len(expected)) == expected


@pytest.mark.usefixtures("send_path")
def test_dead_nodes_do_not_stop_a_broadcast_and_are_reported(server, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = register_nodes(server, 5)
    engine_nodes = {n.key: n for n in server.nodes}
    closed, reset = nodes[1], nodes[3]
    closed_key, reset_key = closed.key, reset.key
    closed.close()
    reset.abort()
    time.sleep(0.1)
    result = server.broadcast(MSG("hello"))
    assert result.delivered == (nodes[0].key, nodes[2].key, nodes[4].key)
    assert set(result.failed) == {closed_key, reset_key}
    assert isinstance(result.failed[closed_key], PeerClosedError)
    assert isinstance(result.failed[reset_key], (PeerClosedError, ConnectionResetError))
    assert not result.ok
    for node in (nodes[0], nodes[2], nodes[4]):
        assert node.read_exact(69) == msg_frame("hello")
    assert len(server.nodes) == 3
    # A failed node stays failed, with its cause, when a broadcast names it again.
    again = server.broadcast(MSG("again"), [engine_nodes[closed_key]])
    assert again.failed == {closed_key: result.failed[closed_key]}


@pytest.mark.usefixtures("send_path")
def test_a_write_error_fails_only_that_node(server):
    nodes = register_nodes(server, 3)
    broken = server.nodes[1]
    broken.sock.shutdown(socket.SHUT_WR)  # every send on it now raises BrokenPipeError
    result = server.broadcast(MSG("x"))
    assert result.delivered == (nodes[0].key, nodes[2].key)
    assert isinstance(result.failed[nodes[1].key], BrokenPipeError)
    for node in (nodes[0], nodes[2]):
        assert node.read_exact(len(msg_frame("x"))) == msg_frame("x")


def test_a_node_that_speaks_after_registering_is_dropped(server, caplog):
    # Logged at INFO: inside a broadcast the result reports the loss (one line for a CLI user).
    caplog.set_level(logging.INFO, logger=LOGGER)
    nodes = register_nodes(server, 2)
    nodes[0].send(GOLDEN_ACK)  # a compute node sends nothing after RegisterCN (CN-5, MST-11)
    time.sleep(0.1)
    result = server.broadcast(MSG(1))
    error = result.failed[nodes[0].key]
    assert isinstance(error, RemoteProtocolError) and error.clause == "MST-11"
    assert result.delivered == (nodes[1].key,)
    assert nodes[0].read_to_eof() == b""
    assert "[MST-11]" in caplog.text


@pytest.mark.usefixtures("send_path")
def test_an_expired_node_is_dropped_and_sent_nothing(server, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    call = Background(lambda: server.register(2, timeout=WAIT))
    live = RawNode(server.address).register()
    expired = RawNode(server.address).register(start=int(time.time()) - 100, live=10)
    call.result()
    result = server.broadcast(MSG("x"))
    assert result.expired == (expired.key,)
    assert result.delivered == (live.key,)
    assert result.ok
    assert expired.read_to_eof() == GOLDEN_ACK  # the ACK, then nothing: closed
    assert live.read_exact(len(GOLDEN_ACK) + len(msg_frame("x"))) == GOLDEN_ACK + msg_frame("x")
    assert [n.key for n in server.nodes] == [live.key]
    assert "live time passed" in caplog.text


@pytest.fixture
def patient_server():
    """An engine whose broadcasts wait for a node that falls behind (up to WAIT) instead of queueing."""
    with MasterServer(registration_timeout=WAIT, slow_node_wait=WAIT) as engine:
        engine.listen("127.0.0.1", 0)
        yield engine


@pytest.mark.usefixtures("send_path")
def test_a_slow_reader_is_written_to_as_it_reads(patient_server):
    server = patient_server
    call = Background(lambda: server.register(1, timeout=WAIT))
    slow = RawNode(server.address, rcvbuf=4096).register()
    call.result()
    server.nodes[0].sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # partial writes
    big = "x" * 60000
    expected = GOLDEN_ACK + msg_frame(big) * 3
    reader = Background(lambda: (time.sleep(0.3), slow.read_exact(len(expected)))[1])
    for _ in range(3):
        result = server.broadcast(MSG(big), timeout=WAIT)
        assert result.delivered == (slow.key,)
    assert reader.result() == expected


@pytest.mark.usefixtures("send_path")
def test_a_node_that_does_not_read_fails_after_the_send_timeout(server):
    call = Background(lambda: server.register(2, timeout=WAIT))
    stuck = RawNode(server.address, rcvbuf=4096).register()
    good = RawNode(server.address).register()
    call.result()
    big = "y" * 60000
    drained = Background(good.read_to_eof)  # the good node keeps reading
    failures = {}
    for _ in range(200):  # bounded: the kernel's buffers fill after a few frames
        result = server.broadcast(MSG(big), timeout=0.2)
        failures.update(result.failed)
        if failures:
            break
    assert list(failures) == [stuck.key]
    assert isinstance(failures[stuck.key], SendTimeoutError)
    assert [n.key for n in server.nodes] == [good.key]
    server.shutdown()
    received = drained.result()
    assert received.startswith(GOLDEN_ACK + msg_frame(big)) and received.endswith(GOLDEN_SHUTDOWN)


@pytest.mark.usefixtures("send_path")
def test_shutdown_sends_shutdowncn_and_closes_every_connection(server):
    nodes = register_nodes(server, 3)
    result = server.shutdown()
    assert result.delivered == tuple(n.key for n in nodes) and result.command == "ShutdownCN"
    for node in nodes:
        assert node.read_to_eof() == GOLDEN_SHUTDOWN  # MST-6: closed after it
    assert server.nodes == [] and server.connections == []


def test_nothing_is_sent_after_shutdown(server):
    raw = register_nodes(server, 1)  # noqa: F841  (kept open)
    (node,) = server.nodes
    server.shutdown()
    result = server.broadcast(MSG("late"), [node])
    assert isinstance(result.failed[node.key], PeerClosedError)


def test_a_command_the_state_forbids_fails_that_node(server):
    raw = register_nodes(server, 1)  # noqa: F841  (kept open)
    (node,) = server.nodes
    result = server.broadcast(ACK(), [node])
    assert isinstance(result.failed[node.key], LocalProtocolError)


def test_a_command_too_large_for_a_frame_is_refused_before_anything_is_sent(server):
    (raw,) = register_nodes(server, 1)
    with pytest.raises(LocalProtocolError) as info:
        server.broadcast(MSG(b"z" * 70000))
    assert info.value.clause == "FRM-2"
    server.shutdown()
    assert raw.read_to_eof() == GOLDEN_SHUTDOWN


@pytest.mark.usefixtures("send_path")
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_broadcasts_on_fanout_threads(monkeypatch, threads):
    monkeypatch.setattr(fanout, "PARALLEL_MINIMUM", 2)
    monkeypatch.setattr(fanout, "CHUNK", 2)  # the five nodes go out in three chunks
    with MasterServer(registration_timeout=WAIT, send_threads=threads) as engine:
        engine.listen("127.0.0.1", 0)
        nodes = register_nodes(engine, 5)
        nodes[2].close()
        time.sleep(0.1)
        result = engine.broadcast(MSG("fan"))
        assert set(result.delivered) == {n.key for i, n in enumerate(nodes) if i != 2}
        for i, node in enumerate(nodes):
            if i != 2:
                assert node.read_exact(len(msg_frame("fan"))) == msg_frame("fan")


class _ScriptedTime:
    """The engine's clock and sleep, advanced by its naps only."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.naps: list = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


class _ScriptedPoller:
    """Reports an event at the given polls; records each poll's timeout; stops the engine after ``polls``.

    The event is for the first token the engine registered (its wake-up
    pipe): a spurious readiness, which the engine must take in its stride.
    """

    def __init__(self, ready_at: set, polls: int) -> None:
        self.timeouts: list = []
        self.tokens: list = []
        self.engine: "MasterServer | None" = None
        self._ready_at, self.polls = ready_at, polls

    def poll(self, timeout):
        self.timeouts.append(timeout)
        if len(self.timeouts) >= self.polls:
            self.engine.stop()  # type: ignore[union-attr]
        return [(self.tokens[0], 1)] if len(self.timeouts) - 1 in self._ready_at else []

    def register(self, fd, events, data) -> None:
        self.tokens.append(data)

    def unregister(self, fd) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("ready_at", [{0}, {0, 10}], ids=["one event", "a second event mid-burst"])
def test_the_loop_naps_during_a_burst_and_blocks_again_after_it(monkeypatch, ready_at):
    from skyllh_cluster.master import server as server_module

    clock = _ScriptedTime()
    monkeypatch.setattr(server_module, "time", clock)
    poller = _ScriptedPoller(ready_at, polls=60)
    with MasterServer(poller=poller) as engine:  # the documented test hook
        poller.engine = engine
        engine.listen("127.0.0.1", 0)
        assert engine.serve_script([]) == 0  # runs the loop until the poller stops it
    timeouts = poller.timeouts
    # Blocks while idle; after each event, polls without blocking and naps on
    # its own timer instead of waiting to be woken, until BURST_QUIET passes.
    assert timeouts[0] == server_module.MAX_WAIT
    blocking = [index for index, timeout in enumerate(timeouts) if timeout > 0]
    assert blocking[0] == 0 and len(blocking) > 1
    nap_polls = timeouts[1 : blocking[1]]
    assert nap_polls and set(nap_polls) == {0.0} and len(clock.naps) == len(nap_polls) - len(ready_at - {0})
    assert set(clock.naps) == {server_module.BURST_NAP}
    last_event = max(ready_at)
    napped_after_last_event = sum(1 for index in range(last_event + 1, blocking[1]))
    assert napped_after_last_event * server_module.BURST_NAP == pytest.approx(server_module.BURST_QUIET, abs=2 * server_module.BURST_NAP)
    assert set(timeouts[blocking[1]:]) == {server_module.MAX_WAIT}  # the burst is over: blocks again


# --- sending to one node ------------------------------------------------------------------


def test_send_now_writes_and_closes_after_shutdowncn(server):
    (raw,) = register_nodes(server, 1)
    (node,) = server.nodes
    server.send_now(node, MSG("one"), timeout=WAIT)
    server.send_now(node, ShutdownCN())
    assert raw.read_to_eof() == msg_frame("one") + GOLDEN_SHUTDOWN
    with pytest.raises(PeerClosedError):
        server.send_now(node, MSG("two"))


def test_send_now_raises_the_write_error(server):
    raw = register_nodes(server, 1)  # noqa: F841  (kept open)
    (node,) = server.nodes
    node.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(BrokenPipeError):
        server.send_now(node, MSG("x"))
    assert node.closed


def test_send_now_times_out_on_a_node_that_does_not_read(server):
    call = Background(lambda: server.register(1, timeout=WAIT))
    raw = RawNode(server.address, rcvbuf=4096).register()  # noqa: F841  (kept open, never read)
    call.result()
    (node,) = server.nodes
    with pytest.raises(SendTimeoutError):
        for _ in range(200):  # bounded; the buffers fill after a few frames
            server.send_now(node, MSG("w" * 60000), timeout=0.2)
    assert node.closed


# --- the scenario -----------------------------------------------------------------------------


def test_serve_script_serves_nodes_concurrently_until_stopped(server):
    script = [MSG("a"), MSG(b"\x00"), MSG([1, (2, 3)])]
    call = Background(lambda: server.serve_script(script))
    expected = GOLDEN_ACK + msg_frame("a") + msg_frame(b"\x00") + msg_frame([1, (2, 3)]) + GOLDEN_SHUTDOWN
    first, second = RawNode(server.address).register(), RawNode(server.address).register()
    bad = RawNode(server.address).send(GOLDEN_SHUTDOWN)
    assert first.read_to_eof() == expected
    assert second.read_to_eof() == expected
    assert bad.read_to_eof() == b""
    third = RawNode(server.address).register()
    assert third.read_to_eof() == expected
    server.stop()
    assert call.result() == 3
    assert server.served == 3


def test_stop_is_safe_when_the_wakeup_is_already_pending():
    engine = MasterServer()
    engine.stop()  # nothing to wake yet: ignored
    engine.listen("127.0.0.1", 0)
    for served in (1, 2):  # the second serve_script reuses the wake-up pair, with wake-ups still pending
        call = Background(lambda: engine.serve_script([]))
        node = RawNode(engine.address).register()  # served: the loop runs
        assert node.read_to_eof() == GOLDEN_ACK + GOLDEN_SHUTDOWN
        for _ in range(100_000):  # more than the socket buffer holds
            engine.stop()
        assert call.result() == served  # (the count is the engine's, over every call)
    engine.close()
    engine.stop()  # closed: ignored
    engine.close()  # idempotent


# --- resources ----------------------------------------------------------------------------------


def test_every_descriptor_is_released_on_close():
    before = open_fds()
    engine = MasterServer(registration_timeout=WAIT)
    engine.listen("127.0.0.1", 0)
    nodes = register_nodes(engine, 3)
    nodes[0].close()
    engine.close()
    assert open_fds() == before + 2  # the two raw nodes still open on the test's side
    for node in nodes[1:]:
        assert node.read_to_eof() == b""
        node.close()
    assert open_fds() == before


def test_adopt_and_discard_a_node_made_elsewhere(server):  # noqa: D103
    from skyllh_cluster.master import Node

    listener = socket.create_server(("127.0.0.1", 0))
    raw = RawNode(listener.getsockname())
    accepted, peer = listener.accept()
    listener.close()
    node = Node(accepted, peer[0], peer[1], Connection.registered_elsewhere(RegisterCN(int(time.time()), 100)), time.monotonic())
    server.adopt(node)
    assert node.connection.state is State.SERVING
    assert server.broadcast(MSG("adopted"), [node]).delivered == (node.key,)
    assert raw.read_exact(len(msg_frame("adopted"))) == msg_frame("adopted")
    server.discard(node)
    server.discard(node)  # once closed, a no-op
    assert raw.read_to_eof() == b""


def test_ensure_fd_limit_raises_the_soft_limit_only_up_to_the_hard_one():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert ensure_fd_limit(100) == 256  # never lowered
        assert ensure_fd_limit(300) == 300
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 300
        wanted = hard + 1 if hard != resource.RLIM_INFINITY else 10**6
        assert ensure_fd_limit(wanted) == min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        assert ensure_fd_limit(hard + 10) == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("send_path")
def test_a_frame_queued_behind_unsent_bytes_keeps_its_order(server):
    call = Background(lambda: server.register(1, timeout=WAIT))
    raw = RawNode(server.address, rcvbuf=4096).register()
    call.result()
    (node,) = server.nodes
    node.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    first, second = msg_frame("a" * 60000), msg_frame("b")
    assert node.connection.send(MSG("a" * 60000)) == first
    assert node.write(first) is False and node.has_queued and node.pending > 0
    assert node.write(b"") is False  # queued behind, nothing overtakes
    reader = Background(lambda: raw.read_exact(len(GOLDEN_ACK) + len(first) + len(second)))
    assert server.broadcast(MSG("b"), timeout=WAIT).delivered == (raw.key,)
    assert reader.result() == GOLDEN_ACK + first + second
    assert repr(node) == f"<Node {raw.key} SERVING>"


def test_registered_nodes_leave_the_timeout_queue_quietly(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with MasterServer(registration_timeout=0.2) as engine:
        engine.listen("127.0.0.1", 0)
        call = Background(lambda: engine.register(2, timeout=WAIT))
        early = RawNode(engine.address).register()
        time.sleep(0.5)  # the early node's registration deadline passes while registration goes on
        late = RawNode(engine.address).register()
        call.result()
        assert {n.key for n in engine.nodes} == {early.key, late.key}
    assert "MST-7" not in caplog.text


def test_accepting_pauses_when_descriptors_run_out(caplog, monkeypatch):
    import resource
    import threading

    from skyllh_cluster.master import server as server_module

    monkeypatch.setattr(server_module, "ensure_fd_limit", lambda wanted: wanted)  # keep the low limit
    caplog.set_level(logging.ERROR, logger=LOGGER)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with MasterServer(registration_timeout=WAIT) as engine:
        engine.listen("127.0.0.1", 0)
        nodes = [RawNode(engine.address).register() for _ in range(3)]  # wait in the backlog
        restore = threading.Timer(0.3, lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
        try:
            first_free = os.dup(0)
            second_free = os.dup(0)
            os.close(first_free)
            os.close(second_free)
            resource.setrlimit(resource.RLIMIT_NOFILE, (second_free, hard))  # room for one accept
            restore.start()
            engine.register(3, timeout=WAIT)
        finally:
            restore.cancel()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for node in nodes:
            assert node.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
    assert "cannot accept connections" in caplog.text


# --- load shedding (F8) and slow nodes (F9) ------------------------------------------------------


def test_the_registration_bound_is_3_s_by_default():
    import inspect

    assert inspect.signature(MasterServer).parameters["registration_timeout"].default == 3.0


def test_at_the_cap_the_oldest_unregistered_connection_is_shed_and_logged_once(caplog):
    import resource

    caplog.set_level(logging.WARNING, logger=LOGGER)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    with MasterServer(registration_timeout=WAIT, unregistered_fraction=8 / soft) as engine:
        engine.listen("127.0.0.1", 0)
        call = Background(lambda: engine.register(1, timeout=WAIT))
        wait_for(lambda: engine.unregistered_cap == 8, "the cap to be set")
        silent = [RawNode(engine.address) for _ in range(20)]
        # The first silent connections are shed, oldest first, as the later ones come in.
        assert silent[0].read_to_eof() == b""
        honest = RawNode(engine.address).register()
        assert honest.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
        assert [node.key for node in call.result()] == [honest.key]
    shed_warnings = [r for r in caplog.records if "have not registered (the cap" in r.getMessage()]
    assert len(shed_warnings) == 1
    assert "unregistered connection(s) to stay under the cap" in caplog.text
    for node in silent:
        node.close()


@pytest.mark.usefixtures("send_path")
def test_a_node_that_falls_behind_is_queued_and_caught_up_in_later_calls(server):
    call = Background(lambda: server.register(2, timeout=WAIT))
    lagging = RawNode(server.address, rcvbuf=4096).register()
    fast = RawNode(server.address).register()
    call.result()
    big = "q" * 60000
    drained = Background(fast.read_to_eof)
    queued = None
    sent = 0
    for _ in range(200):  # bounded: the lagging node's buffers fill after a few frames
        result = server.broadcast(MSG(big), timeout=WAIT)
        sent += 1
        assert result.ok and fast.key in result.delivered
        if result.queued:
            queued = result
            break
    assert queued is not None and queued.queued == (lagging.key,) and lagging.key not in queued.delivered
    # Now it reads: the rest is written by the loop during the shutdown's call.
    reader = Background(lagging.read_to_eof)
    final = server.shutdown(timeout=WAIT)
    assert set(final.delivered) == {lagging.key, fast.key}
    expected = GOLDEN_ACK + msg_frame(big) * sent + GOLDEN_SHUTDOWN
    assert reader.result() == expected
    assert drained.result() == expected


@pytest.mark.usefixtures("send_path")
def test_a_node_over_max_queued_fails_alone_even_without_a_timeout():
    with MasterServer(registration_timeout=WAIT, max_queued=200_000, slow_node_wait=0) as engine:
        engine.listen("127.0.0.1", 0)
        call = Background(lambda: engine.register(2, timeout=WAIT))
        stuck = RawNode(engine.address, rcvbuf=4096).register()
        good = RawNode(engine.address).register()
        call.result()
        drained = Background(good.read_to_eof)
        big = "y" * 60000
        failures = {}
        for _ in range(300):  # bounded; the stuck node never reads
            result = engine.broadcast(MSG(big), timeout=None)
            failures.update(result.failed)
            if failures:
                break
        assert list(failures) == [stuck.key]
        assert isinstance(failures[stuck.key], SendTimeoutError) and "queued" in str(failures[stuck.key])
        engine.shutdown(timeout=WAIT)
        assert drained.result().endswith(GOLDEN_SHUTDOWN)
