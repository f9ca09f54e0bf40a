"""ComputeNode and its program, against a scripted master on 127.0.0.1.

The scripted master is this test's own raw socket: it accepts the node,
checks the exact bytes of its RegisterCN against the original's encoding,
and sends exact frames (the golden ones from the facts file, or frames that
the original's classes pickle).  The node runs in a thread, or as the
program ``python -m skyllh_cluster.compute_node`` in a subprocess.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from skyllh.cluster import commands as original

from skyllh_cluster.codec import loads
from skyllh_cluster.commands import RegisterCN
from skyllh_cluster.compute_node import (
    DEFAULT_LIVE_TIME,
    ComputeNode,
    ComputeNodeError,
    MasterClosedConnection,
    RegistrationRefused,
    LiveTimeOverBeforeAck,
    OutputFormat,
    Stop,
    main,
    run_compute_node,
)
from skyllh_cluster.errors import RemoteProtocolError
from skyllh_cluster.protocol import connection as connection_module
from skyllh_cluster.protocol.states import State
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire.values import values_equal
from node_threads import NodeThread
from socket_reads import recv_exactly, recv_until_eof

TIMEOUT = 20.0
REFERENCE = Path(__file__).resolve().parent.parent / "reference"

# Golden frames, as the original sends them (shared/original-skyllh-cluster.md).
ACK_FRAME = bytes.fromhex(
    "310080049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e"
)
SHUTDOWN_FRAME = bytes.fromhex(
    "38008004952d000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a53687574646f776e434e9493942981942e"
)
REGISTER_FRAME = bytes.fromhex(
    "66008004955b000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a5265676973746572434e9493"
    "942981947d94288c0e5f636e5f73746172745f74696d65944a80c444678c0d5f636e5f6c6976655f74696d65944d201c75622e"
)
MSG_HELLO_FRAME = bytes.fromhex(
    "430080049538000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c034d53479493942981947d948c03"
    "6d7367948c0568656c6c6f9473622e"
)
GARBAGE_FRAME = b"\x05\x00hello"


def original_frame(command: Any) -> bytes:
    """The frame the original sends for one of its command objects."""
    payload = pickle.dumps(command, protocol=4)
    return len(payload).to_bytes(2, "little") + payload


def msg_frame(value: Any) -> bytes:
    return original_frame(original.MSG(value))


class RunsACommand:
    """Pickles to a call of os.system: what the original would run on receipt."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class ScriptedMaster:
    """A listening socket on 127.0.0.1 that plays the master byte by byte."""

    def __init__(self, backlog: int = 8) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.server.settimeout(TIMEOUT)
        self.port: int = self.server.getsockname()[1]
        self.conns: List[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _ = self.server.accept()
        conn.settimeout(TIMEOUT)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns.append(conn)
        return conn

    def accept_registration(self, live_time: int, started_after: float) -> socket.socket:
        """Accept a node and check that its first frame is the original's RegisterCN, byte for byte."""
        conn = self.accept()
        header = recv_exactly(conn, 2)
        frame = header + recv_exactly(conn, int.from_bytes(header, "little"))
        registration = loads(frame[2:])
        assert isinstance(registration, RegisterCN)
        start = registration.cn_start_time
        assert int(started_after) <= start <= time.time()
        assert frame == original_frame(original.RegisterCN(start, live_time))
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.server.close()


@pytest.fixture
def master() -> Iterator[ScriptedMaster]:
    scripted = ScriptedMaster()
    try:
        yield scripted
    finally:
        scripted.close()


def serve_frames(master: ScriptedMaster, frames: bytes, **options: Any) -> NodeThread:
    """Register a node, send ``frames`` after the ACK, and wait for the node to stop."""
    node = NodeThread(master.port, **options)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.sendall(ACK_FRAME + frames)
    node.finish()
    # The node closed its end and sent nothing after RegisterCN (CN-5).
    assert recv_until_eof(conn) == b""
    return node


def assert_values(received: List[Any], expected: List[Any]) -> None:
    assert len(received) == len(expected)
    for got, want in zip(received, expected):
        assert values_equal(got, want), (got, want)


# -- registration and serving -----------------------------------------------------------------
def test_registers_with_the_originals_bytes_and_serves_every_payload_until_shutdown(master) -> None:
    frames = MSG_HELLO_FRAME + b"".join(msg_frame(p) for p in SCENARIO_PAYLOADS) + SHUTDOWN_FRAME
    node = serve_frames(master, frames)
    assert node.error is None
    assert node.result is Stop.SHUTDOWN
    assert_values(node.messages, ["hello", *SCENARIO_PAYLOADS])
    assert node.node is not None and node.node.connection.state is State.CLOSED


def test_frames_split_into_single_bytes_are_reassembled(master) -> None:
    node = NodeThread(master.port)
    conn = master.accept_registration(node.live_time, node.started_at)
    stream = ACK_FRAME + MSG_HELLO_FRAME + msg_frame("ü") + SHUTDOWN_FRAME
    for i in range(len(stream)):
        conn.send(stream[i : i + 1])
        time.sleep(0.0005)  # give the node a chance to read each byte on its own
    node.finish()
    assert node.result is Stop.SHUTDOWN
    assert node.messages == ["hello", "ü"]


def test_coalesced_frames_are_separated(master) -> None:
    node = NodeThread(master.port)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.sendall(ACK_FRAME + MSG_HELLO_FRAME + msg_frame(b"\x00") + msg_frame(2**64) + SHUTDOWN_FRAME)
    node.finish()
    assert node.result is Stop.SHUTDOWN
    assert_values(node.messages, ["hello", b"\x00", 2**64])


def test_undecodable_frames_are_skipped_and_serving_goes_on(master, caplog, tmp_path) -> None:
    marker = tmp_path / "ran"
    evil = pickle.dumps(RunsACommand(marker), protocol=4)
    frames = (
        GARBAGE_FRAME
        + len(evil).to_bytes(2, "little")
        + evil
        + original_frame(original.Command())  # a class that is not one of the four commands
        + msg_frame("after")
        + SHUTDOWN_FRAME
    )
    with caplog.at_level(logging.WARNING, logger="skyllh_cluster.compute_node"):
        node = serve_frames(master, frames)
    assert node.error is None and node.result is Stop.SHUTDOWN
    assert node.messages == ["after"]
    assert not marker.exists()
    skipped = [r for r in caplog.records if r.name == "skyllh_cluster.compute_node" and "does not decode" in r.message]
    assert len(skipped) == 3


def test_a_flood_of_bad_frames_is_logged_one_by_one_then_counted(master, caplog) -> None:
    # 20 frames get a line each; the 80 after them one summary line (at the end of serving, well within a second).
    frames = GARBAGE_FRAME * 100 + msg_frame("after") + SHUTDOWN_FRAME
    with caplog.at_level(logging.WARNING, logger="skyllh_cluster.compute_node"):
        node = serve_frames(master, frames)
    assert node.error is None and node.result is Stop.SHUTDOWN
    assert node.messages == ["after"]
    lines = [r.getMessage() for r in caplog.records if r.name == "skyllh_cluster.compute_node"]
    assert sum("does not decode" in line for line in lines) == 20
    assert [line for line in lines if "more frames" in line] == [
        "skipped or ignored 80 more frames from the master (after 20 reported one by one)"
    ]
    assert len(lines) == 21


def test_commands_a_compute_node_does_not_handle_are_ignored(master, caplog) -> None:
    frames = ACK_FRAME + REGISTER_FRAME + msg_frame("x") + SHUTDOWN_FRAME
    with caplog.at_level(logging.WARNING, logger="skyllh_cluster.compute_node"):
        node = serve_frames(master, frames)
    assert node.result is Stop.SHUTDOWN
    assert node.messages == ["x"]
    ignored = [r.message for r in caplog.records if "ignored" in r.message]
    assert len(ignored) == 2
    assert ignored[0].startswith("ignored ACK from") and ignored[1].startswith("ignored RegisterCN from")


@pytest.mark.parametrize(
    "reply",
    [MSG_HELLO_FRAME, SHUTDOWN_FRAME, REGISTER_FRAME, GARBAGE_FRAME, msg_frame(None)],
    ids=["MSG", "ShutdownCN", "RegisterCN", "garbage", "MSG-None"],
)
def test_a_reply_that_is_not_an_ack_refuses_the_registration(master, reply) -> None:
    node = NodeThread(master.port)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.sendall(reply)
    node.finish()
    error = node.error
    assert isinstance(error, RegistrationRefused)
    assert isinstance(error, RuntimeError) and isinstance(error, RemoteProtocolError)
    assert error.clause == "CN-4"
    assert f"127.0.0.1:{master.port}" in str(error)
    assert isinstance(error.__cause__, RemoteProtocolError)
    assert recv_until_eof(conn) == b""


def test_a_silent_master_does_not_keep_the_node_past_its_live_time(master) -> None:
    # 2 s: the live time runs from the start truncated to a second (CN-10), so 1 s may leave no time for the ACK.
    node = NodeThread(master.port, live_time=2)
    conn = master.accept_registration(2, node.started_at)
    conn.sendall(ACK_FRAME)
    node.finish()
    assert node.error is None
    assert node.result is Stop.LIVE_TIME_OVER
    assert recv_until_eof(conn) == b""


def test_live_time_over_before_the_ack_is_a_registration_timeout(master) -> None:
    node = NodeThread(master.port, live_time=1)
    conn = master.accept_registration(1, node.started_at)
    node.finish()
    assert isinstance(node.error, LiveTimeOverBeforeAck)
    assert "did not acknowledge" in str(node.error)
    assert recv_until_eof(conn) == b""


def test_a_connect_that_cannot_complete_within_the_live_time_is_a_registration_timeout() -> None:
    # With backlog 0 and one connection waiting, the kernel drops further SYNs.
    full = ScriptedMaster(backlog=0)
    waiting = socket.create_connection(("127.0.0.1", full.port), timeout=TIMEOUT)
    try:
        node = NodeThread(full.port, live_time=1).finish()
        assert isinstance(node.error, LiveTimeOverBeforeAck)
        assert "could not connect" in str(node.error)
    finally:
        waiting.close()
        full.close()


def test_master_closing_before_the_ack(master) -> None:
    node = NodeThread(master.port)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.close()
    node.finish()
    assert isinstance(node.error, MasterClosedConnection)
    assert "before acknowledging" in str(node.error)


def test_master_closing_between_frames_raises_master_closed_connection(master) -> None:
    node = NodeThread(master.port)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.sendall(ACK_FRAME + MSG_HELLO_FRAME)
    conn.shutdown(socket.SHUT_WR)
    node.finish()
    assert node.messages == ["hello"]
    assert isinstance(node.error, MasterClosedConnection) and isinstance(node.error, RuntimeError)
    assert "before ShutdownCN" in str(node.error)
    assert recv_until_eof(conn) == b""


def test_master_closing_inside_a_frame_is_a_framing_error(master) -> None:
    node = NodeThread(master.port)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.sendall(ACK_FRAME + MSG_HELLO_FRAME[:30])
    conn.shutdown(socket.SHUT_WR)
    node.finish()
    assert isinstance(node.error, RemoteProtocolError)
    assert node.error.clause == "FRM-5"
    assert node.error.offset == len(ACK_FRAME)


def reset(conn: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def test_master_resetting_the_connection_raises_master_closed_connection(master) -> None:
    node = NodeThread(master.port)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.sendall(ACK_FRAME)
    while node.node is None and node.is_alive():  # wait until the ACK is through, bounded below
        time.sleep(0.01)
        if time.time() - node.started_at > TIMEOUT:
            break
    reset(conn)
    node.finish()
    assert isinstance(node.error, MasterClosedConnection)


def test_nobody_listening_is_an_os_error() -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        node = NodeThread(bound_not_listening.getsockname()[1]).finish()
    assert isinstance(node.error, ConnectionRefusedError)


def test_handle_requests_on_a_closed_node_raises(master) -> None:
    node = serve_frames(master, SHUTDOWN_FRAME)
    assert node.node is not None
    with pytest.raises(ComputeNodeError, match="closed"):
        node.node.handle_requests()


def test_a_failing_message_hook_closes_the_node_and_propagates(master) -> None:
    def refuse(msg: Any) -> None:
        raise KeyError(msg)

    node = NodeThread(master.port, on_message=refuse)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.sendall(ACK_FRAME + MSG_HELLO_FRAME)
    node.finish()
    assert isinstance(node.error, KeyError)
    assert recv_until_eof(conn) == b""


@pytest.mark.parametrize(
    "failure",
    [ValueError("Exceeds the limit " * 100_000), RecursionError(), MemoryError(), KeyError(10**5000)],
    ids=["ValueError-huge-text", "RecursionError", "MemoryError", "KeyError-unprintable"],
)
def test_a_decoder_failure_other_than_a_protocol_error_costs_one_frame(master, caplog, monkeypatch, failure) -> None:
    real_loads = connection_module.loads

    def failing_on_boom(payload: bytes) -> Any:
        if b"BOOM" in payload:
            raise failure
        return real_loads(payload)

    monkeypatch.setattr(connection_module, "loads", failing_on_boom)
    frames = msg_frame("before") + msg_frame("BOOM") + msg_frame("after") + SHUTDOWN_FRAME
    with caplog.at_level(logging.WARNING, logger="skyllh_cluster.compute_node"):
        node = serve_frames(master, frames)
    assert node.error is None and node.result is Stop.SHUTDOWN
    assert node.messages == ["before", "after"]
    [warning] = [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]
    assert len(warning) < 500


def test_a_decoder_failure_on_the_reply_refuses_the_registration(master, monkeypatch) -> None:
    real_loads = connection_module.loads

    def failing_on_boom(payload: bytes) -> Any:
        if b"BOOM" in payload:
            raise ValueError("x" * 10**6)
        return real_loads(payload)

    monkeypatch.setattr(connection_module, "loads", failing_on_boom)
    node = NodeThread(master.port)
    conn = master.accept_registration(node.live_time, node.started_at)
    conn.sendall(msg_frame("BOOM") + ACK_FRAME)
    node.finish()
    assert isinstance(node.error, RegistrationRefused) and node.error.clause == "CN-4"
    assert "the reply failed to decode (ValueError: xxx" in str(node.error) and len(str(node.error)) < 600
    assert isinstance(node.error.__cause__, RemoteProtocolError)
    assert recv_until_eof(conn) == b""


@pytest.mark.parametrize("live_time", [0, -5])
def test_a_live_time_over_at_the_start_does_not_connect(master, live_time) -> None:
    node = NodeThread(master.port, live_time=live_time).finish()
    assert isinstance(node.error, LiveTimeOverBeforeAck) and isinstance(node.error, RuntimeError)
    assert "over at the start; not connecting" in str(node.error)
    # connect() would have completed before the node raised: nothing is queued.
    master.server.setblocking(False)
    with pytest.raises(BlockingIOError):
        master.server.accept()


# -- the seed's surface -------------------------------------------------------------------------
def test_properties_cast_like_the_seed(master) -> None:
    node = NodeThread(master.port, live_time="60", node_class=ComputeNode)  # type: ignore[arg-type]
    conn = master.accept_registration(60, node.started_at)
    conn.sendall(ACK_FRAME + SHUTDOWN_FRAME)
    node.finish()
    cn = node.node
    assert cn is not None
    assert (cn.live_time, cn.master_addr, cn.master_port) == (60, "127.0.0.1", master.port)
    assert isinstance(cn.sock, socket.socket) and cn.sock.fileno() == -1
    assert repr(cn) == f"<ComputeNode master=127.0.0.1:{master.port} CLOSED>"


@pytest.mark.parametrize(
    "args, message",
    [
        (("sixty", "127.0.0.1", 1), "live_time property must be castable to type int"),
        ((60, 127001, 1), "master_addr property must be of type str"),
        ((60, "127.0.0.1", None), "master_port property must be castable to type int"),
    ],
)
def test_bad_arguments_are_type_errors_and_leave_nothing_to_clean_up(args, message, monkeypatch) -> None:
    unraisable: List[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(TypeError, match=message):
        ComputeNode(*args)
    gc.collect()  # runs __del__ of the half-built node
    assert unraisable == []


def test_default_output_is_one_msg_line_per_value(master, capsys) -> None:
    node = serve_frames(master, MSG_HELLO_FRAME + msg_frame("ü") + msg_frame((1.5, b"")) + SHUTDOWN_FRAME, on_message=None, echo=True)
    assert node.result is Stop.SHUTDOWN
    assert capsys.readouterr().out.splitlines() == [
        f"Registered to master 127.0.0.1:{master.port}",
        "Runtime set to 60 seconds",
        'MSG {"type":"str","utf8":"68656c6c6f"}',
        'MSG {"type":"str","utf8":"c3bc"}',
        'MSG {"type":"tuple","items":[{"type":"float","bits":"3ff8000000000000"},{"type":"bytes","hex":""}]}',
        "Received shutdown command. Shutting down.",
    ]


@pytest.mark.parametrize("output", [OutputFormat.LEGACY, "legacy"])
def test_legacy_output_is_the_originals_lines(master, capsys, output) -> None:
    frames = MSG_HELLO_FRAME + msg_frame("ü") + SHUTDOWN_FRAME
    node = serve_frames(master, frames, on_message=None, echo=True, output=output)
    assert node.result is Stop.SHUTDOWN
    assert capsys.readouterr().out.splitlines() == [
        f"Registered to master 127.0.0.1:{master.port}",
        "Runtime set to 60 seconds",
        "Received general message: hello",
        "Received general message: ü",
        "Received shutdown command. Shutting down.",
    ]


def test_an_unknown_output_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'yaml' is not a valid OutputFormat"):
        ComputeNode(60, "127.0.0.1", 1, output="yaml")


def test_live_time_end_prints_the_originals_line(master, capsys) -> None:
    node = NodeThread(master.port, live_time=2, on_message=None, echo=True)
    conn = master.accept_registration(2, node.started_at)
    conn.sendall(ACK_FRAME)
    node.finish()
    assert node.result is Stop.LIVE_TIME_OVER
    assert capsys.readouterr().out.splitlines()[-1] == "Live-time exceeded. Shutting down."


def test_without_echo_the_lines_go_to_the_log(master, capsys, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="skyllh_cluster.compute_node"):
        serve_frames(master, MSG_HELLO_FRAME + SHUTDOWN_FRAME, on_message=None, echo=False)
    assert capsys.readouterr().out == ""
    assert 'MSG {"type":"str","utf8":"68656c6c6f"}' in caplog.messages
    assert "Received shutdown command. Shutting down." in caplog.messages


def test_handle_message_can_be_overridden(master) -> None:
    seen: List[Any] = []

    class Collecting(ComputeNode):
        def handle_message(self, msg: Any) -> None:
            seen.append(("got", msg))

    serve_frames(master, MSG_HELLO_FRAME + SHUTDOWN_FRAME, node_class=Collecting)
    assert seen == [("got", "hello")]


def test_context_manager_closes_the_socket(master) -> None:
    result: List[ComputeNode] = []

    def register_only() -> None:
        with ComputeNode(60, "127.0.0.1", master.port, echo=False) as cn:
            result.append(cn)

    thread = threading.Thread(target=register_only, daemon=True)
    started = time.time()
    thread.start()
    conn = master.accept_registration(60, started)
    conn.sendall(ACK_FRAME)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert recv_until_eof(conn) == b""
    assert result[0].connection.state is State.CLOSED


# -- run_compute_node and main, in this process -------------------------------------------------
def test_run_compute_node_returns_0_after_shutdown(master, capsys) -> None:
    received: List[Any] = []
    status: List[int] = []
    started = time.time()
    thread = threading.Thread(
        target=lambda: status.append(run_compute_node("127.0.0.1", master.port, 60, on_message=received.append)),
        daemon=True,
    )
    thread.start()
    conn = master.accept_registration(60, started)
    conn.sendall(ACK_FRAME + MSG_HELLO_FRAME + SHUTDOWN_FRAME)
    thread.join(TIMEOUT)
    assert status == [0] and received == ["hello"]


def test_run_compute_node_returns_1_when_the_registration_is_refused(master, capsys) -> None:
    status: List[int] = []
    started = time.time()
    thread = threading.Thread(target=lambda: status.append(run_compute_node("127.0.0.1", master.port, 60)), daemon=True)
    thread.start()
    conn = master.accept_registration(60, started)
    conn.sendall(SHUTDOWN_FRAME)
    thread.join(TIMEOUT)
    assert status == [1]
    assert capsys.readouterr().err.startswith("compute node: [CN-4] at offset 0: the master at 127.0.0.1:")


def test_run_compute_node_returns_1_when_nobody_listens(capsys) -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        assert run_compute_node("127.0.0.1", port, 60) == 1
    assert f"no connection to the master at 127.0.0.1:{port}" in capsys.readouterr().err


def run_in_thread(master: ScriptedMaster, frames: bytes, **options: Any) -> int:
    """run_compute_node on a thread against ``master``, which sends ``frames`` after the ACK."""
    status: List[int] = []
    started = time.time()
    thread = threading.Thread(
        target=lambda: status.append(run_compute_node("127.0.0.1", master.port, 60, **options)), daemon=True
    )
    thread.start()
    conn = master.accept_registration(60, started)
    conn.sendall(ACK_FRAME + frames)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert recv_until_eof(conn) == b""
    return status[0]


def test_run_compute_node_reports_an_unexpected_error_in_one_line(master, capsys) -> None:
    def broken(msg: Any) -> None:
        raise KeyError("x" * 10_000)

    assert run_in_thread(master, MSG_HELLO_FRAME, on_message=broken) == 1
    err = capsys.readouterr().err
    assert err.startswith("compute node: internal error, KeyError: 'xxx") and err.count("\n") == 1
    assert err.endswith("(10002 characters) (--log-level debug shows where)\n")


def test_run_compute_node_returns_130_when_interrupted(master, capsys) -> None:
    def interrupt(msg: Any) -> None:
        raise KeyboardInterrupt

    assert run_in_thread(master, MSG_HELLO_FRAME, on_message=interrupt) == 130
    assert capsys.readouterr().err == "compute node: interrupted\n"


def test_run_compute_node_stops_when_stdout_is_closed(master, capsys, monkeypatch) -> None:
    class ClosedPipe(io.StringIO):
        encoding = "utf-8"

        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert run_in_thread(master, MSG_HELLO_FRAME) == 1
    assert capsys.readouterr().err == "compute node: standard output was closed; the node cannot report its messages\n"


def test_main_parses_the_originals_arguments_and_serves(master, capsys) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    status: List[int] = []
    started = time.time()
    argv = ["127.0.0.1", str(master.port), "--live-time", "30", "--log-level", "error"]
    thread = threading.Thread(target=lambda: status.append(main(argv)), daemon=True)
    try:
        thread.start()
        conn = master.accept_registration(30, started)
        conn.sendall(ACK_FRAME + SHUTDOWN_FRAME)
        thread.join(TIMEOUT)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert status == [0]
    assert "Runtime set to 30 seconds" in capsys.readouterr().out


def test_main_rejects_a_port_that_is_not_a_number(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["127.0.0.1", "ninety"])
    assert info.value.code == 2
    assert "MASTER_PORT" in capsys.readouterr().err


# -- the program, in a subprocess ------------------------------------------------------------------
#: The two ways to start the reference compute node: its module, and the CLI's subcommand.
PROGRAMS = {
    "module": ["-m", "skyllh_cluster.compute_node"],
    "cli": ["-m", "skyllh_cluster", "compute-node"],
}


def start_program(*args: str, program: str = "module", encoding: str = "utf-8") -> "subprocess.Popen[str]":
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REFERENCE), env.get("PYTHONPATH")) if p)
    env["PYTHONIOENCODING"] = encoding
    return subprocess.Popen(
        [sys.executable, *PROGRAMS[program], *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env,
    )


def finish_program(proc: "subprocess.Popen[str]") -> "tuple[int, str, str]":
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    return proc.returncode, out, err


def test_program_exits_0_after_shutdown_with_one_msg_line_per_value(master) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port), "--live-time", "45")
    try:
        conn = master.accept_registration(45, started)
        conn.sendall(ACK_FRAME + MSG_HELLO_FRAME + msg_frame("ünï") + msg_frame([1, (2, 3)]) + SHUTDOWN_FRAME)
    finally:
        status, out, err = finish_program(proc)
    assert status == 0, err
    assert out.splitlines() == [
        f"Registered to master 127.0.0.1:{master.port}",
        "Runtime set to 45 seconds",
        'MSG {"type":"str","utf8":"68656c6c6f"}',
        'MSG {"type":"str","utf8":"c3bc6ec3af"}',
        'MSG {"type":"list","items":[{"type":"int","value":"1"},'
        '{"type":"tuple","items":[{"type":"int","value":"2"},{"type":"int","value":"3"}]}]}',
        "Received shutdown command. Shutting down.",
    ]
    assert recv_until_eof(conn) == b""


