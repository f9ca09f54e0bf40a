"""Hostile and extreme frames against the compute node program, over real sockets.

Issue 10's rows F5 and F6, and the frames before them: the test is a fake
master (a plain listening socket) that registers the node started as
``python -m skyllh_cluster compute-node``, sends frames written opcode by
opcode (memo references by MEMOIZE and BINGET, never pickle), then a normal
MSG and ShutdownCN.  The node must print every later message, exit 0, and
write a bounded amount: a valid value of a few kilobytes may expand to a
million nodes, an int may have more digits than CPython converts, a str may
hold a lone surrogate, and the stdout encoding may be ASCII.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import MSG
from skyllh_cluster.msg_output import LEGACY_PREFIX, LINE_LIMIT, tree_size
from skyllh_cluster.wire.framing import encode_frame
from msg_lines import check_cut_line, unlimited_str, whole_line
from socket_reads import recv_exactly, recv_until_eof

TIMEOUT = 30.0
REFERENCE = Path(__file__).resolve().parent.parent / "reference"
#: Issue 10's bound on everything the node writes for these frames.
OUTPUT_BOUND = 16 * 2**20

ACK_FRAME = bytes.fromhex(
    "310080049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e"
)
SHUTDOWN_FRAME = bytes.fromhex(
    "38008004952d000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a53687574646f776e434e9493942981942e"
)

# -- frames, opcode by opcode -------------------------------------------------------------------
# The MSG object as the original pickles it, up to its state dict (memo 0 to 4):
# the module, the class name, the class, the object, the dict.
_MSG_HEAD = bytes.fromhex("8c17736b796c6c682e636c75737465722e636f6d6d616e6473948c034d53479493942981947d94")
_MSG_KEY = b"\x8c\x03msg\x94"  # memo 5
FIRST_FREE_MEMO = 6
MEMOIZE, MARK, TUPLE, SETITEM, SETITEMS, BUILD, STOP = b"\x94", b"(", b"t", b"s", b"u", b"b", b"."
EMPTY_LIST, EMPTY_DICT, APPENDS = b"]", b"}", b"e"


def frame(state_ops: bytes) -> bytes:
    """A MSG frame whose state dict is filled by ``state_ops`` (protocol 4, one FRAME)."""
    body = _MSG_HEAD + state_ops + BUILD + STOP
    payload = b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body
    assert len(payload) <= 0xFFFF
    return struct.pack("<H", len(payload)) + payload


def msg_frame(value_ops: bytes) -> bytes:
    """MSG(value), the value written by ``value_ops``."""
    return frame(_MSG_KEY + value_ops + SETITEM)


def short_str(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    assert len(data) < 256
    return b"\x8c" + bytes([len(data)]) + data


def long4(value: int) -> bytes:
    data = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data if len(data) < 256 else b"\x8b" + struct.pack("<I", len(data)) + data


def small_int(value: int) -> bytes:
    return b"K" + bytes([value]) if value < 256 else b"M" + struct.pack("<H", value)


def binget(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)


def shared_tuples() -> Tuple[bytes, Any]:
    """A tuple of 1000 references to a tuple of 1000 references to a 100-char str (4.2 KB)."""
    text, inner_memo = FIRST_FREE_MEMO, FIRST_FREE_MEMO + 1
    inner = MARK + short_str("x" * 100) + MEMOIZE + binget(text) * 999 + TUPLE + MEMOIZE
    ops = MARK + inner + binget(inner_memo) * 999 + TUPLE
    inner_value = ("x" * 100,) * 1000
    return msg_frame(ops), (inner_value,) * 1000


def shared_lists_in_a_dict() -> Tuple[bytes, Any]:
    """A dict of 1000 int keys, each to one list of 1000 references to a 100-char str (6.8 KB)."""
    dict_memo, list_memo, text = FIRST_FREE_MEMO, FIRST_FREE_MEMO + 1, FIRST_FREE_MEMO + 2
    the_list = EMPTY_LIST + MEMOIZE + MARK + short_str("y" * 100) + MEMOIZE + binget(text) * 999 + APPENDS
    entries = small_int(0) + the_list + b"".join(small_int(key) + binget(list_memo) for key in range(1, 1000))
    ops = EMPTY_DICT + MEMOIZE + MARK + entries + SETITEMS
    assert dict_memo == FIRST_FREE_MEMO
    shared = ["y" * 100] * 1000
    return msg_frame(ops), {key: shared for key in range(1000)}


def state_with_a_huge_int_key() -> bytes:
    """F1: MSG('a') whose state has an extra key, an int of 5001 digits (2.1 KB)."""
    return frame(MARK + _MSG_KEY + short_str("a") + long4(10**5000) + small_int(1) + SETITEMS)


def deep_tuple_key() -> bytes:
    """F4: MSG({65,000-deep tuple: 1}), refused for depth (ENC-6) before anything hashes it."""
    return msg_frame(EMPTY_DICT + b")" + b"\x85" * 64999 + small_int(1) + SETITEM)


# The largest int that fits a frame beside the MSG around it: 157,000 digits.
FRAME_INT = (1 << (65_440 * 8 - 1)) - 1


# -- the fake master and the node ----------------------------------------------------------------
def start_node(port: int, *options: str, encoding: str = "utf-8") -> "subprocess.Popen[bytes]":
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REFERENCE), env.get("PYTHONPATH")) if p)
    env["PYTHONIOENCODING"] = encoding
    return subprocess.Popen(
        [sys.executable, "-m", "skyllh_cluster", "compute-node", "127.0.0.1", str(port), "--live-time", "120", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def serve(frames: bytes, *options: str, encoding: str = "utf-8", ack: bool = True) -> Tuple[int, bytes, bytes, float]:
    """Register a node, send ``frames`` (after an ACK, if ``ack``), and wait for it to exit.

    Returns the exit status, stdout, stderr and the seconds from the last
    byte sent to the exit.
    """
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT)
        node = start_node(server.getsockname()[1], *options, encoding=encoding)
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                header = recv_exactly(conn, 2)
                recv_exactly(conn, int.from_bytes(header, "little"))  # its RegisterCN
                conn.sendall((ACK_FRAME if ack else b"") + frames)
                sent = time.monotonic()
                out, err = node.communicate(timeout=TIMEOUT)
                elapsed = time.monotonic() - sent
                assert recv_until_eof(conn) == b""  # it sent nothing more and closed
        finally:
            if node.poll() is None:
                node.kill()
                node.wait(TIMEOUT)
    return node.returncode, out, err, elapsed


def served_lines(out: bytes) -> List[str]:
    lines = out.decode("ascii").splitlines()
    assert lines[1] == "Runtime set to 120 seconds" and lines[0].startswith("Registered to master 127.0.0.1:")
    assert lines[-1] == "Received shutdown command. Shutting down."
    return lines[2:-1]


AFTER = msg_frame(short_str("after"))
AFTER_LINE = 'MSG {"type":"str","utf8":"6166746572"}'


# -- F5 and F6: valid values the node must print, bounded ---------------------------------------
#: The largest shared-reference value ENC-6's cost budget still allows (a shared
#: object counts at every use): 340,000 strs in about 2.7 KB, about 10 MB as SCN-3 text.
BUDGET_VALUE = [["zz"] * 1000] * 340
BUDGET_FRAME = encode_frame(dumps(MSG(BUDGET_VALUE)))


def refused_lines(err: bytes, count: int) -> None:
    """``count`` frames over ENC-6's budget were skipped, each with one short line on stderr (CN-9)."""
    lines = err.decode("utf-8", "replace").splitlines()
    assert len(lines) == count, lines
    assert all("ENC-6" in line and len(line) < 1000 for line in lines), lines


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_extreme_valid_values_are_printed_bounded_and_every_later_message_kept(encoding: str) -> None:
    tuples_frame, tuples = shared_tuples()
    dict_frame, shared_dict = shared_lists_in_a_dict()
    assert 4000 < len(tuples_frame) < 4300 and 6000 < len(dict_frame) < 7000
    assert tree_size(tuples) == 1_001_001 and tree_size(shared_dict) == 1_002_001
    frames = (
        msg_frame(long4(10**5000))
        + msg_frame(short_str("\ud800"))
        + tuples_frame  # 10**6 shared references: over ENC-6's cost budget, refused and skipped
        + dict_frame  # the same in a dict
        + BUDGET_FRAME
        + msg_frame(long4(-FRAME_INT))
        + AFTER
        + SHUTDOWN_FRAME
    )
    status, out, err, _ = serve(frames, encoding=encoding)
    assert status == 0, err[-2000:]
    refused_lines(err, 2)
    assert len(out) < OUTPUT_BOUND
    big, surrogate, budget_line, frame_int, after = served_lines(out)
    assert big == whole_line(10**5000)
    assert surrogate == 'MSG {"type":"str","utf8":"eda080"}'
    assert LINE_LIMIT // 2 < len(budget_line) + 1 <= LINE_LIMIT
    check_cut_line(BUDGET_VALUE, budget_line, LINE_LIMIT, whole=False)
    assert frame_int == 'MSG {"type":"int","value":"-' + unlimited_str(FRAME_INT) + '"}'
    assert after == AFTER_LINE


