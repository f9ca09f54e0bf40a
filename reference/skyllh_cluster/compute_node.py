"""The compute node, with the names and signatures of ``skyllh.cluster.compute_node``.

A :class:`ComputeNode` connects to the master and registers when it is
constructed; :meth:`ComputeNode.handle_requests` then serves the master's
messages until a ShutdownCN arrives or the node's live time is over.  Run as
a program it does the same from the command line::

    python -m skyllh_cluster.compute_node MASTER_ADDR MASTER_PORT [--live-time S]

The class is thin blocking I/O around the sans-I/O
:class:`~skyllh_cluster.protocol.connection.Connection`: the connection
decides what every received frame means and when the live time has passed;
this module only moves bytes, waits, and reports.

Each MSG value is printed on stdout as one line ``MSG <json>`` (clause
SCN-3: the value in the lossless JSON of the spec's vectors, see
:mod:`skyllh_cluster.msg_output`), or with ``output="legacy"`` as the
original's ``Received general message: {msg}``.  Either line is bounded to
1 MiB: a value that expands beyond that through shared references, or an int
with more digits than the interpreter converts, is printed cut, with the
count of what was left out, and serving goes on.

Where the original breaks, this one holds:

* it stops when its live time is over even if the master says nothing
  (CN-10; the original looks at the clock only after a command arrives);
* it skips a frame it cannot decode and keeps serving (CN-9; the original
  dies in ``pickle.loads``, or worse, runs what the frame says), even when
  the decoder fails with something other than a ProtocolError;
* it ignores, with a logged warning, a valid command it does not handle
  (CN-8);
* a reply to its registration that is not an ACK raises
  :class:`RegistrationRefused`, which names clause CN-4 and is still a
  ``RuntimeError`` like the original's error.

Exit status of the program (one line on stderr for each failure, a
traceback only with ``--log-level debug``):

* 0 after a ShutdownCN, or when the live time is over after the ACK (CN-6,
  CN-10);
* 1 when the node could not register: no connection, a reply that is not an
  ACK (CN-4), the live time over before the ACK (CN-10), which includes
  ``--live-time 0``: a node whose live time is over at its start does not
  connect at all; and when it lost its master while serving (a close between
  frames, a reset, or a close inside a frame, FRM-5), or its standard output
  was closed;
* 2 for bad arguments (argparse's status; a port outside 1..65535 or a
  negative live time is one);
* 130 when interrupted (SIGINT, Ctrl-C).
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import socket
import ssl
import sys
import time
from types import TracebackType
from typing import Any, Callable, Optional, Sequence, Type, Union, cast

from .clauses import Role
from .commands import MSG, RegisterCN, ShutdownCN, int_cast
from .errors import ProtocolError, RemoteProtocolError
from .msg_output import legacy_line, msg_line
from .protocol.connection import Connection
from .protocol.events import NEED_DATA, ConnectionClosed, Event, UndecodableFrame
from .protocol.states import State
from .srvclt import send_to_socket
from .tls import client_context, failure_reason, looks_like_tls_record
from .wire.framing import HEADER_SIZE, MAX_PAYLOAD

__all__ = [
    "DEFAULT_LIVE_TIME",
    "ComputeNode",
    "ComputeNodeError",
    "RegistrationRefused",
    "LiveTimeOverBeforeAck",
    "MasterClosedConnection",
    "TLSFailure",
    "StdoutClosed",
    "Stop",
    "OutputFormat",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "add_arguments",
    "run_compute_node",
    "run_from_arguments",
    "ssl_context_from_arguments",
    "main",
]

logger = logging.getLogger(__name__)

#: The original's default live time: two hours.
DEFAULT_LIVE_TIME = 2 * 60 * 60

#: Exit status: ShutdownCN received, or the live time over after the ACK.
EXIT_OK = 0
#: Exit status: the node could not register, or lost its master.
EXIT_FAILED = 1
#: Exit status: bad arguments.
EXIT_USAGE = 2
#: Exit status: interrupted by SIGINT (Ctrl-C), as a shell reports 128 + 2.
EXIT_INTERRUPTED = 130

# The longest excerpt of an error's text that goes into a log line: an
# error raised on data from the network must not be echoed unbounded.
_EXCERPT = 300

# A master that sends thousands of bad frames must not make the node write
# far more log than it was sent: this many frames are reported one line each,
# then the rest in one summary line a second at most.
_FRAMES_LOGGED_EACH = 20
_SUMMARY_INTERVAL = 1.0

# One recv can take a whole frame of the largest size.
_RECV_SIZE = HEADER_SIZE + MAX_PAYLOAD
# Never ask the socket for a zero or negative timeout (that would make it
# non-blocking); the live-time check right after the wait ends the loop.
_SHORTEST_WAIT = 1e-3


class _FrameWarnings:
    """The node's warnings about frames it skips or ignores, with bounded volume.

    The first :data:`_FRAMES_LOGGED_EACH` are logged one line each; after
    that the frames are counted, and a summary line is logged at most once a
    :data:`_SUMMARY_INTERVAL` and when serving ends.  So a flood of empty or
    undecodable frames costs a few lines of log, not one per frame.
    """

    def __init__(self) -> None:
        self.logged = 0
        self.pending = 0
        self.last_summary = 0.0

    def warn(self, message: str, *args: Any) -> None:
        if self.logged < _FRAMES_LOGGED_EACH:
            self.logged += 1
            logger.warning(message, *args)
            if self.logged == _FRAMES_LOGGED_EACH:
                self.last_summary = time.monotonic()
            return
        self.pending += 1
        if time.monotonic() - self.last_summary >= _SUMMARY_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Log the frames counted since the last line, if any."""
        if self.pending:
            logger.warning(
                "skipped or ignored %d more frames from the master (after %d reported one by one)",
                self.pending, _FRAMES_LOGGED_EACH,
            )
            self.pending = 0
        self.last_summary = time.monotonic()


