"""The kit's own socket peers: one recorded TCP connection, and how to get one.

:class:`WireConnection` wraps a connected socket.  It writes bytes in the
pieces and with the pauses a test asks for, reads frames with the sans-I/O
:class:`~skyllh_cluster.wire.framing.FrameBuffer`, and decodes every payload
only with the normative grammar (:func:`skyllh_cluster.codec.loads_checked`):
nothing the target sends ever reaches :mod:`pickle`.  Every byte is recorded
in a :class:`~.transcript.Transcript`.

:func:`connect` opens one as a fake compute node (master mode);
:class:`Listener` accepts them as a fake master (compute-node mode).

Every wait is bounded by a timeout, and every failure of the target is a
:class:`~.failures.ClauseFailure` whose evidence says what was expected and
what came instead.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Type

from skyllh_cluster.codec import loads_checked
from skyllh_cluster.commands import Command
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.wire.framing import HEADER_SIZE, FrameBuffer

from .failures import ClauseFailure, KitError, NoReply
from .tls import HandshakeFailed, client_handshake, looks_like_tls, reason_of, server_handshake
from .transcript import Transcript

__all__ = ["Frame", "WireConnection", "connect", "Listener", "describe", "TLSRefused", "first_bytes", "start_tls_server"]

logger = logging.getLogger(__name__)

_RECV_SIZE = 65536


@dataclass(frozen=True)
class Frame:
    """One whole frame the target sent, and what the grammar made of it."""

    index: int  # 0 for the first frame on the connection
    offset: int  # stream offset of the frame's first byte
    payload: bytes
    command: Optional[Command]  # None when the payload did not decode
    error: Optional[ProtocolError]  # why it did not decode

    @property
    def raw(self) -> bytes:
        """The frame as it was on the wire: prefix and payload."""
        return len(self.payload).to_bytes(HEADER_SIZE, "little") + self.payload

    def describe(self) -> str:
        """A short account of the frame for evidence lines."""
        if self.command is not None:
            return f"frame {self.index} ({len(self.payload)} bytes) = {describe(self.command)}"
        return f"frame {self.index} ({len(self.payload)} bytes), undecodable: {self.error}"


def describe(command: Command, width: int = 60) -> str:
    """``repr`` of a command, shortened for one line of evidence."""
    text = repr(command)
    return text if len(text) <= width else text[: width - 3] + "..."


def _decode(payload: bytes, offset: int) -> Tuple[Optional[Command], Optional[ProtocolError]]:
    """Decode with the grammar; offsets in errors become stream offsets, like the transcript's."""
    if not payload:
        return None, ProtocolError("FRM-3", "an empty frame (length prefix 0000)", offset)
    try:
        return loads_checked(payload), None
    except ProtocolError as exc:
        hint = _big_endian_hint(len(payload).to_bytes(HEADER_SIZE, "little") + payload)
        if hint:
            return None, ProtocolError("FRM-1", hint.lstrip("; "), offset)
        return None, exc.with_offset(offset + HEADER_SIZE)