def test_program_with_legacy_output_prints_the_originals_lines(master) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port), "--live-time", "45", "--output", "legacy")
    try:
        conn = master.accept_registration(45, started)
        conn.sendall(ACK_FRAME + MSG_HELLO_FRAME + msg_frame("ünï") + msg_frame([1, (2, 3)]) + SHUTDOWN_FRAME)
    finally:
        status, out, err = finish_program(proc)
    assert status == 0, err
    assert out.splitlines() == [
        f"Registered to master 127.0.0.1:{master.port}",
        "Runtime set to 45 seconds",
        "Received general message: hello",
        "Received general message: ünï",
        "Received general message: [1, (2, 3)]",
        "Received shutdown command. Shutting down.",
    ]


def test_program_exits_0_when_its_live_time_ends_under_a_silent_master(master) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port), "--live-time", "2")
    try:
        conn = master.accept_registration(2, started)
        conn.sendall(ACK_FRAME)
    finally:
        status, out, err = finish_program(proc)
    assert status == 0, err
    assert out.splitlines()[-1] == "Live-time exceeded. Shutting down."


def test_program_exits_1_when_the_reply_is_not_an_ack(master) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port))
    try:
        conn = master.accept_registration(DEFAULT_LIVE_TIME, started)
        conn.sendall(MSG_HELLO_FRAME)
    finally:
        status, out, err = finish_program(proc)
    assert status == 1
    assert out == ""
    assert "[CN-4]" in err and "did not reply to RegisterCN with an ACK" in err