class ComputeNodeError(RuntimeError):
    """A compute node could not register, or lost its master.

    A ``RuntimeError``, as every failure of the original compute node is.
    """


class RegistrationRefused(RemoteProtocolError, ComputeNodeError):
    """The master's reply to RegisterCN was not an ACK (clause CN-4).

    Both a :class:`~skyllh_cluster.errors.RemoteProtocolError` (with
    ``clause == "CN-4"`` and the stream offset of the reply) and a
    ``RuntimeError``, so that code written for the original still catches it.
    The error that the connection raised for the reply is its ``__cause__``.
    """


class LiveTimeOverBeforeAck(ComputeNodeError):
    """The node's live time was over before the master acknowledged its registration.

    Raised when the connection could not be made, or the ACK did not come,
    within the live time, and at once, without connecting, when the live time
    is over at the node's start (a live time of 0 or less).  The node does
    not carry on (CN-4, CN-10).
    """


class MasterClosedConnection(ComputeNodeError):
    """The master closed (or reset) the connection before sending ShutdownCN."""


class TLSFailure(ComputeNodeError):
    """TLS with the master failed: its certificate did not verify, the handshake failed, or one side is plain.

    Raised too when a node in plain mode gets a TLS record instead of an ACK:
    the master speaks the TLS profile (``spec/tls-profile.md``, TLS-5).  The
    node never falls back to the other mode (TLS-6).
    """


class OutputFormat(enum.Enum):
    """How the default :meth:`ComputeNode.handle_message` prints a MSG value."""

    #: ``MSG <json>`` (clause SCN-3), what the conformance kit reads.
    JSON = "json"
    #: The original's ``Received general message: {msg}``.
    LEGACY = "legacy"


class StdoutClosed(ComputeNodeError):
    """Standard output was closed while the node printed on it (``echo=True``)."""