def test_the_legacy_line_survives_them_too() -> None:
    tuples_frame, _ = shared_tuples()
    frames = (
        msg_frame(long4(10**5000)) + msg_frame(short_str("\ud800")) + tuples_frame + BUDGET_FRAME + AFTER + SHUTDOWN_FRAME
    )
    status, out, err, _ = serve(frames, "--output", "legacy", encoding="ascii")
    assert status == 0, err[-2000:]
    refused_lines(err, 1)
    assert len(out) < OUTPUT_BOUND
    big, surrogate, budget_line, after = served_lines(out)
    assert big == LEGACY_PREFIX + "1" + "0" * 5000
    assert surrogate == LEGACY_PREFIX + "\\ud800"
    assert budget_line.startswith(LEGACY_PREFIX + "[['zz', 'zz', ") and "<cut: " in budget_line
    assert len(budget_line) + 1 <= LINE_LIMIT
    assert after == LEGACY_PREFIX + "after"


# -- frames that do not decode: skipped while serving, refused before the ACK --------------------
HOSTILE: Dict[str, bytes] = {
    "F1-state-key-int-of-5001-digits": state_with_a_huge_int_key(),
    "F4-65000-deep-tuple-key": deep_tuple_key(),
    "empty-payload": b"\x00\x00",
    "not-a-pickle": b"\x05\x00hello",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_frame_while_serving_is_skipped_and_serving_goes_on(name: str) -> None:
    status, out, err, _ = serve(HOSTILE[name] + AFTER + SHUTDOWN_FRAME)
    assert status == 0, err[-2000:]
    assert served_lines(out) == [AFTER_LINE]
    assert 0 < len(err) < 64 * 1024  # a warning, bounded
    assert b"Traceback" not in err


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_frame_as_the_registration_reply_ends_the_node(name: str) -> None:
    status, out, err, _ = serve(HOSTILE[name] + ACK_FRAME + AFTER + SHUTDOWN_FRAME, ack=False)
    assert status == 1
    assert out == b""  # nothing acted on (CN-4)
    lines = err.decode("utf-8", "replace").splitlines()
    assert re.match(r"compute node: \[CN-4\] at offset \d+: the master at 127\.0\.0\.1:\d+ did not reply", lines[-1])
    assert len(lines[-1]) < 1000
    assert b"Traceback" not in err