class WireConnection:
    """One recorded TCP connection between the kit and the target.

    Args:
        sock: A connected socket; the connection owns it from now on.
        transcript: Where to record the traffic.
        timeout: The conformance timeout: how long any single wait may take.
    """

    def __init__(self, sock: socket.socket, transcript: Transcript, timeout: float) -> None:
        #: Whether the bytes run inside TLS: the kit then never writes plaintext on this connection.
        self.tls = isinstance(sock, ssl.SSLSocket)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - not every socket type has it
            pass
        self.sock = sock
        self.transcript = transcript
        self.timeout = timeout
        self._frames = FrameBuffer()
        self._count = 0
        self._closed_by_peer = False
        self._reset = False
        self._closed = False
        self._received = 0
        #: The TLS error that ended the connection, if one did (an alert from the target).
        self.tls_error: Optional[str] = None

    @classmethod
    def ended(cls, sock: ssl.SSLSocket, transcript: Transcript, timeout: float, reason: str) -> "WireConnection":
        """A TLS connection whose handshake the target ended: closed by the target, nothing to send on."""
        conn = cls(sock, transcript, timeout)
        conn._closed_by_peer = True
        conn._reset = True  # no evidence that the target read anything
        conn.tls_error = reason
        conn._frames.feed(b"")
        return conn

    # -- state -------------------------------------------------------------------
    def buffered_in_tls(self) -> bool:
        """Whether TLS holds decrypted bytes not yet read (``select`` does not see them)."""
        return self.tls and not self._closed and self.sock.pending() > 0  # type: ignore[attr-defined]

    @property
    def peer_closed(self) -> bool:
        """Whether the target has closed (or reset) its side."""
        return self._closed_by_peer

    @property
    def was_reset(self) -> bool:
        """Whether the target's close was a reset rather than an orderly close."""
        return self._reset

    @property
    def frames_read(self) -> int:
        """How many whole frames have been read."""
        return self._count

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned in a frame."""
        return self._frames.buffered

    def __enter__(self) -> "WireConnection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kit's side (idempotent)."""
        if not self._closed:
            self._closed = True
            self.transcript.note("kit closed the connection")
            self.sock.close()

    def shutdown_write(self) -> None:
        """Half-close: the target reads end of stream, the kit can still read."""
        self.transcript.note("kit shut down its sending side")
        try:
            # On the descriptor itself: SSLSocket.shutdown would drop the TLS
            # state, and later reads would return raw records as data.  The
            # target sees end of stream without close_notify (TLS-1 allows it).
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError as exc:
            self.transcript.note(f"shutdown failed: {exc}")

    def fail(self, evidence: str, *, clause: Optional[str] = None, kind: Type[ClauseFailure] = ClauseFailure) -> ClauseFailure:
        """A failure with this connection's transcript attached."""
        return kind(evidence, clause=clause, transcripts=[self.transcript])

    # -- sending -------------------------------------------------------------------
    def send(self, data: bytes, *, cuts: Sequence[int] = (), delays: Sequence[float] = ()) -> None:
        """Write ``data``, split at the offsets ``cuts`` with a pause before each later piece.

        ``delays[i]`` is the pause before piece ``i + 1`` (missing ones are 0).
        A target that resets the connection while the kit writes is recorded
        and raises :class:`ClauseFailure`: it stopped reading a frame it was
        owed.
        """
        bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(data)), len(data)]
        for i in range(len(bounds) - 1):
            if i and i - 1 < len(delays) and delays[i - 1] > 0:
                time.sleep(delays[i - 1])
            self._send_all(data[bounds[i] : bounds[i + 1]])

    def send_pieces(self, pieces: Sequence[bytes], delay: float = 0.0) -> None:
        """Write each piece with its own write, pausing ``delay`` between them."""
        for i, piece in enumerate(pieces):
            if i and delay > 0:
                time.sleep(delay)
            self._send_all(piece)

    def _send_all(self, data: bytes) -> None:
        if self.tls_error is not None and self.tls:
            self.transcript.note(f"write failed: the TLS connection has ended ({self.tls_error})")
            raise self.fail(f"expected the target to take the kit's {len(data)} bytes, got the TLS connection ended "
                            f"before any of them ({self.tls_error})")
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                if time.monotonic() > deadline:
                    raise self.fail(
                        f"expected the target to read what the kit sends, got {len(view)} bytes not taken "
                        f"within {self.timeout:g} s",
                        kind=NoReply,
                    ) from None
                select.select([], [self.sock], [], min(0.05, self.timeout))
                continue
            except OSError as exc:
                self.transcript.note(f"write failed: {reason_of(exc) if isinstance(exc, ssl.SSLError) else exc}")
                how = "reset" if isinstance(exc, ConnectionResetError) else f"closed ({_os_error_name(exc)})"
                done = len(data) - len(view)
                raise self.fail(
                    f"expected the target to take the kit's {len(data)} bytes, got the connection {how} "
                    + (f"after {done} of them" if done else "before any of them")
                ) from None
            self.transcript.sent(bytes(view[:sent]))
            view = view[sent:]

    # -- receiving -----------------------------------------------------------------
    def _pull(self, wait: float) -> bool:
        """Read what has arrived, waiting at most ``wait`` seconds; False on timeout."""
        if self._closed_by_peer:
            return False
        if not self.buffered_in_tls():
            ready, _, _ = select.select([self.sock], [], [], max(0.0, wait))
            if not ready:
                return False
        try:
            data = self.sock.recv(_RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True  # with TLS: part of a record, or a record without application data
        except ConnectionResetError:
            self._reset = True
            data = b""
        except ssl.SSLError as exc:
            # A TLS alert (e.g. a master that refused the kit's client
            # certificate after the handshake, TLS-4) ends the connection.
            self.tls_error = reason_of(exc)
            self.transcript.note(f"TLS error: {self.tls_error}")
            self._reset = True
            data = b""
        if data:
            self._received += len(data)
            self.transcript.received(data)
        else:
            self._closed_by_peer = True
            self.transcript.note("target reset the connection" if self._reset else "target closed the connection")
        self._frames.feed(data)
        return True

    def received_within(self, seconds: float) -> bytes:
        """Everything that arrives within ``seconds`` (or until the target closes).

        Used to check that nothing arrives: the bytes are kept for
        :meth:`read_frame` as well.
        """
        before = self._received
        deadline = time.monotonic() + seconds
        while not self._closed_by_peer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._pull(left):
                break
        if self._received == before:
            return b""
        return self.transcript.bytes_in("<-")[before:]

    def reaction(self, wait: float, *, replies: bool = True) -> Optional[str]:
        """Positive evidence that the target read what the kit sent, waiting at most ``wait`` s.

        Returns "closed the connection" once the target has closed it in
        order (a FIN: a TCP stack resets instead when a socket is closed
        with unread data, so an orderly close shows the target read what
        had arrived), "replied (N bytes)" once it has sent anything (only
        with ``replies``), else ``None``.  A reset is no evidence: the
        target may never have read the bytes (see :attr:`was_reset`).
        """
        before = self._received
        deadline = time.monotonic() + wait
        while not self._closed_by_peer and self._received == before:
            left = deadline - time.monotonic()
            if left <= 0 or not self._pull(left):
                break
        if replies and self._received:
            return f"replied ({self._received} bytes)"
        if self._closed_by_peer and not self._reset:
            return "closed the connection"
        return None

    def read_frame(self, timeout: Optional[float] = None, *, waiting_for: str = "a frame") -> Optional[Frame]:
        """Return the next whole frame, or ``None`` if the target closed between frames.

        Raises:
            NoReply: nothing whole arrived within the timeout.
            ClauseFailure: FRM-1, the stream ended inside a frame (with a hint
                when the prefix reads right as big-endian).
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            frame = self._next_buffered()
            if frame is not None:
                return frame
            if self._frames.at_eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0 or not self._pull(left):
                if time.monotonic() < deadline:
                    continue
                started = self._frames.buffered
                detail = f" ({self._partial_evidence()})" if started else ""
                self.transcript.note(f"no reply within {limit:g} s")
                raise self.fail(f"expected {waiting_for}, got no reply within {limit:g} s{detail}", kind=NoReply)

    def _next_buffered(self) -> Optional[Frame]:
        offset = self._frames.stream_offset
        try:
            payload = self._frames.next_payload()
        except ProtocolError:
            raise self.fail(self._cut_short_evidence(), clause="FRM-1") from None
        if payload is None:
            return None
        command, error = _decode(payload, offset)
        frame = Frame(self._count, offset, payload, command, error)
        self._count += 1
        return frame

    def buffered_frames(self) -> List[Frame]:
        """The whole frames already received and not yet read, without waiting."""
        frames: List[Frame] = []
        while True:
            frame = self._next_buffered()
            if frame is None:
                return frames
            frames.append(frame)

    def frames(self, timeout: Optional[float] = None, *, waiting_for: str = "a frame") -> Iterator[Frame]:
        """Yield frames until the target closes; each wait bounded by ``timeout``."""
        while True:
            frame = self.read_frame(timeout, waiting_for=waiting_for)
            if frame is None:
                return
            yield frame

    def wait_closed(self, timeout: Optional[float] = None) -> List[Frame]:
        """Wait for the target to close; return any frames that arrived first.

        Returns the frames read before the close.  Raises :class:`NoReply` if
        the connection is still open after the timeout.
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        frames: List[Frame] = []
        while True:
            left = deadline - time.monotonic()
            try:
                frame = self.read_frame(max(left, 0.0), waiting_for="the target to close the connection")
            except NoReply:
                raise self.fail(
                    f"expected the target to close the connection, got it still open after {limit:g} s"
                    + (f" ({len(frames)} frames arrived meanwhile)" if frames else ""),
                    kind=NoReply,
                ) from None
            if frame is None:
                return frames
            frames.append(frame)

    def _partial_evidence(self) -> str:
        data = self.transcript.bytes_in("<-")[-self._frames.buffered :]
        if len(data) < HEADER_SIZE:
            return f"{len(data)} byte of a length prefix arrived"
        announced = int.from_bytes(data[:2], "little")
        hint = _big_endian_hint(data)
        return f"a frame announcing {announced} payload bytes is incomplete after {len(data) - 2}{hint}"

    def _cut_short_evidence(self) -> str:
        return f"expected whole frames, got the connection closed inside a frame: {self._partial_evidence()}"


def _big_endian_hint(data: bytes) -> str:
    """Say so when a length prefix that does not fit reads right as big-endian."""
    if len(data) < HEADER_SIZE:
        return ""
    swapped = int.from_bytes(data[:2], "big")
    if 0 < swapped <= len(data) - HEADER_SIZE:
        try:
            loads_checked(data[2 : 2 + swapped])
        except ProtocolError:
            return ""
        return (
            f"; read big-endian the prefix {data[:2].hex()} would announce {swapped} bytes, which decode: "
            "expected a little-endian prefix"
        )
    return ""


def _os_error_name(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    return name or type(exc).__name__


class TLSRefused(ClauseFailure):
    """The TLS handshake with the target failed (the kit was told to speak TLS to it)."""

    def __init__(self, evidence: str, *, clause: Optional[str] = None, transcripts: Sequence[Transcript] = (),
                 reason: str = "", verify: bool = False, closed: bool = False) -> None:
        super().__init__(evidence, clause=clause, transcripts=transcripts)
        self.reason = reason
        self.verify = verify
        self.closed = closed

    def with_transcripts(self, *transcripts: Transcript) -> "ClauseFailure":
        clone = super().with_transcripts(*transcripts)
        clone.reason, clone.verify, clone.closed = self.reason, self.verify, self.closed  # type: ignore[attr-defined]
        return clone


def connect(
    address: Tuple[str, int],
    transcript: Transcript,
    timeout: float,
    *,
    retry_for: Optional[float] = None,
    tls: Optional[ssl.SSLContext] = None,
    receive_buffer: Optional[int] = None,
) -> WireConnection:
    """Open a connection to a master, as a fresh compute node would.

    A refused connection is retried for ``retry_for`` seconds (default: the
    timeout): a master that re-opens its listening socket between two nodes
    is still serving nodes one after another.  Raises :class:`NoReply` when
    the master cannot be reached in that time.

    With ``tls`` the connection is TLS from its first byte (TLS-1, TLS-6): the
    handshake runs here, verifying the master against the context's CA and
    ``address``'s host (TLS-2).  A master that closes during the handshake
    gives a connection already closed by the target, as a plain master that
    closes at once would (nothing is ever written in plain on it).  A
    handshake that fails otherwise raises :class:`TLSRefused`, naming TLS-2
    when the master's certificate did not verify.

    ``receive_buffer`` (bytes) is set before the connect, so that the window
    the kit advertises stays that small: a master then cannot write a whole
    scenario into the kernel and still has the connection open.
    """
    limit = timeout if retry_for is None else retry_for
    deadline = time.monotonic() + limit
    refusals = 0
    while True:
        try:
            sock = _open(address, max(0.05, min(timeout, deadline - time.monotonic())), receive_buffer)
        except (ConnectionRefusedError, socket.timeout, OSError) as exc:
            if isinstance(exc, ConnectionRefusedError):
                refusals += 1
            if time.monotonic() >= deadline or not isinstance(exc, (ConnectionRefusedError, socket.timeout)):
                transcript.note(f"could not connect to {address[0]}:{address[1]}: {exc}")
                raise NoReply(
                    f"expected the master to accept a connection, got {_os_error_name(exc)} for {limit:g} s",
                    transcripts=[transcript],
                ) from None
            time.sleep(0.01)
            continue
        if refusals:
            transcript.note(f"connected after {refusals} refused attempts")
        local = sock.getsockname()
        transcript.note(f"connected from {local[0]}:{local[1]} to {address[0]}:{address[1]}")
        if tls is None:
            return WireConnection(sock, transcript, timeout)
        return _start_tls_client(sock, tls, address[0], transcript, timeout)


def _open(address: Tuple[str, int], timeout: float, receive_buffer: Optional[int]) -> socket.socket:
    if receive_buffer is None:
        return socket.create_connection(address, timeout=timeout)
    family, kind, proto, _, where = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(timeout)
        sock.connect(where)
    except BaseException:
        sock.close()
        raise
    return sock


def _start_tls_client(sock: socket.socket, context: ssl.SSLContext, host: str, transcript: Transcript, timeout: float) -> WireConnection:
    try:
        tls = client_handshake(sock, context, host, timeout, keep_failed=True)
    except HandshakeFailed as failed:
        transcript.note(f"TLS handshake failed: {failed.reason}")
        if failed.sock is not None:
            return WireConnection.ended(failed.sock, transcript, timeout, failed.reason)
        if failed.timed_out:
            raise NoReply(f"expected the master to complete a TLS handshake, got {failed.reason}", transcripts=[transcript])
        raise TLSRefused(
            f"expected a TLS handshake with the master, got {failed.reason}",
            clause="TLS-2" if failed.verify else None,
            transcripts=[transcript],
            reason=failed.reason,
            verify=failed.verify,
        ) from None
    transcript.note(f"TLS handshake done: {tls.version()}, {(tls.cipher() or ('?',))[0]}")
    return WireConnection(tls, transcript, timeout)


class Listener:
    """A listening socket on which the kit plays the master.

    Args:
        host: Address to listen on (loopback by default).
        port: Port; 0 picks a free one.
        timeout: The conformance timeout.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, timeout: float = 2.0, tls: Optional[ssl.SSLContext] = None
    ) -> None:
        self.timeout = timeout
        #: The kit's server context in TLS mode: every accepted connection is TLS.
        self.tls = tls
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise KitError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._sock.listen(64)
        self._sock.setblocking(False)
        self.address: Tuple[str, int] = self._sock.getsockname()[:2]

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening."""
        self._sock.close()

    def drain(self) -> int:
        """Accept and close connections already waiting (left over from an earlier node)."""
        dropped = 0
        while select.select([self._sock], [], [], 0)[0]:
            try:
                sock, _ = self._sock.accept()
            except BlockingIOError:
                break
            sock.close()
            dropped += 1
        return dropped

    def accept(self, transcript: Transcript, timeout: Optional[float] = None, *, who: str = "the compute node") -> WireConnection:
        """Wait for one connection; raise :class:`NoReply` if none comes in time.

        In TLS mode the server side of the handshake runs here, within the
        conformance timeout; a handshake that fails raises :class:`TLSRefused`
        (``plain`` set when the node's first bytes were not TLS at all).
        """
        sock = self.accept_raw(transcript, timeout, who=who)
        if self.tls is None:
            return WireConnection(sock, transcript, self.timeout)
        return start_tls_server(sock, self.tls, transcript, self.timeout)

    def accept_raw(self, transcript: Transcript, timeout: Optional[float] = None, *, who: str = "the compute node") -> socket.socket:
        """Wait for one TCP connection and return its socket as accepted (no TLS); :class:`NoReply` if none."""
        limit = self.timeout if timeout is None else timeout
        ready, _, _ = select.select([self._sock], [], [], limit)
        if not ready:
            transcript.note(f"no connection within {limit:g} s")
            raise NoReply(f"expected {who} to connect, got no connection within {limit:g} s", transcripts=[transcript])
        try:
            sock, peer = self._sock.accept()
        except BlockingIOError:
            raise NoReply(f"expected {who} to connect, got a connection that went away", transcripts=[transcript]) from None
        sock.setblocking(True)
        transcript.note(f"accepted a connection from {peer[0]}:{peer[1]}")
        return sock


def first_bytes(sock: socket.socket, timeout: float, size: int = 5) -> bytes:
    """The first bytes a peer sent, left in the socket (``MSG_PEEK``); b"" if none came within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        try:
            peeked = sock.recv(size, socket.MSG_PEEK)
        except OSError:
            break
        if not peeked or peeked == data:
            if not peeked:
                break
            time.sleep(0.005)  # more of the first record is on its way
        data = peeked
    return data


def start_tls_server(sock: socket.socket, context: ssl.SSLContext, transcript: Transcript, timeout: float) -> WireConnection:
    """The kit's side of a node's TLS handshake; :class:`TLSRefused` if it fails."""
    head = first_bytes(sock, timeout)
    if head and not looks_like_tls(head):
        # Kept for the transcript: what the node sent instead of a ClientHello.
        transcript.received(head)
        sock.close()
        transcript.note("not a TLS record: the kit closed the connection")
        raise TLSRefused(
            f"expected a TLS handshake (the kit serves TLS), got plain bytes {head.hex()}",
            clause="TLS-1", transcripts=[transcript], reason="plain bytes", closed=False,
        )
    try:
        tls = server_handshake(sock, context, timeout)
    except HandshakeFailed as failed:
        transcript.note(f"TLS handshake failed: {failed.reason}")
        raise TLSRefused(
            f"expected a TLS handshake with the compute node, got {failed.reason}",
            transcripts=[transcript], reason=failed.reason, verify=failed.verify, closed=failed.closed,
        ) from None
    peer = tls.getpeercert()
    who = f", client certificate for {_subject(peer)}" if peer else ""
    transcript.note(f"TLS handshake done: {tls.version()}, {(tls.cipher() or ('?',))[0]}{who}")
    return WireConnection(tls, transcript, timeout)


def _subject(cert: dict) -> str:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)[:60]
    return "?"