class Stop(enum.Enum):
    """Why :meth:`ComputeNode.handle_requests` returned."""

    #: The master sent ShutdownCN.
    SHUTDOWN = "shutdown"
    #: The node's live time was over.
    LIVE_TIME_OVER = "live time over"


class ComputeNode:
    """A compute node: registers with the master, then serves its messages.

    Constructing one connects to ``master_addr:master_port``, sends
    ``RegisterCN(int(start_time), live_time)`` and waits for the master's
    ACK, for at most the live time.

    Args:
        live_time: Seconds this node serves, counted from its construction.
            Cast with ``int()``.  It is sent to the master at registration,
            so it is fixed from then on.
        master_addr: Host name or IP address of the master.
        master_port: TCP port of the master.  Cast with ``int()``.
        on_message: Called with each received MSG value by the default
            :meth:`handle_message`, instead of printing it.
        echo: Print the status lines (``Registered to master ...``,
            ``Received shutdown command. Shutting down.``, and so on) and
            the line of each MSG on stdout.  When false they go to the log
            at level INFO instead.
        output: The line printed for each MSG: :attr:`OutputFormat.JSON`
            (``MSG <json>``, clause SCN-3, the default) or
            :attr:`OutputFormat.LEGACY` (the original's line), or their
            values ``"json"`` and ``"legacy"``.
        ssl_context: The TLS profile (``spec/tls-profile.md``): a client-side
            :class:`ssl.SSLContext` (see
            :func:`skyllh_cluster.tls.client_context`), which verifies the
            master's certificate against its CA and ``master_addr`` (TLS-3)
            and may carry the node's client certificate.  ``None`` (the
            default): plain TCP, as the original.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``output`` is not an output format.
        RegistrationRefused: the reply to RegisterCN was not an ACK.
        LiveTimeOverBeforeAck: no ACK within the live time.
        MasterClosedConnection: the master closed before acknowledging.
        StdoutClosed: stdout was closed when a status line was printed.
        TLSFailure: TLS with the master failed, or only one side speaks it.
        OSError: the connection could not be made.
    """

    #: The socket connected to the master (``None`` until it is connected).
    sock: Optional[socket.socket] = None

    def __init__(
        self,
        live_time: Any,
        master_addr: str,
        master_port: Any,
        *,
        on_message: Optional[Callable[[Any], None]] = None,
        echo: bool = True,
        output: Union[OutputFormat, str] = OutputFormat.JSON,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}")
        self._ssl_context = ssl_context
        self._first_bytes: Optional[bytes] = None
        self._frame_warnings = _FrameWarnings()
        self.live_time = live_time
        self.master_addr = master_addr
        self.master_port = master_port
        self.on_message = on_message
        self.echo = echo
        self.output = OutputFormat(output)

        self._start_time = time.time()
        # CN-10: the live time runs from cn_start_time as registered, the start truncated to a whole second.
        self._conn = Connection(Role.COMPUTE_NODE, start_time=int(self._start_time), live_time=self._live_time)
        try:
            self._register()
        except BaseException:
            self.close()
            raise
        self._say(f"Registered to master {self._master_addr}:{self._master_port}")
        self._say(f"Runtime set to {self._live_time} seconds")

    # -- the seed's properties ---------------------------------------------------------
    @property
    def live_time(self) -> int:
        """The time in seconds this node listens for requests."""
        return self._live_time

    @live_time.setter
    def live_time(self, t: Any) -> None:
        self._live_time = int_cast(t, "live_time")

    @property
    def master_addr(self) -> str:
        """The address of the SkyLLH master program."""
        return self._master_addr

    @master_addr.setter
    def master_addr(self, addr: str) -> None:
        if not isinstance(addr, str):
            raise TypeError("The master_addr property must be of type str!")
        self._master_addr = addr

    @property
    def master_port(self) -> int:
        """The port number of the SkyLLH master program."""
        return self._master_port

    @master_port.setter
    def master_port(self, p: Any) -> None:
        self._master_port = int_cast(p, "master_port")

    @property
    def connection(self) -> Connection:
        """The sans-I/O connection that holds this node's protocol state."""
        return self._conn

    def __repr__(self) -> str:
        return f"<ComputeNode master={self._master_addr}:{self._master_port} {self._conn.state.name}>"

    # -- registration ------------------------------------------------------------------
    def _master(self) -> str:
        return f"{self._master_addr}:{self._master_port}"

    def _seconds_left(self) -> float:
        # The deadline is set at construction from start_time and live_time.
        return cast(float, self._conn.deadline) - time.time()

    def _register(self) -> None:
        if self._seconds_left() <= 0:
            # Connecting would be acting after the live time (CN-10): it is over already.
            raise LiveTimeOverBeforeAck(
                f"the live time of {self._live_time} seconds is over at the start; not connecting to {self._master()}"
            )
        try:
            self.sock = socket.create_connection(
                (self._master_addr, self._master_port), timeout=max(self._seconds_left(), _SHORTEST_WAIT)
            )
        except socket.timeout as exc:
            raise LiveTimeOverBeforeAck(f"could not connect to the master at {self._master()} within the live time") from exc
        if self._ssl_context is not None:
            self._start_tls()
        frame = self._conn.send(RegisterCN(int(self._start_time), self._live_time))
        try:
            send_to_socket(self.sock, frame)
        except (ssl.SSLError, ConnectionError) as exc:
            if self._ssl_context is None:
                raise
            # With TLS 1.3 a master that refuses this node's certificate may
            # close before the RegisterCN is out (TLS-4).
            raise TLSFailure(
                f"TLS with the master at {self._master()} failed while sending RegisterCN: {failure_reason(exc)} "
                "(does the master accept this node's certificate?)"
            ) from exc
        try:
            event = self._next_event()
        except RemoteProtocolError as exc:
            self._refuse_if_master_speaks_tls()
            raise RegistrationRefused(
                "CN-4",
                f"the master at {self._master()} did not reply to RegisterCN with an ACK: {_excerpt(exc)}",
                exc.offset,
            ) from exc
        if event is None:
            raise LiveTimeOverBeforeAck(f"the master at {self._master()} did not acknowledge the registration within the live time")
        if isinstance(event, ConnectionClosed):
            self._refuse_if_master_speaks_tls()
            if self._ssl_context is None:
                hint = " (a master in the TLS profile closes plain connections: --tls-ca)"
            else:
                hint = " (a master in mutual TLS closes nodes whose TLS certificate it does not accept)"
            raise MasterClosedConnection(
                f"the master at {self._master()} closed the connection before acknowledging the registration{hint}"
            )
        # The connection accepts nothing but an ACK here; anything else raised above.
        logger.info("registered to master %s for %d seconds", self._master(), self._live_time)

    def _start_tls(self) -> None:
        """The TLS handshake, within the live time (the socket's timeout); never a fallback (TLS-6)."""
        context = cast(ssl.SSLContext, self._ssl_context)
        try:
            self.sock = context.wrap_socket(cast(socket.socket, self.sock), server_hostname=self._master_addr)
        except socket.timeout as exc:
            raise LiveTimeOverBeforeAck(f"no TLS handshake with the master at {self._master()} within the live time") from exc
        except ssl.SSLCertVerificationError as exc:
            raise TLSFailure(
                f"the master at {self._master()} failed certificate verification (TLS-3): {exc.verify_message}"
            ) from exc
        except (ssl.SSLError, ConnectionError) as exc:
            raise TLSFailure(
                f"TLS handshake with the master at {self._master()} failed: {failure_reason(exc)} "
                "(is the master in the TLS profile, and does it accept this node's certificate?)"
            ) from exc
        logger.info("TLS with master %s: %s", self._master(), self.sock.version())  # type: ignore[attr-defined]

    def _refuse_if_master_speaks_tls(self) -> None:
        """Raise :class:`TLSFailure` when a plain node's first bytes from the master were a TLS record."""
        if self._ssl_context is None and self._first_bytes is not None and looks_like_tls_record(self._first_bytes):
            raise TLSFailure(
                f"the master at {self._master()} answered with TLS: it is in the TLS profile, "
                "and this node in plain mode (give it the CA with --tls-ca)"
            )

    # -- receiving ---------------------------------------------------------------------
    def _next_event(self) -> Optional[Event]:
        """The next event from the master, or ``None`` once the live time is over."""
        while True:
            if self._conn.expire_if_due(time.time()):
                return None
            try:
                event = self._conn.next_event()
            except ProtocolError:
                raise
            except Exception as exc:  # noqa: BLE001 - a decoder failure must cost one frame, not the node
                self._decoder_failed(exc)
                continue
            if event is not NEED_DATA:
                return event
            self._receive()

    def _decoder_failed(self, exc: Exception) -> None:
        """Handle a frame whose decoding raised something other than a ProtocolError.

        The frame has been consumed.  Before the ACK it is a reply that is
        not an ACK (CN-4); while serving it is skipped like any frame that
        does not decode (CN-9).  The error's text is quoted short: it may
        have been built from the frame.
        """
        failure = f"{type(exc).__name__}: {_excerpt(exc)}"
        if self._conn.state is State.AWAIT_ACK:
            # The only frame before the ACK is the first one, at stream offset 0.
            raise RemoteProtocolError("CN-4", f"the reply failed to decode ({failure})", 0) from exc
        self._frame_warnings.warn("skipped a frame from master %s that failed to decode (%s)", self._master(), failure)

    def _receive(self) -> None:
        """Wait for bytes until the live time is over, and hand them to the connection."""
        sock = cast(socket.socket, self.sock)  # connected by _register before any receive
        sock.settimeout(max(self._seconds_left(), _SHORTEST_WAIT))
        try:
            data = sock.recv(_RECV_SIZE)
        except socket.timeout:
            return  # the caller's live-time check ends the wait
        except ConnectionError as exc:
            # A reset means the master is gone, as a close does; the connection
            # decides whether that was between frames or inside one (FRM-5).
            logger.info("connection to master %s lost: %s", self._master(), exc)
            data = b""
        except ssl.SSLError as exc:
            # With TLS 1.3 a master that refuses this node's certificate says
            # so after the node's side of the handshake is done: here (TLS-4).
            raise TLSFailure(f"TLS with the master at {self._master()} failed: {failure_reason(exc)}") from exc
        if self._first_bytes is None:
            self._first_bytes = data[:3]
        self._conn.receive_data(data)

    # -- serving -----------------------------------------------------------------------
    def handle_requests(self) -> Stop:
        """Serve the master's messages until ShutdownCN or the end of the live time.

        Each MSG value goes to :meth:`handle_message`.  A frame that does not
        decode is skipped and a valid command that a compute node does not
        handle is ignored, each with a logged warning.  The socket is closed
        when this returns or raises.

        Returns:
            Why serving stopped.

        Raises:
            MasterClosedConnection: the master closed the connection first.
            RemoteProtocolError: the master broke the framing (it closed in
                the middle of a frame, FRM-5).
            ComputeNodeError: the node is already closed.
            StdoutClosed: stdout was closed when a line was printed.
            Exception: what :meth:`handle_message` raised (the default one
                raises nothing).
        """
        if self._conn.state is State.CLOSED:
            raise ComputeNodeError("this compute node is closed")
        try:
            while True:
                event = self._next_event()
                if event is None:
                    self._say("Live-time exceeded. Shutting down.")
                    return Stop.LIVE_TIME_OVER
                if isinstance(event, MSG):
                    self.handle_message(event.msg)
                elif isinstance(event, ShutdownCN):
                    self._say("Received shutdown command. Shutting down.")
                    return Stop.SHUTDOWN
                elif isinstance(event, UndecodableFrame):
                    self._frame_warnings.warn(
                        "skipped a frame from master %s that does not decode: %s", self._master(), _excerpt(event.error)
                    )
                elif isinstance(event, ConnectionClosed):
                    raise MasterClosedConnection(f"the master at {self._master()} closed the connection before ShutdownCN")
                else:
                    # Named by class only: a RegisterCN's repr would format its fields, of any size.
                    self._frame_warnings.warn(
                        "ignored %s from master %s: a compute node does not handle it", type(event).__name__, self._master()
                    )
        finally:
            self._frame_warnings.flush()
            self.close()

    def handle_message(self, msg: Any) -> None:
        """Handle one MSG value; override it, or pass ``on_message``.

        By default it calls ``on_message`` if one was given, and otherwise
        reports the value's line (see ``output``): ``MSG <json>``, or the
        original's ``Received general message: {msg}``.  Either is at most
        1 MiB, whatever the value (:mod:`skyllh_cluster.msg_output`).
        """
        if self.on_message is not None:
            self.on_message(msg)
        elif self.output is OutputFormat.JSON:
            self._say(msg_line(msg))
        else:
            self._say(legacy_line(msg))

    def _say(self, line: str) -> None:
        if not self.echo:
            logger.info("%s", line)
            return
        stream = sys.stdout
        if not line.isascii():
            # A lone surrogate, or a code point the stream's encoding lacks,
            # is printed escaped instead of raising UnicodeEncodeError.
            encoding = getattr(stream, "encoding", None) or "utf-8"
            line = line.encode(encoding, "backslashreplace").decode(encoding)
        try:
            print(line, file=stream, flush=True)
        except BrokenPipeError as exc:  # e.g. piped into `head`, which has exited
            raise StdoutClosed("standard output was closed; the node cannot report its messages") from exc

    # -- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection to the master.  Calling it again does nothing."""
        if self.sock is not None:
            self.sock.close()
        self._conn.close()

    def __enter__(self) -> "ComputeNode":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if "_conn" in self.__dict__:  # __init__ may have failed before there was anything to close
            self.close()