def test_program_exits_1_when_the_master_goes_away(master) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port))
    try:
        conn = master.accept_registration(DEFAULT_LIVE_TIME, started)
        conn.sendall(ACK_FRAME)
        conn.close()
    finally:
        status, out, err = finish_program(proc)
    assert status == 1
    assert "closed the connection before ShutdownCN" in err


def test_program_help_names_the_originals_arguments() -> None:
    status, out, err = finish_program(start_program("--help"))
    assert status == 0
    for word in ("MASTER_ADDR", "MASTER_PORT", "--live-time", "default: 7200"):
        assert word in out


def read_line_within(proc: "subprocess.Popen[str]", timeout: float = TIMEOUT) -> str:
    """The program's next stdout line, waiting at most ``timeout`` seconds for it.

    Read a byte at a time from the pipe itself, so that nothing stays in the
    text wrapper's buffer where select() cannot see it.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"the program printed no whole line within {timeout} s: {line!r}"
        byte = os.read(fd, 1)
        assert byte, f"the program closed its stdout after {line!r}"
        line += byte
    return line.decode("utf-8")


# -- exit statuses and errors as a user meets them (issue 12) ---------------------------------------
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_program_with_live_time_0_exits_1_at_once_without_connecting(master, program) -> None:
    status, out, err = finish_program(start_program("127.0.0.1", str(master.port), "--live-time", "0", program=program))
    assert status == 1
    assert out == ""
    assert err == f"compute node: the live time of 0 seconds is over at the start; not connecting to 127.0.0.1:{master.port}\n"
    master.server.setblocking(False)
    with pytest.raises(BlockingIOError):
        master.server.accept()


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize(
    "args, complaint",
    [
        (["127.0.0.1", "70000"], "argument MASTER_PORT: '70000' is not a TCP port number (1 to 65535)"),
        (["127.0.0.1", "0"], "argument MASTER_PORT: '0' is not a TCP port number (1 to 65535)"),
        (["127.0.0.1", "-1"], "argument MASTER_PORT: '-1' is not a TCP port number (1 to 65535)"),
        (["127.0.0.1", "ninety"], "argument MASTER_PORT: 'ninety' is not a TCP port number (1 to 65535)"),
        (["127.0.0.1", "9999", "--live-time", "-1"], "argument --live-time: the live time must not be negative"),
        (["127.0.0.1", "9999", "--live-time", "1.5"], "argument --live-time: '1.5' is not a whole number of seconds"),
        (["127.0.0.1", "9999", "--output", "yaml"], "argument --output: invalid choice: 'yaml' (choose from 'json', 'legacy')"),
    ],
    ids=["port-70000", "port-0", "port-negative", "port-word", "live-time-negative", "live-time-fraction", "output"],
)
def test_program_usage_errors_exit_2_with_one_line(program, args, complaint) -> None:
    status, out, err = finish_program(start_program(*args, program=program))
    assert status == 2
    assert out == ""
    assert err.splitlines()[-1].endswith(complaint)
    assert "Traceback" not in err and "Connection refused" not in err


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_program_with_a_host_name_that_does_not_resolve_says_so_in_one_line(program) -> None:
    status, out, err = finish_program(start_program("nosuchhost.invalid", "9999", program=program))
    assert status == 1
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("compute node: cannot resolve the master's host name 'nosuchhost.invalid': ")


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_program_interrupted_while_serving_exits_130_with_one_line(master, program) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port), "--live-time", "60", program=program)
    try:
        conn = master.accept_registration(60, started)
        conn.sendall(ACK_FRAME)
        assert read_line_within(proc) == f"Registered to master 127.0.0.1:{master.port}\n"
        assert read_line_within(proc) == "Runtime set to 60 seconds\n"
        proc.send_signal(signal.SIGINT)
    finally:
        status, out, err = finish_program(proc)
    assert status == 130
    assert err == "compute node: interrupted\n"
    assert recv_until_eof(conn) == b""


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_program_interrupted_while_awaiting_the_ack_exits_130_with_one_line(master, program) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port), "--live-time", "60", program=program)
    try:
        conn = master.accept_registration(60, started)  # the node has sent RegisterCN and waits
        proc.send_signal(signal.SIGINT)
    finally:
        status, out, err = finish_program(proc)
    assert status == 130
    assert (out, err) == ("", "compute node: interrupted\n")
    assert recv_until_eof(conn) == b""


def test_program_failure_shows_a_traceback_only_at_log_level_debug(master) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port), "--log-level", "debug")
    try:
        conn = master.accept_registration(DEFAULT_LIVE_TIME, started)
        conn.sendall(ACK_FRAME)
        conn.close()
    finally:
        status, out, err = finish_program(proc)
    assert status == 1
    assert "Traceback" in err and "MasterClosedConnection" in err
    assert err.splitlines()[-1].startswith("compute node: the master at 127.0.0.1:")


def test_program_whose_stdout_is_closed_exits_1_with_one_line(master) -> None:
    started = time.time()
    proc = start_program("127.0.0.1", str(master.port), "--live-time", "60")
    try:
        conn = master.accept_registration(60, started)
        conn.sendall(ACK_FRAME)
        assert read_line_within(proc).startswith("Registered to master")
        # Both greeting lines first: closed before the second, the node stops at
        # that line, before the MSG arrives, and the MSG meets a closed socket (a reset).
        assert read_line_within(proc) == "Runtime set to 60 seconds\n"
        assert proc.stdout is not None
        proc.stdout.close()  # as `| head -2` does when it has its lines
        conn.sendall(MSG_HELLO_FRAME)
        status = proc.wait(TIMEOUT)  # stderr is one short line: the pipe cannot fill
        assert proc.stderr is not None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    assert status == 1
    assert err == "compute node: standard output was closed; the node cannot report its messages\n"
    assert recv_until_eof(conn) == b""
