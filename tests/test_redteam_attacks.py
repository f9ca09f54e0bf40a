"""Red-team hostile frames against the reference's three roles, over real sockets.

Attacks not covered by test_master_attacks.py, test_cn_attacks.py and
test_hostile_frames.py: 65535-byte frames of nested MARKs, memo index abuse,
huge length arguments, a FRAME that lies about its length, invalid UTF-8 at
the very end of a str, a frame trickled across TCP segments with pauses, a
half-open connection, and thousands of empty frames after the ACK.  The
promise checked (issue "Hardening"): each bad frame costs only its own
connection (or, at a compute node, only itself), is refused as a
ProtocolError with a short log line, no traceback, and the honest peer is
still served.  Every frame is written opcode by opcode; nothing is unpickled.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Dict, Iterator, Tuple

import pytest
from master_peers import GOLDEN_ACK, GOLDEN_SHUTDOWN, WAIT, Background, RawNode, register_frame, start_master_cli, wait_for
from test_cn_attacks import AFTER, AFTER_LINE, SHUTDOWN_FRAME, serve, served_lines

from skyllh_cluster.master_node import MasterNode

#: The RegisterCN object as CPython writes it, up to its empty state dict (memo 0 to 4).
_REGISTER_HEAD = bytes.fromhex("8c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a5265676973746572434e9493942981947d94")
_MSG_HEAD = bytes.fromhex("8c17736b796c6c682e636c75737465722e636f6d6d616e6473948c034d53479493942981947d94")
#: Per refused frame, the most the refusing side may write to its log.
LOG_PER_FRAME = 1024


def framed(payload: bytes) -> bytes:
    assert 0 < len(payload) <= 0xFFFF
    return struct.pack("<H", len(payload)) + payload


def in_frame(body: bytes) -> bytes:
    """PROTO 4, then one honest FRAME around ``body``."""
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body


def register_times() -> bytes:
    """The two state entries of a RegisterCN (start now, live time 7200), as CPython writes them."""
    return (b"(\x8c\x0e_cn_start_time\x94J" + struct.pack("<i", int(time.time()))
            + b"\x8c\r_cn_live_time\x94M\x20\x1cu")


#: Payloads refused by every receiver.  Each is sent as a master's first frame and after a
#: compute node's ACK (``head`` makes it start like the command that role expects).
def hostile_payloads(head: bytes, key: bytes) -> Dict[str, bytes]:
    pad = 65535
    return {
        "65533 nested MARKs": (b"\x80\x04" + b"(" * (pad - 2)),
        "32766 EMPTY_LIST MARK pairs then STOP": b"\x80\x04" + b"](" * 32766 + b".",
        "20000 MEMOIZE of one object": b"\x80\x04" + head + b"(" + b"N\x94" * 20000 + b".",
        "LONG_BINPUT at 2**32-1 then LONG_BINGET 0": b"\x80\x04" + head + b"Nr\xff\xff\xff\xffj\x00\x00\x00\x00sb.",
        "20000 BINGET of one list, then APPENDS": in_frame(head + key + b"]\x94(" + b"h\x06" * 20000 + b"esb."),
        "LONG4 of 2**31-1 bytes": b"\x80\x04" + head + key + b"\x8b\xff\xff\xff\x7f" + b"\x00" * 60000,
        "BINBYTES8 of 2**63 bytes": b"\x80\x04" + head + key + b"\x8e" + struct.pack("<Q", 2**63) + b"x" * 100,
        "FRAME says 2**64-1": b"\x80\x04\x95" + b"\xff" * 8 + head + key + b"Nsb.",
        "FRAME says 3, more follows": b"\x80\x04\x95" + struct.pack("<Q", 3) + head + key + b"Nsb.",
        "BINUNICODE whose last byte is not UTF-8": in_frame(head + key + b"X\x04\x00\x00\x00abc\xff\x94sb."),
        "SHORT_BINUNICODE cut inside a UTF-8 sequence": in_frame(head + key + b"\x8c\x02a\xe2\x94sb."),
        "7000 empty FRAMEs": b"\x80\x04" + b"\x95" + b"\x00" * 8 + (b"\x95" + b"\x00" * 8) * 7000 + b"N.",
    }


MASTER_PAYLOADS = hostile_payloads(_REGISTER_HEAD, b"\x8c\x0e_cn_start_time\x94")
CN_PAYLOADS = hostile_payloads(_MSG_HEAD, b"\x8c\x03msg\x94")


# -- the CLI master -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_master() -> Iterator[Tuple[object, int, object]]:
    process, stderr = start_master_cli("--scenario", "conformance", "--host", "127.0.0.1", "--port", "0")
    try:
        port = int(stderr.wait_for(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))
        yield process, port, stderr
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(WAIT)


def honest_scenario(port: int) -> None:
    received = RawNode(("127.0.0.1", port)).register().read_to_eof()
    assert received.startswith(GOLDEN_ACK) and received.endswith(GOLDEN_SHUTDOWN)


def _new_log(reader: object, since: int) -> str:
    time.sleep(0.2)  # the master logs after it closes; give the pump a moment
    while True:
        try:
            line = reader.lines.get_nowait()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - queue.Empty: nothing more yet
            break
        if line is None:
            break
        reader.seen.append(line)  # type: ignore[attr-defined]
    return "\n".join(reader.seen[since:])  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", list(MASTER_PAYLOADS))
def test_cli_master_refuses_the_first_frame_and_serves_the_next_node(cli_master, name: str) -> None:
    process, port, reader = cli_master
    since = len(reader.seen)
    hostile = RawNode(("127.0.0.1", port), timeout=WAIT).send(framed(MASTER_PAYLOADS[name][:65535]))
    assert hostile.read_to_eof() == b""  # no ACK, closed
    honest_scenario(port)
    assert process.poll() is None
    log = _new_log(reader, since)
    assert "Traceback" not in log
    assert len(log) < LOG_PER_FRAME, log[:2000]


def test_cli_master_acks_a_registercn_trickled_over_ten_segments(cli_master) -> None:
    process, port, _ = cli_master
    data = register_frame()
    node = RawNode(("127.0.0.1", port))
    node.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    step = -(-len(data) // 10)
    for i in range(0, len(data), step):
        node.send(data[i : i + step])
        time.sleep(0.1)
    received = node.read_to_eof()
    assert received.startswith(GOLDEN_ACK) and received.endswith(GOLDEN_SHUTDOWN)


def test_cli_master_closes_a_half_open_connection_inside_its_first_frame(cli_master) -> None:
    _, port, reader = cli_master
    since = len(reader.seen)
    node = RawNode(("127.0.0.1", port))
    node.send(b"\xff\xff" + b"\x80\x04" + b"(" * 100)
    node.sock.shutdown(socket.SHUT_WR)  # FRM-5: the stream ends inside the frame
    assert node.read_to_eof() == b""
    honest_scenario(port)
    log = _new_log(reader, since)
    assert "Traceback" not in log and len(log) < LOG_PER_FRAME


def test_cli_master_closes_a_stream_of_empty_frames_at_the_first(cli_master) -> None:
    process, port, _ = cli_master
    node = RawNode(("127.0.0.1", port))
    try:
        node.send(b"\x00\x00" * 5000)
    except OSError:
        pass  # closed while we wrote: the refusal came early
    assert node.read_to_eof() == b""
    honest_scenario(port)
    assert process.poll() is None


# -- the library master ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MASTER_PAYLOADS))
def test_library_master_refuses_the_first_frame_and_registers_the_next_node(name: str, caplog) -> None:
    with MasterNode() as master:
        call = Background(lambda: master.register_compute_nodes(n_cn=1, master_port=0, host="127.0.0.1", timeout=WAIT))
        address = wait_for(lambda: master.master_address, "the master to listen")
        hostile = RawNode(address, timeout=WAIT).send(framed(MASTER_PAYLOADS[name][:65535]))
        assert hostile.read_to_eof() == b""
        honest = RawNode(address).register()
        assert honest.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
        call.result()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" not in text and len(text) < LOG_PER_FRAME, text[:2000]


# -- the compute node CLI ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CN_PAYLOADS))
def test_compute_node_skips_the_frame_and_serves_on(name: str) -> None:
    status, out, err, _ = serve(framed(CN_PAYLOADS[name][:65535]) + AFTER + SHUTDOWN_FRAME)
    assert status == 0, err[-2000:]
    assert served_lines(out) == [AFTER_LINE]
    assert b"Traceback" not in err
    assert 0 < len(err) < LOG_PER_FRAME, err[:2000]


def test_compute_node_skips_5000_empty_frames_with_a_bounded_log() -> None:
    count = 5000
    status, out, err, elapsed = serve(b"\x00\x00" * count + AFTER + SHUTDOWN_FRAME)
    assert status == 0, err[-2000:]
    assert served_lines(out) == [AFTER_LINE]
    assert b"Traceback" not in err
    # 20 frames reported one by one, the rest counted in a summary line a second at most:
    # far less log than the 10 KB the master sent.
    lines = err.splitlines()
    assert 20 < len(lines) <= 20 + 2 + int(elapsed), lines[-3:]
    assert len(err) < 2 * count, f"{len(err)} bytes of log for {count} empty frames"


def test_compute_node_reads_a_msg_trickled_one_byte_per_segment() -> None:
    """FRM-4 at the node: frames arriving a byte at a time, with pauses, are the same frames."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(WAIT)
        from test_cn_attacks import ACK_FRAME, start_node
        from socket_reads import recv_exactly

        node = start_node(server.getsockname()[1])
        try:
            conn, _ = server.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                header = recv_exactly(conn, 2)
                recv_exactly(conn, int.from_bytes(header, "little"))
                for byte in ACK_FRAME + AFTER:
                    conn.sendall(bytes([byte]))
                    time.sleep(0.005)
                conn.sendall(SHUTDOWN_FRAME)
                out, err = node.communicate(timeout=WAIT * 3)
        finally:
            if node.poll() is None:
                node.kill()
                node.wait(WAIT)
    assert node.returncode == 0, err[-2000:]
    assert served_lines(out) == [AFTER_LINE]



def test_compute_node_acts_on_nothing_after_shutdown_in_the_same_segment() -> None:
    """Spec §8: frames after ShutdownCN are not acted on, even when they arrive in the same read."""
    status, out, err, _ = serve(SHUTDOWN_FRAME + AFTER + AFTER)
    assert status == 0, err[-2000:]
    assert served_lines(out) == []


def test_compute_node_exits_non_zero_when_the_master_closes_while_it_serves() -> None:
    """CN-11: a close between frames while serving is neither ShutdownCN nor the end of the live time."""
    from socket_reads import recv_exactly
    from test_cn_attacks import ACK_FRAME, start_node

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(WAIT)
        node = start_node(server.getsockname()[1])
        try:
            conn, _ = server.accept()
            with conn:
                header = recv_exactly(conn, 2)
                recv_exactly(conn, int.from_bytes(header, "little"))
                conn.sendall(ACK_FRAME + AFTER)
            out, err = node.communicate(timeout=WAIT * 3)
        finally:
            if node.poll() is None:
                node.kill()
                node.wait(WAIT)
    assert node.returncode != 0
    assert AFTER_LINE in out.decode("ascii").splitlines()
    assert b"Traceback" not in err