def _excerpt(error: BaseException) -> str:
    """An error's text, cut to a few hundred characters (its type's name if it has none)."""
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - str() of an error built from hostile data may itself fail
        text = ""
    if not text:
        return type(error).__name__
    if len(text) > _EXCERPT:
        return f"{text[:_EXCERPT]}... ({len(text)} characters)"
    return text


# -- command line ----------------------------------------------------------------------
def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a TCP port number (1 to 65535)")
    return port


def _live_time(text: str) -> int:
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number of seconds") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError("the live time must not be negative")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the compute node's arguments to ``parser``.

    They are the original's ``master_addr``, ``master_port`` and
    ``live_time``, and ``output``.  A port outside 1..65535 and a negative
    live time are usage errors.
    """
    parser.add_argument(
        "master_addr", metavar="MASTER_ADDR", help="The address (IP / hostname) of the SkyLLH master program."
    )
    parser.add_argument(
        "master_port", metavar="MASTER_PORT", type=_port, help="The port number of the SkyLLH master program."
    )
    parser.add_argument(
        "--live-time",
        metavar="S",
        type=_live_time,
        default=DEFAULT_LIVE_TIME,
        help="The time in seconds to run this compute node instance (default: %(default)s). "
        "With 0 the live time is over at the start: the node does not connect, and exits 1.",
    )
    parser.add_argument(
        "--output",
        choices=[fmt.value for fmt in OutputFormat],
        default=OutputFormat.JSON.value,
        help="the line printed for each message: 'json' is 'MSG <json>' (spec clause SCN-3, "
        "what the conformance kit reads), 'legacy' is the original's 'Received general message: ...' "
        "(default: %(default)s)",
    )
    tls = parser.add_argument_group(
        "TLS profile (spec/tls-profile.md)",
        "With --tls-ca or --tls-cert the node speaks TLS only, never plain TCP: it verifies the master's "
        "certificate against the CA and MASTER_ADDR, and refuses (exit 1) one that does not verify.",
    )
    tls.add_argument("--tls-ca", metavar="FILE", help="PEM file with the CA that signs the master's certificate")
    tls.add_argument("--tls-cert", metavar="FILE", help="PEM file with this node's client certificate (mutual TLS)")
    tls.add_argument("--tls-key", metavar="FILE", help="PEM file with its private key (default: in --tls-cert)")


def ssl_context_from_arguments(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The client context that ``--tls-ca``, ``--tls-cert`` and ``--tls-key`` describe; ``None`` for plain mode.

    Raises:
        ValueError: ``--tls-key`` without ``--tls-cert``.
        OSError, ssl.SSLError: a file cannot be read or holds no valid PEM.
    """
    ca, cert, key = getattr(args, "tls_ca", None), getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if ca is None and cert is None:
        if key is not None:
            raise ValueError("--tls-key needs --tls-cert")
        return None
    return client_context(ca, cert, key)


