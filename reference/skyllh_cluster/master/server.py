"""The master's engine: one selector loop for thousands of compute nodes.

:class:`MasterServer` is thin I/O around the sans-I/O core.  Every
connection it accepts gets a :class:`~skyllh_cluster.protocol.Connection` of
the master's role, which decides what each received byte means; the engine
only moves bytes, keeps time and applies the policy of the mode it runs in:

* :meth:`MasterServer.register` accepts connections until the registry holds
  the wanted number of nodes, answering each valid RegisterCN with one ACK;
* :meth:`MasterServer.broadcast` encodes a command once and writes the same
  frame to every live node; :meth:`MasterServer.shutdown` does so with
  ShutdownCN and closes each connection afterwards (MST-6);
* :meth:`MasterServer.serve_script` runs a fixed script for every node that
  registers (the conformance scenario) until :meth:`MasterServer.stop`.

There is no thread per node: the blocking calls above run one loop until
they are done (only a broadcast's ``send`` calls are spread over a few
threads, see :mod:`~skyllh_cluster.master.fanout`), so the engine is idle
between calls and the kernel queues what arrives meanwhile.  Sockets are
non-blocking and watched by a :mod:`~skyllh_cluster.master.poller` (epoll on
Linux), so one process serves as many nodes as it may open files (see
:func:`~skyllh_cluster.master.fdlimit.ensure_fd_limit`).

Isolation (MST-3, MST-4, ERR-1): a connection whose first frame is not a
valid RegisterCN, that stalls inside a frame, or that sends anything after
registering is closed on its own, without an ACK, and logged; nothing a peer
sends can stop the loop or reach another connection.
"""

from __future__ import annotations

import errno
import functools
import logging
import operator
import os
import socket
import ssl
import struct
import time
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ..clauses import Role
from ..commands import ACK, Command, ShutdownCN
from ..errors import RemoteProtocolError
from ..protocol.connection import Connection, encode_command_frame
from ..protocol.events import NEED_DATA, ConnectionClosed
from .fanout import FanOut
from .fdlimit import available_memory, ensure_fd_limit, fd_limit
from .node import BEHIND, Node, send_frame_to_each
from .poller import READ, WRITE, DefaultPoller, Poller
from .reports import BroadcastResult, PeerClosedError, RegistrationTimeout, SendTimeoutError, TLSHandshakeError
from ..tls import AllowList, failure_reason, looks_like_tls_record

__all__ = ["MasterServer", "ProgressCallback"]

logger = logging.getLogger(__name__)

#: Called after each registration with the node and the registry's new size.
ProgressCallback = Callable[[Node, int], None]

#: At most this many connections are accepted per wake-up, so that a flood
#: of connects cannot starve the nodes already connected.
ACCEPT_BATCH = 512
#: The longest single wait of the loop; every wait is bounded anyway.
MAX_WAIT = 1.0
#: How long to stop accepting after the process ran out of descriptors.
ACCEPT_PAUSE = 0.5
#: Descriptors kept free for everything that is not a compute node.
FD_HEADROOM = 64
#: What one connection that has not registered may cost at most, for the
#: memory share of the cap on them: a whole frame buffered (64 KiB), its
#: socket's kernel buffers and the Python objects around them.
UNREGISTERED_COST = 256 * 1024
#: Bytes queued in the master for one node, beyond what its socket took,
#: before that node fails for reading too slowly (MST-8).  Frames are
#: shared between nodes, so this bounds the delay, not the memory per node.
MAX_QUEUED = 1 << 20
#: While events come in a burst (thousands of nodes registering), the loop
#: does not block in the poller between them: a blocked loop has to be woken
#: by whoever sends the next packet, and on loopback that sender is a compute
#: node, whose CPU then pays for an inter-processor wake-up (a VM exit on a
#: virtual machine).  Instead it polls without blocking and, when nothing is
#: ready, sleeps this long on its own timer.  Measured on 2 cores with 5000
#: raw nodes: the nodes' CPU per registration fell by about 5%.
BURST_NAP = 50e-6
#: After this long without an event the burst is over and the loop blocks again.
BURST_QUIET = 1e-3

#: Whether the listening socket clears ``TCP_QUICKACK`` (Linux), which the
#: connections it accepts inherit.  The master answers a RegisterCN at once,
#: so the kernel's ACK of it can ride on the ACK frame instead of going out
#: as a packet of its own: a registration takes 6 TCP segments instead of 7.
#: On loopback a packet's receive path runs in its sender's system call, so
#: the saving is the nodes' CPU: measured with 5000 raw nodes on 2 cores, the
#: load generator's CPU per registration fell by about 6%.  A peer whose
#: RegisterCN gets no answer is ACKed by the delayed-ACK timer (tens of ms).
DELAYED_ACK = hasattr(socket, "TCP_QUICKACK")

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# On POSIX, SO_REUSEADDR only lets a new master bind while connections of an
# old one linger in TIME_WAIT; on Windows it would let two sockets share a port.
_REUSE_ADDRESS = os.name == "posix"

