"""srvclt: the seed's blocking frame I/O, over real TCP sockets on 127.0.0.1.

Every test moves real bytes between two connected sockets and asserts the
exact bytes that crossed.  Only the branch where ``send`` returns 0, which a
real TCP socket never does, uses a stand-in socket.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
from typing import Iterator, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyllh_cluster.clauses import CLAUSES
from skyllh_cluster.commands import ACK, MSG
from skyllh_cluster.errors import LocalProtocolError, RemoteProtocolError
from skyllh_cluster.srvclt import Message, read_from_socket, receive_object_from_socket, send_to_socket
from skyllh_cluster.wire.framing import encode_frame
from socket_reads import recv_exactly, recv_until_eof

TIMEOUT = 10.0

# Golden frames, as the original sends them (shared/original-skyllh-cluster.md).
ACK_FRAME = bytes.fromhex(
    "310080049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e"
)
MSG_HELLO_FRAME = bytes.fromhex(
    "430080049538000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c034d53479493942981947d948c03"
    "6d7367948c0568656c6c6f9473622e"
)


def tcp_pair() -> Tuple[socket.socket, socket.socket]:
    """Two ends of one TCP connection on 127.0.0.1, each with a bounded timeout."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT)
        client = socket.create_connection(server.getsockname(), timeout=TIMEOUT)
        peer, _ = server.accept()
    peer.settimeout(TIMEOUT)
    for end in (client, peer):
        end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, peer


@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    client, peer = tcp_pair()
    try:
        yield client, peer
    finally:
        client.close()
        peer.close()


# -- Message --------------------------------------------------------------------------------
def test_length_counts_utf8_bytes_not_characters() -> None:
    assert Message("ü").length == 2
    assert Message("✓").length == 3
    assert Message("abc").length == 3
    assert Message(b"\xff\x00").length == 2


def test_str_message_frame_has_the_byte_length_prefix() -> None:
    assert Message("ü").as_socket_msg() == b"\x02\x00\xc3\xbc"
    assert Message(b"\x01\x02\x03").as_socket_msg() == b"\x03\x00\x01\x02\x03"


def test_non_bytes_message_is_cast_to_str() -> None:
    assert Message(12).msg == "12"
    assert Message(b"raw").msg == b"raw"
    assert repr(Message("a")) == "Message('a')"


def test_message_that_cannot_be_cast_to_str_is_a_type_error() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    with pytest.raises(TypeError, match="castable to type str"):
        Message(Unprintable())


@pytest.mark.parametrize(
    "msg, size",
    [("x" * 65536, 65536), ("ü" * 32768, 65536), (b"\x00" * 70000, 70000)],
    ids=["ascii", "utf8-under-65536-characters", "bytes"],
)
def test_oversized_message_is_refused_before_anything_is_sent(pair, msg, size) -> None:
    client, peer = pair
    with pytest.raises(LocalProtocolError) as info:
        Message(msg).send(client)
    assert info.value.clause == "FRM-2"
    assert f"{size} bytes" in info.value.reason
    client.close()
    assert recv_until_eof(peer) == b""


def test_empty_message_is_refused_before_anything_is_sent(pair) -> None:
    client, peer = pair
    with pytest.raises(LocalProtocolError) as info:
        Message("").send(client)
    assert info.value.clause == "FRM-3"
    client.close()
    assert recv_until_eof(peer) == b""


def test_largest_message_crosses_whole(pair) -> None:
    client, peer = pair
    text = "y" * 65535
    sender = threading.Thread(target=Message(text).send, args=(client,))
    sender.start()
    received = Message.receive(peer)
    sender.join(TIMEOUT)
    assert received.msg == text


def test_str_message_round_trip_with_non_ascii_text(pair) -> None:
    client, peer = pair
    Message("ünïcødé ✓").send(client)
    assert recv_exactly(peer, 17) == b"\x0f\x00" + "ünïcødé ✓".encode("utf-8")
    Message("ünïcødé ✓").send(client)
    received = Message.receive(peer)
    assert received.msg == "ünïcødé ✓"
    assert received.length == 15


def test_receive_as_bytes_keeps_bytes(pair) -> None:
    client, peer = pair
    client.sendall(b"\x02\x00\xc3\xbc")
    assert Message.receive(peer, as_bytes=True).msg == b"\xc3\xbc"


def test_receive_of_non_utf8_text_raises_unicode_error(pair) -> None:
    client, peer = pair
    client.sendall(b"\x01\x00\xff")
    with pytest.raises(UnicodeDecodeError):
        Message.receive(peer)


def test_zero_length_frame_receives_as_empty_message(pair) -> None:
    # The seed reader accepts what the original sent for Message(''); only
    # sending one is refused (FRM-3).
    client, peer = pair
    client.sendall(b"\x00\x00\x01\x00z")
    assert Message.receive(peer, as_bytes=True).msg == b""
    assert Message.receive(peer).msg == "z"