def run_compute_node(
    host: str,
    port: int,
    live_time: int,
    *,
    on_message: Optional[Callable[[Any], None]] = None,
    output: Union[OutputFormat, str] = OutputFormat.JSON,
    ssl_context: Optional[ssl.SSLContext] = None,
) -> int:
    """Register with the master at ``host:port``, serve, and return an exit status.

    ``ssl_context`` selects the TLS profile (see :class:`ComputeNode`).

    The status lines and each message's line go to stdout; a failure is one
    line on stderr (its traceback is logged at level DEBUG).

    Returns:
        :data:`EXIT_OK` after a ShutdownCN or at the end of the live time;
        :data:`EXIT_FAILED` when the node could not register or lost its
        master; :data:`EXIT_INTERRUPTED` on SIGINT.
    """
    try:
        with ComputeNode(live_time, host, port, on_message=on_message, output=output, ssl_context=ssl_context) as node:
            node.handle_requests()
    except KeyboardInterrupt:
        print("compute node: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except StdoutClosed as exc:
        # Point stdout at /dev/null, so that the interpreter's flush at exit cannot fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # a stdout without a file descriptor: nothing to flush at exit
            pass
        print(f"compute node: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ComputeNodeError, ProtocolError) as exc:
        logger.debug("the compute node failed", exc_info=True)
        print(f"compute node: {_excerpt(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except socket.gaierror as exc:
        logger.debug("the host name did not resolve", exc_info=True)
        print(f"compute node: cannot resolve the master's host name {host!r}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        logger.debug("the connection failed", exc_info=True)
        print(f"compute node: no connection to the master at {host}:{port}: {_excerpt(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - one line for the user; the traceback at --log-level debug
        logger.debug("the compute node failed", exc_info=True)
        print(
            f"compute node: internal error, {type(exc).__name__}: {_excerpt(exc)} (--log-level debug shows where)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def run_from_arguments(args: argparse.Namespace) -> int:
    """Run the compute node that :func:`add_arguments`' options describe; return the exit status."""
    try:
        context = ssl_context_from_arguments(args)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        print(f"compute node: cannot set up TLS: {_excerpt(exc)}", file=sys.stderr)
        return EXIT_FAILED
    return run_compute_node(args.master_addr, args.master_port, args.live_time, output=args.output, ssl_context=context)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The program ``python -m skyllh_cluster.compute_node``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m skyllh_cluster.compute_node",
        description="SkyLLH Compute Node: register with a SkyLLH master and serve its messages "
        "until it sends ShutdownCN or the live time is over.",
        epilog="exit status: 0 after ShutdownCN or at the end of the live time, 1 when the node could not "
        "register or lost its master (one line on stderr), 2 bad arguments, 130 interrupted.",
    )
    add_arguments(parser)
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error", "critical"),
        help="Log messages of this level and above on stderr (default: %(default)s).",
    )
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        return run_from_arguments(args)
    except KeyboardInterrupt:  # before the node started, or while its failure was printed
        print("compute node: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover - the program's entry point, run by the CLI tests
    sys.exit(main())