_READ_WRITE = READ | WRITE
#: What a non-blocking TLS read raises when no whole record is there yet.
_READ_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
#: Sources refused by the allow-list are logged once each; past this many
#: distinct ones (a scan), only the count is kept, so that a flood of
#: sources cannot grow the master's memory or its log.
REFUSED_SOURCES_LOGGED = 1024
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}
_LISTENER = "listener"
_WAKE = "wake"
_connection_of = operator.attrgetter("connection")


class MasterServer:
    """The event-loop engine of a master node.

    Args:
        blocksize: Largest number of bytes read from a node at once.
        registration_timeout: Seconds a connection may take, from accept, to
            deliver its whole RegisterCN (MST-7, FRM-6); after that it is
            closed without an ACK.  The default, 3 s, is below the
            conformance kit's default registration budget (5 s).
        send_threads: Threads that make the ``send`` calls of a large
            broadcast (see :mod:`~skyllh_cluster.master.fanout`); default:
            one per CPU, at most 4.
        unregistered_fraction: Load shedding.  The connections that have not
            registered yet are capped at this fraction of the open-file
            limit and of the memory available (counting
            :data:`UNREGISTERED_COST` bytes each), whichever is lower.  At
            the cap, each new connection closes the oldest one that has not
            registered, so that silent or trickling connections cannot keep
            an honest node out for a registration timeout.  Logged once per
            burst.
        slow_node_wait: Seconds a broadcast waits for a node that fell
            behind in it before returning with the rest of that node's
            frame queued (see :meth:`broadcast`).
        max_queued: Bytes that may stay queued for one node beyond what its
            socket took; a node over it fails (it reads too slowly, MST-8).
        poller: What tells the loop which sockets are ready (default: a new
            :data:`~skyllh_cluster.master.poller.DefaultPoller`).  A test
            hook: anything with the poller's methods will do.
        ssl_context: The TLS profile (``spec/tls-profile.md``): a server-side
            :class:`ssl.SSLContext` (see
            :func:`skyllh_cluster.tls.server_context`).  Every connection is
            then TLS: its handshake runs in the event loop without blocking,
            inside the registration bound (TLS-7), and a connection whose
            handshake fails, a plain one included, is closed having had
            nothing decoded, sent or admitted (TLS-5).  ``None`` (the
            default) is the plain profile, byte for byte the original's.
        allow: The networks that may connect (TLS-8): an
            :class:`~skyllh_cluster.tls.AllowList`, a comma-separated string
            (``"10.0.0.0/8,192.0.2.5"``) or an iterable of networks.  A
            connection from elsewhere is closed at accept, before anything
            is read from it, and logged once per source.  ``None``: anyone.

    Use it as a context manager, or call :meth:`close`, to close every
    socket it opened.
    """

    def __init__(
        self,
        *,
        blocksize: int = 2048,
        registration_timeout: float = 3.0,
        send_threads: Optional[int] = None,
        unregistered_fraction: float = 0.5,
        slow_node_wait: float = 1.0,
        max_queued: int = MAX_QUEUED,
        poller: Optional[Poller] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        allow: "AllowList | str | Iterable[str] | None" = None,
    ) -> None:
        if not isinstance(blocksize, int) or isinstance(blocksize, bool) or blocksize < 1:
            raise ValueError(f"blocksize must be a positive int, not {blocksize!r}")
        if not registration_timeout > 0:
            raise ValueError(f"registration_timeout must be positive, not {registration_timeout!r}")
        if not 0 < unregistered_fraction <= 1:
            raise ValueError(f"unregistered_fraction must be in (0, 1], not {unregistered_fraction!r}")
        if not slow_node_wait >= 0:
            raise ValueError(f"slow_node_wait must not be negative, not {slow_node_wait!r}")
        if not max_queued >= 0:
            raise ValueError(f"max_queued must not be negative, not {max_queued!r}")
        self._blocksize = blocksize
        self._registration_timeout = float(registration_timeout)
        self._unregistered_fraction = float(unregistered_fraction)
        self._slow_node_wait = float(slow_node_wait)
        self._max_queued = max_queued
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}")
        self._ssl_context = ssl_context
        if allow is None or isinstance(allow, AllowList):
            self._allow = allow
        else:
            self._allow = AllowList.parse(allow) if isinstance(allow, str) else AllowList(allow)
        self._refused_sources: Set[str] = set()
        self._refused = 0
        self._unregistered_cap = 1
        self._shed_in_burst = 0
        self._accept_starved = False
        self._poller: Poller = DefaultPoller() if poller is None else poller
        self._listener: Optional[socket.socket] = None
        self._address: Optional[Tuple[str, int]] = None
        self._accepting = False
        self._accept_paused_until: Optional[float] = None
        self._open: Set[Node] = set()
        self._registry: Dict[str, Node] = {}
        # The connections accepted that have not registered yet, oldest
        # first: the registration timeout (MST-7) is checked from the front.
        self._awaiting: "OrderedDict[Node, None]" = OrderedDict()
        self._flushing: Set[Node] = set()
        self._admit: Callable[[Node], None] = self._refuse_registration
        self._ack_frame = encode_command_frame(ACK())
        self._fanout = FanOut(send_threads)
        self._broadcasting = False
        self._served = 0
        self._stop_requested = False
        self._closed = False
        # stop() may come from a signal handler or another thread: it writes
        # a byte to this pair, which wakes the loop from its wait.  Only
        # serve_script() can be stopped, so the pair is made there: a master
        # that only registers reaches listen() sooner, before its nodes give up.
        self._wake: Optional[Tuple[socket.socket, socket.socket]] = None

    # -- views -------------------------------------------------------------------
    @property
    def address(self) -> Optional[Tuple[str, int]]:
        """The ``(host, port)`` listened on, with the real port; ``None`` when not listening."""
        return self._address

    @property
    def nodes(self) -> List[Node]:
        """The registered, live nodes, in registration order."""
        return list(self._registry.values())

    @property
    def connections(self) -> List[Node]:
        """Every open node connection: registered, adopted or not registered yet."""
        return list(self._open)

    @property
    def tls(self) -> bool:
        """Whether the engine speaks the TLS profile (it was given an ``ssl_context``)."""
        return self._ssl_context is not None

    @property
    def allow(self) -> Optional[AllowList]:
        """The networks that may connect; ``None``: anyone."""
        return self._allow

    @property
    def refused(self) -> int:
        """How many connections the allow-list has closed at accept."""
        return self._refused

    @property
    def unregistered_cap(self) -> int:
        """How many connections may await registration at once while accepting (see ``unregistered_fraction``)."""
        return self._unregistered_cap

    @property
    def served(self) -> int:
        """How many nodes :meth:`serve_script` has admitted so far."""
        return self._served

    def __enter__(self) -> "MasterServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- listening ---------------------------------------------------------------
    def listen(self, host: str, port: int, backlog: int = 128) -> Tuple[str, int]:
        """Bind a listening socket to ``(host, port)`` and return the address.

        ``port`` 0 picks a free port; the address returned has the real one.
        Connections queue in the kernel until :meth:`register` or
        :meth:`serve_script` accepts them.  Sets ``SO_REUSEADDR`` on POSIX,
        which the original did not (so a restarted master can bind at once),
        and on Linux clears ``TCP_QUICKACK`` (see :data:`DELAYED_ACK`).
        """
        if self._listener is not None:
            raise RuntimeError(f"already listening on {self._address}")
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, kind, proto)
        try:
            if _REUSE_ADDRESS:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(max(1, backlog))
            if DELAYED_ACK:
                listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        bound = listener.getsockname()
        self._address = (bound[0], bound[1])
        logger.info("listening on %s:%d", *self._address)
        return self._address

    def stop_listening(self) -> None:
        """Close the listening socket and every connection that has not registered yet."""
        self._stop_accepting()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self._address = None
        for node in list(self._awaiting):
            logger.info("closing %s, which had not registered when listening stopped", node.key)
            self._close(node)
        self._awaiting = OrderedDict()  # an emptied one keeps the table it grew to
        self._end_shedding_burst()

    def _start_accepting(self) -> None:
        if self._listener is None:
            raise RuntimeError("call listen() first")
        self._poller.register(self._listener.fileno(), READ, _LISTENER)
        self._accepting = True
        fraction = self._unregistered_fraction
        limit = fd_limit()
        by_fds = min(int(limit * fraction), limit - FD_HEADROOM)  # accept() itself must never run out
        by_memory = int(available_memory() * fraction) // UNREGISTERED_COST
        self._unregistered_cap = max(1, min(by_fds, by_memory))

    def _stop_accepting(self) -> None:
        self._pause_accepting()
        self._accept_paused_until = None

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._poller.unregister(self._listener.fileno())  # type: ignore[union-attr]
            self._accepting = False

    # -- the modes -----------------------------------------------------------------
    def register(
        self, n: int, *, timeout: Optional[float] = None, progress: Optional[ProgressCallback] = None
    ) -> List[Node]:
        """Accept connections until ``n`` live nodes are registered; then stop listening.

        Each valid RegisterCN is answered with one ACK.  Bad connections are
        closed without an ACK and logged; they do not count and do not stop
        the others.  A registered node that goes away before ``n`` are
        reached is dropped, and another one is awaited.

        Raises:
            RegistrationTimeout: ``timeout`` seconds passed first.  The nodes
                registered so far stay registered.
        """
        if n < 0:
            raise ValueError(f"the number of compute nodes must not be negative, not {n}")
        ensure_fd_limit(len(self._open) + n + FD_HEADROOM)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._admit = functools.partial(self._admit_to_registry, n, progress)
        self._start_accepting()
        try:
            done = self._run(lambda: len(self._registry) >= n, deadline)
        finally:
            self._admit = self._refuse_registration
            self.stop_listening()
        if not done:
            raise RegistrationTimeout(len(self._registry), n, timeout)  # type: ignore[arg-type]
        return self.nodes

    def serve_script(self, commands: Sequence[Command]) -> int:
        """Serve every node that registers, until :meth:`stop`; return how many were admitted.

        Each node gets an ACK, then ``commands`` in order, then ShutdownCN,
        and its connection is closed (the conformance scenario, SCN-1/SCN-2).
        Nodes are served concurrently; each frame is encoded once.
        """
        script = [(command, encode_command_frame(command)) for command in commands]
        script.append((ShutdownCN(), encode_command_frame(ShutdownCN())))
        blob = self._ack_frame + b"".join(frame for _, frame in script)
        self._open_wake_pair()
        self._stop_requested = False
        self._admit = functools.partial(self._admit_scripted, script, blob)
        self._start_accepting()
        try:
            self._run(lambda: False, None, stoppable=True)
        finally:
            self._admit = self._refuse_registration
            self._stop_accepting()
        return self._served

    def stop(self) -> None:
        """Make a running :meth:`serve_script` return.  Safe from signal handlers and threads."""
        self._stop_requested = True
        wake = self._wake
        if wake is None:  # serve_script() has never run: there is no loop to wake
            return
        try:
            wake[1].send(b"\0")
        except OSError:  # the wake-up pipe is full (a wake-up is pending) or closed
            pass

    def _open_wake_pair(self) -> None:
        if self._wake is None:
            wake_recv, wake_send = socket.socketpair()
            wake_recv.setblocking(False)
            wake_send.setblocking(False)
            self._poller.register(wake_recv.fileno(), READ, _WAKE)
            self._wake = (wake_recv, wake_send)

    def broadcast(
        self,
        command: Command,
        nodes: Optional[Iterable[Node]] = None,
        *,
        timeout: Optional[float] = None,
        close_after: bool = False,
    ) -> BroadcastResult:
        """Send ``command`` to every live node of ``nodes`` (default: the registry).

        The frame is encoded once.  What arrived from the nodes since the
        last call is taken in first, so that a node that closed is not
        written to.  A node whose live time has passed is dropped and sent
        nothing (MST-9).  Every other node is written to, whatever happens
        to the rest (MST-8).

        A slow node costs only itself.  The call returns when every node
        has the whole frame in its socket, has failed, or has the rest of
        the frame queued in the master: a node that falls behind in this
        call holds it for at most ``slow_node_wait`` seconds (1 s by
        default), and a node that was already behind holds it not at all.
        Queued bytes are written by the event loop during later calls of
        this engine.  A node fails (:class:`SendTimeoutError`) when more
        than ``max_queued`` bytes are queued for it, or when bytes have been
        queued for it for more than ``timeout`` seconds, as found at the
        start or the end of a broadcast.  With ``close_after`` (a
        shutdown) the call waits until every node has its frame or failed,
        at most ``timeout`` seconds, and closes each node once it has it.

        Raises:
            LocalProtocolError: the command cannot be encoded (nothing was sent).
        """
        self._broadcasting = True
        try:
            return self._broadcast(command, nodes, timeout, close_after)
        finally:
            self._broadcasting = False

    def _broadcast(
        self, command: Command, nodes: Optional[Iterable[Node]], timeout: Optional[float], close_after: bool
    ) -> BroadcastResult:
        name = type(command).__name__
        targets = list(self._registry.values()) if nodes is None else list(nodes)
        self._poll()  # a node that closed or spoke since the last call fails now, unwritten
        self._fail_stalled(timeout)
        # Up to the first send, every step is a pass over thousands of nodes
        # that delays them all; set operations and map() keep those passes in C.
        closed = set() if self._open.issuperset(targets) else {node for node in targets if node.closed}
        already_failed: Dict[str, BaseException] = {
            node.key: node.failure or PeerClosedError("the connection was already closed") for node in closed
        }
        live = [node for node in targets if node not in closed] if closed else targets
        # The protocol's decisions for all nodes at once, in the sans-I/O core.
        plan = Connection.plan_broadcast(list(map(_connection_of, live)), command, time.time())
        expired = [live[index].key for index in plan.expired]
        for index in plan.expired:
            logger.info("compute node %s: live time passed; dropped without sending %s", live[index].key, name)
            self._close(live[index])
        for index, error in plan.refused:
            self._drop(live[index], error)
        sendable = live if len(plan.sendable) == len(live) else [live[index] for index in plan.sendable]
        self._send_to_each(plan.frame, sendable, close_after)
        if close_after:
            deadline = None if timeout is None else time.monotonic() + timeout
            self._run(lambda: not self._flushing, deadline)
            for node in list(self._flushing):
                self._drop(node, SendTimeoutError(f"{node.pending} bytes of {name} not taken within {timeout:g} s"))
        else:
            self._wait_for_nodes_behind()
            self._fail_stalled(timeout)
        return self._outcome(name, targets, already_failed, expired)

    def _send_to_each(self, frame: bytes, sendable: List[Node], close_after: bool) -> None:
        """Offer ``frame`` to every node's socket at once; queue what a socket did not take."""
        step = functools.partial(send_frame_to_each, frame, close_after)
        whole = len(frame)
        for node, outcome in zip(sendable, self._fanout.map_chunks(step, sendable)):
            if outcome == whole:
                if close_after:
                    self._flushed(node)
            elif outcome is BEHIND:  # the frame goes behind the bytes still queued
                self._write(node, frame)
            elif isinstance(outcome, BaseException):
                self._drop(node, outcome)
            else:  # the socket took part of the frame; the loop writes the rest
                node.queue_unsent(frame, outcome)  # type: ignore[arg-type]
                self._flushing.add(node)
                self._watch(node, _READ_WRITE)

    def _wait_for_nodes_behind(self) -> None:
        """Run the loop until each node behind has caught up, failed, or been behind ``slow_node_wait``."""
        while self._flushing:
            until = max(node.behind_since for node in self._flushing) + self._slow_node_wait
            if time.monotonic() >= until or self._run(lambda: not self._flushing, until):
                return

    def _fail_stalled(self, timeout: Optional[float]) -> None:
        """Drop every node that has had bytes queued for longer than ``timeout`` seconds."""
        if timeout is None or not self._flushing:
            return
        limit = time.monotonic() - timeout
        for node in [node for node in self._flushing if node.behind_since <= limit and not node.closed]:
            self._drop(node, SendTimeoutError(f"{node.pending} bytes queued and not taken within {timeout:g} s"))

    def _outcome(
        self, name: str, targets: List[Node], already_failed: Dict[str, BaseException], expired: List[str]
    ) -> BroadcastResult:
        expired_keys = set(expired)
        queued_keys = {node.key for node in self._flushing}
        delivered: List[str] = []
        queued: List[str] = []
        failed: Dict[str, BaseException] = {}
        for node in targets:
            key = node.key
            if key in expired_keys:
                continue
            cause = already_failed.get(key) or node.failure
            if cause is not None:
                failed[key] = cause
            elif queued_keys and key in queued_keys:
                queued.append(key)
            else:
                delivered.append(key)
        result = BroadcastResult(name, tuple(delivered), failed, tuple(expired), tuple(queued))
        if failed:  # the result lists them; the caller reports them
            logger.info("%s reached %d node(s); %d failed", name, len(delivered) + len(queued), len(failed))
        if queued:
            logger.info("%s: %d slow node(s) have the rest of the frame queued", name, len(queued))
        return result

    def shutdown(self, nodes: Optional[Iterable[Node]] = None, *, timeout: Optional[float] = None) -> BroadcastResult:
        """Send ShutdownCN to every live node and close each connection after it (MST-6)."""
        return self.broadcast(ShutdownCN(), nodes, timeout=timeout, close_after=True)

    # -- nodes made elsewhere -------------------------------------------------------
    def adopt(self, node: Node) -> None:
        """Take charge of a node whose connection registered elsewhere.

        Its socket is made non-blocking and watched like the engine's own.
        The node is not added to the registry; pass it to :meth:`broadcast`.
        """
        node.sock.setblocking(False)
        self._open.add(node)
        self._watch(node, READ)

    def discard(self, node: Node) -> None:
        """Close ``node``'s connection without a word (it is no longer wanted)."""
        if not node.closed:
            logger.debug("compute node %s: discarded", node.key)
            self._close(node)

    def send_now(self, node: Node, command: Command, timeout: Optional[float] = None) -> None:
        """Send ``command`` to one node and wait until it is written.

        Raises the :class:`OSError` of a broken connection (and drops the
        node), :class:`SendTimeoutError` after ``timeout`` seconds, or
        :class:`LocalProtocolError` when the node's state forbids the command.
        """
        if node.closed:
            raise node.failure or PeerClosedError(f"the connection to {node.key} is closed")
        frame = node.connection.send(command)
        node.close_when_flushed = isinstance(command, ShutdownCN)
        self._write(node, frame)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._run(lambda: node not in self._flushing, deadline):
            self._drop(node, SendTimeoutError(f"{type(command).__name__} not taken within {timeout:g} s"))
        if node.failure is not None:
            raise node.failure

    # -- closing ----------------------------------------------------------------------
    def close(self) -> None:
        """Close the listening socket and every connection.  Idempotent."""
        if self._closed:
            return
        self.stop_listening()
        for node in list(self._open):
            self._close(node)
        self._fanout.close()
        self._poller.close()
        if self._wake is not None:
            for end in self._wake:
                end.close()
        self._closed = True

    # -- the loop ------------------------------------------------------------------------
    def _run(self, until: Callable[[], bool], deadline: Optional[float], stoppable: bool = False) -> bool:
        """Handle events until ``until()``; return False at ``deadline`` or on :meth:`stop`."""
        last_events_at = float("-inf")  # no burst yet
        while not until():
            if stoppable and self._stop_requested:
                return False
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            self._expire_registrations(now)
            if self._accept_paused_until is not None and now >= self._accept_paused_until:
                self._accept_paused_until = None
                self._start_accepting()
            wait = self._wait_time(now, deadline)
            if wait > BURST_NAP and now - last_events_at < BURST_QUIET:
                # Inside a burst: nap instead of blocking (see BURST_NAP).
                if self._poll(0.0):
                    last_events_at = now
                else:
                    time.sleep(BURST_NAP)
            elif self._poll(wait):
                last_events_at = now
        return True

    def _wait_time(self, now: float, deadline: Optional[float]) -> float:
        wait = MAX_WAIT
        if deadline is not None:
            wait = min(wait, deadline - now)
        if self._awaiting:
            oldest = next(iter(self._awaiting))
            wait = min(wait, oldest.accepted_at + self._registration_timeout - now)
        if self._accept_paused_until is not None:
            wait = min(wait, self._accept_paused_until - now)
        return max(0.0, wait)

    def _poll(self, wait: float = 0.0) -> int:
        """Handle what is ready, waiting up to ``wait`` seconds for something; return how many were."""
        ready = self._poller.poll(wait)
        for data, mask in ready:
            if data is _LISTENER:
                self._accept()
            elif data is _WAKE:
                self._drain_wake()
            elif data.handshaking:
                self._handshake(data)
            else:
                if mask & WRITE:
                    self._on_writable(data)
                if mask & READ and not data.closed:
                    self._on_readable(data)
        return len(ready)

    def _drain_wake(self) -> None:
        try:
            while self._wake[0].recv(256):  # type: ignore[index]
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        assert self._listener is not None
        now = time.monotonic()
        listener = self._listener
        cap = self._unregistered_cap
        # At most half the cap per wake-up: a connection accepted now is
        # then still open at the next poll, which reads its RegisterCN,
        # however many connections are shed meanwhile.
        for _ in range(min(ACCEPT_BATCH, max(1, cap // 2))):
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                # Out of descriptors below the cap: the registered nodes hold
                # them, and shedding one that has not registered yet would
                # only trade it for the next; wait for some to go instead.
                if exc.errno in _OUT_OF_RESOURCES:
                    # Once per burst: the pause repeats every ACCEPT_PAUSE until descriptors free up.
                    level = logging.DEBUG if self._accept_starved else logging.ERROR
                    logger.log(level, "cannot accept connections (%s); pausing for %g s at a time", exc, ACCEPT_PAUSE)
                    self._accept_starved = True
                    self._pause_accepting()
                    self._accept_paused_until = now + ACCEPT_PAUSE
                else:  # e.g. ECONNABORTED: that one connection is gone, the next may be fine
                    logger.info("accept failed: %s", exc)
                break
            if self._accept_starved:
                logger.warning("accepting connections again")
                self._accept_starved = False
            if self._allow is not None and peer[0] not in self._allow:
                self._refuse_source(sock, peer[0])
                continue
            sock.setblocking(False)
            handshaking = False
            if self._ssl_context is not None:
                try:
                    sock = self._ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except OSError as exc:  # the connection went away in between
                    logger.info("closed the connection from %s:%d before its TLS handshake: %s", peer[0], peer[1], exc)
                    sock.close()
                    continue
                handshaking = True
            node = Node(sock, peer[0], peer[1], Connection(Role.MASTER), now)
            node.handshaking = handshaking
            self._open.add(node)
            self._awaiting[node] = None
            # Its RegisterCN is read when it arrives.  (Reading at once finds
            # nothing most of the time: the handshake completes before the
            # node has even written.)
            self._watch(node, READ)
            if len(self._awaiting) > cap:
                self._shed_oldest(cap)
        if self._shed_in_burst and len(self._awaiting) < cap:
            self._end_shedding_burst()

    def _refuse_source(self, sock: socket.socket, source: str) -> None:
        """Close a connection from outside the allow-list; nothing is read from it (TLS-8)."""
        # A reset, not a FIN: the master keeps no TIME_WAIT state for it.
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:  # pragma: no cover - the peer is already gone
            pass
        sock.close()
        self._refused += 1
        if source in self._refused_sources:
            return
        if len(self._refused_sources) < REFUSED_SOURCES_LOGGED:
            self._refused_sources.add(source)
            logger.warning("refused a connection from %.64s: outside the allow-list (%.200s)", source, self._allow)
        elif len(self._refused_sources) == REFUSED_SOURCES_LOGGED:
            self._refused_sources.add("")  # logged once: the set grows no further
            logger.warning(
                "refused connections from over %d sources outside the allow-list; no longer logging each",
                REFUSED_SOURCES_LOGGED,
            )

    def _shed_oldest(self, cap: int) -> None:
        """Close the oldest connection that has not registered, to make room (load shedding)."""
        node = next(iter(self._awaiting))
        if not self._shed_in_burst:
            logger.warning(
                "%d connections have not registered (the cap, unregistered_fraction %g of the open-file "
                "and memory limits): closing the oldest ones to admit new connections",
                len(self._awaiting), self._unregistered_fraction,
            )
        self._shed_in_burst += 1
        logger.debug("shedding %s, which has not registered", node.key)
        self._close(node, RemoteProtocolError("MST-7", f"shed: over {cap} connections had not registered"))

    def _end_shedding_burst(self) -> None:
        if self._shed_in_burst:
            logger.warning("closed %d unregistered connection(s) to stay under the cap", self._shed_in_burst)
            self._shed_in_burst = 0

    def _expire_registrations(self, now: float) -> None:
        limit = now - self._registration_timeout
        awaiting = self._awaiting
        while awaiting:
            node = next(iter(awaiting))
            if node.accepted_at > limit:
                return
            if node.handshaking:
                where = "in its TLS handshake"
            else:
                where = "inside a frame" if node.connection.in_frame else "before its first frame"
            self._drop(
                node,
                RemoteProtocolError(
                    "MST-7", f"no whole RegisterCN within {self._registration_timeout:g} s; stalled {where}"
                ),
            )

    # -- one node's I/O ---------------------------------------------------------------------
    def _handshake(self, node: Node) -> None:
        """Take a TLS handshake one step further, as far as the socket allows without blocking (TLS-7)."""
        sock: ssl.SSLSocket = node.sock  # type: ignore[assignment]
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(node, READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(node, _READ_WRITE)
            return
        except OSError as exc:  # ssl.SSLError included: a bad certificate, a plain peer, a reset
            self._drop(node, TLSHandshakeError(f"TLS handshake failed: {failure_reason(exc)}"))
            return
        node.handshaking = False
        logger.debug("compute node %s: TLS handshake done (%s)", node.key, sock.version())
        self._watch(node, READ)
        # The RegisterCN may have come in the same packet as the handshake's end.
        self._on_readable(node)

    def _on_readable(self, node: Node) -> None:
        while True:
            try:
                data = node.sock.recv(self._blocksize)
            except _READ_WOULD_BLOCK:
                return
            except OSError as exc:
                self._drop(node, exc)
                return
            if not self._take(node, data):
                return
            # A TLS socket may hold decrypted bytes that epoll cannot see.
            if not node.tls or node.closed or not node.sock.pending():  # type: ignore[attr-defined]
                return

    def _take(self, node: Node, data: bytes) -> bool:
        """Hand ``data`` to the node's connection and act on its events; return whether it is still open."""
        connection = node.connection
        if (
            not node.tls
            and node in self._awaiting
            and not connection.in_frame
            and looks_like_tls_record(data)
        ):
            # A TLS ClientHello on a plain master: say so, decode nothing (TLS-5, TLS-6).
            self._drop(node, TLSHandshakeError("a TLS handshake on a plain master: the compute node is in TLS mode"))
            return False
        connection.receive_data(data)
        while True:
            try:
                event = connection.next_event()
            except RemoteProtocolError as exc:
                self._drop(node, exc)
                return False
            except Exception as exc:  # a defect of the decoder must not take the master down (ERR-1)
                self._drop_on_internal_error(node, exc)
                return False
            if event is NEED_DATA:
                return True
            if isinstance(event, ConnectionClosed):
                self._drop(node, PeerClosedError("the compute node closed the connection"))
                return False
            # The master's side of the core yields no other command than a
            # RegisterCN: it raises for anything else (MST-3, CN-5).
            self._awaiting.pop(node, None)
            self._admit(node)
            if node.closed:
                return False

    def _on_writable(self, node: Node) -> None:
        try:
            flushed = node.flush()
        except OSError as exc:
            self._drop(node, exc)
            return
        if flushed:
            self._flushed(node)

    def _write(self, node: Node, data: bytes) -> None:
        try:
            flushed = node.write(data)
        except OSError as exc:
            self._drop(node, exc)
            return
        if flushed:
            self._flushed(node)
        elif node.pending > self._max_queued:
            self._drop(node, SendTimeoutError(f"over {self._max_queued} bytes queued: the node reads too slowly"))
        else:
            self._flushing.add(node)
            self._watch(node, _READ_WRITE)

    def _flushed(self, node: Node) -> None:
        self._flushing.discard(node)
        if node.close_when_flushed:
            logger.debug("compute node %s: shut down, closing (MST-6)", node.key)
            self._close(node)
        else:
            self._watch(node, READ)

    def _watch(self, node: Node, events: int) -> None:
        if events == node.events:
            return
        if node.events:
            self._poller.modify(node.sock.fileno(), events, node)
        else:
            self._poller.register(node.sock.fileno(), events, node)
        node.events = events

    # -- admitting registrations ---------------------------------------------------------------
    def _admit_to_registry(self, wanted: int, progress: Optional[ProgressCallback], node: Node) -> None:
        if len(self._registry) >= wanted:
            logger.info("closing %s without ACK: all %d compute nodes have registered", node.key, wanted)
            self._close(node)
            return
        node.connection.send(ACK(), frame=self._ack_frame)
        self._write(node, self._ack_frame)
        if node.closed:
            return
        self._registry[node.key] = node
        logger.debug("registered compute node %s (%d/%d)", node.key, len(self._registry), wanted)
        if progress is not None:
            progress(node, len(self._registry))

    def _admit_scripted(self, script: Sequence[Tuple[Command, bytes]], blob: bytes, node: Node) -> None:
        connection = node.connection
        connection.send(ACK(), frame=self._ack_frame)
        if connection.expire_if_due(time.time()):
            # Its live time has already passed: ACK, then nothing more (MST-9).
            logger.info("compute node %s registered with its live time already over; not serving it", node.key)
            node.close_when_flushed = True
            self._write(node, self._ack_frame)
            return
        for command, frame in script:
            connection.send(command, frame=frame)
        self._served += 1
        logger.info("serving the script to compute node %s (#%d)", node.key, self._served)
        node.close_when_flushed = True
        self._write(node, blob)

    def _refuse_registration(self, node: Node) -> None:  # pragma: no cover - no mode, no accept
        # Connections are accepted only inside register() and serve_script(),
        # and the ones that did not register are closed when those end.
        self._drop(node, RemoteProtocolError("MST-3", "the master is not registering compute nodes now"))

    # -- dropping -------------------------------------------------------------------------------
    def _drop(self, node: Node, cause: BaseException) -> None:
        """Close a node for ``cause``, and log it: the only way a bad peer affects the master."""
        if node.registered:
            # Inside a broadcast the loss is reported by its result (and by
            # the caller): one line for the user, not one per layer.
            level = logging.INFO if self._broadcasting else logging.WARNING
            logger.log(level, "compute node %s lost: %.500s", node.key, cause)
        else:
            logger.warning("closed the connection from %s without ACK: %.500s", node.key, cause)
        self._close(node, cause)

    def _drop_on_internal_error(self, node: Node, exc: Exception) -> None:
        """Close a node whose bytes made the decoder fail with something other than a ProtocolError."""
        # The message may quote what the peer sent: only its start is logged,
        # and the traceback only at debug level.
        logger.error(
            "closed the connection from %s: decoding its bytes failed (%s: %.200s)",
            node.key, type(exc).__name__, exc, exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        self._close(node, exc)

    def _close(self, node: Node, failure: Optional[BaseException] = None) -> None:
        if node.closed:
            return
        node.closed = True
        node.failure = failure
        if node.events:
            self._poller.unregister(node.sock.fileno())
            node.events = 0
        node.discard_outbox()
        node.sock.close()
        node.connection.close()
        self._open.discard(node)
        self._awaiting.pop(node, None)
        self._flushing.discard(node)
        if self._registry.get(node.key) is node:
            del self._registry[node.key]