# -- send_to_socket / read_from_socket --------------------------------------------------
def test_frames_sent_one_byte_at_a_time_are_reassembled(pair) -> None:
    client, peer = pair
    stream = Message("first").as_socket_msg() + Message(b"\x00second\xff").as_socket_msg()
    for i in range(len(stream)):
        client.send(stream[i : i + 1])
    assert Message.receive(peer, blocksize=1).msg == "first"
    assert Message.receive(peer, blocksize=3, as_bytes=True).msg == b"\x00second\xff"


def test_coalesced_frames_are_read_one_at_a_time_without_over_reading(pair) -> None:
    client, peer = pair
    client.sendall(b"\x01\x00a\x02\x00bc\x03\x00def" + b"tail")
    assert Message.receive(peer).msg == "a"
    assert Message.receive(peer).msg == "bc"
    assert Message.receive(peer).msg == "def"
    assert read_from_socket(peer, 4) == b"tail"


def test_send_to_socket_delivers_a_large_buffer_in_order(pair) -> None:
    client, peer = pair
    data = os.urandom(4 * 1024 * 1024)  # larger than the socket buffers: send() returns short counts
    sender = threading.Thread(target=send_to_socket, args=(client, data))
    sender.start()
    received = read_from_socket(peer, len(data), blocksize=65536)
    sender.join(TIMEOUT)
    assert received == data


class ZeroSendSocket:
    """Stand-in for the one case a real TCP socket does not produce: ``send`` returning 0."""

    def __init__(self, accepts: List[int]) -> None:
        self.accepts = accepts
        self.sent = b""

    def send(self, data: memoryview) -> int:
        n = self.accepts.pop(0)
        self.sent += bytes(data[:n])
        return n


def test_send_to_socket_keeps_sending_after_short_sends() -> None:
    sock = ZeroSendSocket([1, 2, 3])
    send_to_socket(sock, b"abcdef")  # type: ignore[arg-type]
    assert sock.sent == b"abcdef"


def test_send_to_socket_raises_when_send_sends_nothing() -> None:
    sock = ZeroSendSocket([2, 0])
    with pytest.raises(RuntimeError, match="^Socket connection broken!$"):
        send_to_socket(sock, b"abcdef")  # type: ignore[arg-type]
    assert sock.sent == b"ab"


def test_read_from_socket_raises_when_the_peer_closes_early(pair) -> None:
    client, peer = pair
    client.sendall(b"abc")
    client.close()
    with pytest.raises(RuntimeError, match="^Socket connection broken!$"):
        read_from_socket(peer, 10)


def test_read_of_zero_bytes_reads_nothing(pair) -> None:
    client, peer = pair
    assert read_from_socket(peer, 0) == b""


# -- receive_object_from_socket -------------------------------------------------------------
def test_golden_frames_decode_to_commands(pair) -> None:
    client, peer = pair
    client.sendall(ACK_FRAME + MSG_HELLO_FRAME)
    assert receive_object_from_socket(peer) == ACK()
    assert receive_object_from_socket(peer, blocksize=1) == MSG("hello")


def test_undecodable_payload_is_a_remote_protocol_error_with_frame_offset(pair) -> None:
    client, peer = pair
    client.sendall(b"\x05\x00hello")
    with pytest.raises(RemoteProtocolError) as info:
        receive_object_from_socket(peer)
    assert info.value.clause in CLAUSES
    assert info.value.offset is not None and 2 <= info.value.offset <= 7


class RunsACommand:
    """Pickles to a call of os.system: what the original would run on receipt."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(pair, tmp_path) -> None:
    client, peer = pair
    marker = tmp_path / "ran"
    payload = pickle.dumps(RunsACommand(str(marker)), protocol=4)
    client.sendall(encode_frame(payload))
    with pytest.raises(RemoteProtocolError):
        receive_object_from_socket(peer)
    assert not marker.exists()


def test_receive_object_raises_when_the_peer_closes_mid_frame(pair) -> None:
    client, peer = pair
    client.sendall(ACK_FRAME[:20])
    client.close()
    with pytest.raises(RuntimeError, match="^Socket connection broken!$"):
        receive_object_from_socket(peer)


@settings(max_examples=25, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=6),
    piece=st.integers(min_value=1, max_value=4000),
    blocksize=st.integers(min_value=1, max_value=4096),
)
def test_any_split_of_any_frames_reads_back_exactly(payloads, piece, blocksize) -> None:
    client, peer = tcp_pair()
    try:
        stream = b"".join(Message(p).as_socket_msg() for p in payloads)
        for i in range(0, len(stream), piece):
            client.sendall(stream[i : i + piece])
        assert [Message.receive(peer, blocksize, as_bytes=True).msg for _ in payloads] == payloads
    finally:
        client.close()
        peer.close()
