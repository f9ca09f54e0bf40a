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

Where the original breaks, this one holds:

* it stops when its live time is over even if the master says nothing
  (CN-10; the original looks at the clock only after a command arrives);
* it skips a frame it cannot decode and keeps serving (CN-9; the original
  dies in ``pickle.loads``, or worse, runs what the frame says);
* it ignores, with a logged warning, a valid command it does not handle
  (CN-8);
* a reply to its registration that is not an ACK raises
  :class:`RegistrationRefused`, which names clause CN-4 and is still a
  ``RuntimeError`` like the original's error.

Exit status of the program: 0 after a ShutdownCN or when the live time is
over; 1 when the node could not register or lost its master (the error is
printed on stderr); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import enum
import logging
import socket
import sys
import time
from types import TracebackType
from typing import Any, Callable, Optional, Sequence, Type, cast

from .clauses import Role
from .commands import MSG, RegisterCN, ShutdownCN, int_cast
from .errors import ProtocolError, RemoteProtocolError
from .protocol.connection import Connection
from .protocol.events import NEED_DATA, ConnectionClosed, Event, UndecodableFrame
from .protocol.states import State
from .srvclt import send_to_socket
from .wire.framing import HEADER_SIZE, MAX_PAYLOAD

__all__ = [
    "DEFAULT_LIVE_TIME",
    "ComputeNode",
    "ComputeNodeError",
    "RegistrationRefused",
    "RegistrationTimeout",
    "MasterClosedConnection",
    "Stop",
    "add_arguments",
    "run_compute_node",
    "main",
]

logger = logging.getLogger(__name__)

#: The original's default live time: two hours.
DEFAULT_LIVE_TIME = 2 * 60 * 60

# One recv can take a whole frame of the largest size.
_RECV_SIZE = HEADER_SIZE + MAX_PAYLOAD
# Never ask the socket for a zero or negative timeout (that would make it
# non-blocking); the live-time check right after the wait ends the loop.
_SHORTEST_WAIT = 1e-3


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


class RegistrationTimeout(ComputeNodeError):
    """The live time was over before the master acknowledged the registration."""


class MasterClosedConnection(ComputeNodeError):
    """The master closed (or reset) the connection before sending ShutdownCN."""


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
        echo: Print the original's status lines on stdout (``Registered to
            master ...``, ``Received general message: ...``, and so on).
            When false they go to the log at level INFO instead.

    Raises:
        TypeError: an argument has the wrong type.
        RegistrationRefused: the reply to RegisterCN was not an ACK.
        RegistrationTimeout: no ACK within the live time.
        MasterClosedConnection: the master closed before acknowledging.
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
    ) -> None:
        self.live_time = live_time
        self.master_addr = master_addr
        self.master_port = master_port
        self.on_message = on_message
        self.echo = echo

        self._start_time = time.time()
        self._conn = Connection(Role.COMPUTE_NODE, start_time=self._start_time, live_time=self._live_time)
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
        try:
            self.sock = socket.create_connection(
                (self._master_addr, self._master_port), timeout=max(self._seconds_left(), _SHORTEST_WAIT)
            )
        except socket.timeout as exc:
            raise RegistrationTimeout(f"could not connect to the master at {self._master()} within the live time") from exc
        send_to_socket(self.sock, self._conn.send(RegisterCN(int(self._start_time), self._live_time)))
        try:
            event = self._next_event()
        except RemoteProtocolError as exc:
            raise RegistrationRefused(
                "CN-4", f"the master at {self._master()} did not reply to RegisterCN with an ACK: {exc}", exc.offset
            ) from exc
        if event is None:
            raise RegistrationTimeout(f"the master at {self._master()} did not acknowledge the registration within the live time")
        if isinstance(event, ConnectionClosed):
            raise MasterClosedConnection(f"the master at {self._master()} closed the connection before acknowledging the registration")
        # The connection accepts nothing but an ACK here; anything else raised above.
        logger.info("registered to master %s for %d seconds", self._master(), self._live_time)

    # -- receiving ---------------------------------------------------------------------
    def _next_event(self) -> Optional[Event]:
        """The next event from the master, or ``None`` once the live time is over."""
        while True:
            if self._conn.expire_if_due(time.time()):
                return None
            event = self._conn.next_event()
            if event is not NEED_DATA:
                return event
            self._receive()

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
                    logger.warning("skipped a frame from master %s that does not decode: %s", self._master(), event.error)
                elif isinstance(event, ConnectionClosed):
                    raise MasterClosedConnection(f"the master at {self._master()} closed the connection before ShutdownCN")
                else:
                    logger.warning("ignored %r from master %s: a compute node does not handle it", event, self._master())
        finally:
            self.close()

    def handle_message(self, msg: Any) -> None:
        """Handle one MSG value; override it, or pass ``on_message``.

        By default it calls ``on_message`` if one was given, and otherwise
        reports ``Received general message: {msg}`` as the original does.
        """
        if self.on_message is not None:
            self.on_message(msg)
        else:
            self._say(f"Received general message: {msg}")

    def _say(self, line: str) -> None:
        if self.echo:
            print(line, flush=True)
        else:
            logger.info("%s", line)

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


# -- command line ----------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the compute node's arguments (the original's) to ``parser``.

    They are ``master_addr``, ``master_port`` and ``live_time``.
    """
    parser.add_argument(
        "master_addr", metavar="MASTER_ADDR", help="The address (IP / hostname) of the SkyLLH master program."
    )
    parser.add_argument(
        "master_port", metavar="MASTER_PORT", type=int, help="The port number of the SkyLLH master program."
    )
    parser.add_argument(
        "--live-time",
        metavar="S",
        type=int,
        default=DEFAULT_LIVE_TIME,
        help="The time in seconds to run this compute node instance (default: %(default)s).",
    )


def run_compute_node(
    host: str, port: int, live_time: int, *, on_message: Optional[Callable[[Any], None]] = None
) -> int:
    """Register with the master at ``host:port``, serve, and return an exit status.

    The original's status lines go to stdout; a failure is printed on stderr.

    Returns:
        0 after a ShutdownCN or at the end of the live time; 1 when the node
        could not register or lost its master.
    """
    try:
        with ComputeNode(live_time, host, port, on_message=on_message) as node:
            node.handle_requests()
    except (ComputeNodeError, ProtocolError) as exc:
        print(f"compute node: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"compute node: no connection to the master at {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The program ``python -m skyllh_cluster.compute_node``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m skyllh_cluster.compute_node",
        description="SkyLLH Compute Node: register with a SkyLLH master and serve its messages "
        "until it sends ShutdownCN or the live time is over.",
    )
    add_arguments(parser)
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error", "critical"),
        help="Log messages of this level and above on stderr (default: %(default)s).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_compute_node(args.master_addr, args.master_port, args.live_time)


if __name__ == "__main__":  # pragma: no cover - the program's entry point, run by the CLI tests
    sys.exit(main())
