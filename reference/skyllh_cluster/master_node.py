"""The master node, with the API of ``skyllh.cluster.master_node``.

Code written for the original changes only its import line::

    from skyllh_cluster.master_node import MasterNode

    master = MasterNode()
    master.register_compute_nodes(n_cn=100, master_port=9999)
    master.send_request({"trial": 1, "seed": 42})
    master.shutdown_compute_nodes()

Underneath, :class:`~skyllh_cluster.master.server.MasterServer` serves every
node from one selector loop, so thousands of nodes cost one thread.  Where
the original breaks, this one holds:

* A node that stalls mid-frame, sends garbage, a wrong first command or a
  malicious pickle is closed without an ACK and logged; the registration of
  the others goes on (MST-3, MST-4).  Nothing received is unpickled.
* ``register_compute_nodes`` takes an overall ``timeout`` and bounds each
  connection's registration (``registration_timeout``, 3 s by default,
  MST-7).  Connections that have not registered are capped at a share of
  the open-file and memory limits (``unregistered_fraction``); at the cap
  the oldest is closed, so a flood of silent connections cannot keep an
  honest node out.
* ``send_request`` and ``shutdown_compute_nodes`` encode the command once and
  write it to every live node, whatever happens to the others (MST-8).  They
  return a :class:`~skyllh_cluster.master.reports.BroadcastResult`; if any
  node failed they raise one
  :class:`~skyllh_cluster.master.reports.BroadcastError` *afterwards*, which
  lists every failed node and its cause.  Failed nodes leave the registry.
* A slow node costs only itself: ``send_request`` returns once every node has
  the frame in its socket, has failed, or has the rest queued in the master
  (it waits at most ``slow_node_wait``, 1 s, for a node that falls behind,
  and not at all for one already behind).  The queued rest is written
  during later calls; a node with more than ``max_queued`` bytes queued, or
  with bytes queued for longer than ``send_timeout``, fails.
* A node whose live time has passed is dropped from the registry and sent
  nothing (MST-9).
* ``shutdown_compute_nodes`` closes each connection after its ShutdownCN
  (MST-6) and empties the registry.
* The listening socket sets ``SO_REUSEADDR`` (POSIX), so that a master can be
  restarted on the same port at once; the original could not.
"""

from __future__ import annotations

import logging
import operator
import socket
import ssl
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .commands import MSG, Command, RegisterCN, ShutdownCN
from .master.node import Node
from .master.reports import BroadcastError, BroadcastResult, RegistrationTimeout
from .master.server import MAX_QUEUED, MasterServer
from .protocol.connection import Connection
from .tls import AllowList

__all__ = ["CNRegistryEntry", "MasterNode", "BroadcastError", "BroadcastResult", "RegistrationTimeout"]

logger = logging.getLogger(__name__)

_node_of = operator.attrgetter("_node")
_server_of = operator.attrgetter("_server")


class CNRegistryEntry:
    """A registered compute node: its socket, address and registration.

    Made by :meth:`MasterNode.register_compute_nodes`.  Made by hand from a
    socket whose node has already registered (and been sent its ACK), it can
    be put into :attr:`MasterNode.cn_registry` like the original's.

    ``sock``, ``addr``, ``port``, ``cn_start_time`` and ``cn_live_time`` are
    read-only.
    """

    __slots__ = ("_node", "_server", "__weakref__")

    def __init__(self, sock: socket.socket, addr: str, port: int, cn_start_time: Any, cn_live_time: Any) -> None:
        connection = Connection.registered_elsewhere(RegisterCN(cn_start_time, cn_live_time))
        self._node = Node(sock, addr, port, connection, time.monotonic())
        self._server: Optional[MasterServer] = None

    @classmethod
    def _of(cls, node: Node, server: MasterServer) -> "CNRegistryEntry":
        entry = cls.__new__(cls)
        entry._node = node
        entry._server = server
        return entry

    @property
    def sock(self) -> socket.socket:
        """The socket of the connection to the compute node."""
        return self._node.sock

    @property
    def addr(self) -> str:
        """The compute node's address."""
        return self._node.addr

    @property
    def port(self) -> int:
        """The compute node's port."""
        return self._node.port

    @property
    def cn_start_time(self) -> int:
        """The compute node's start, as Unix time, from its RegisterCN."""
        return self._node.connection.registration.cn_start_time  # type: ignore[union-attr]

    @property
    def cn_live_time(self) -> int:
        """The compute node's live time in seconds, from its RegisterCN."""
        return self._node.connection.registration.cn_live_time  # type: ignore[union-attr]

    @property
    def key(self) -> str:
        """(read-only) The CN's identification key, ``"addr:port"``."""
        return self._node.key

    def send_command(self, cmd: Command, timeout: Optional[float] = None) -> None:
        """Send ``cmd`` to this compute node and wait until it is written.

        After a ShutdownCN the connection is closed (MST-6).

        Raises:
            TypeError: ``cmd`` is not a :class:`~skyllh_cluster.commands.Command`.
            LocalProtocolError: the connection's state forbids ``cmd`` (for
                example anything after ShutdownCN).
            OSError: the connection is broken.
        """
        if not isinstance(cmd, Command):
            raise TypeError("The cmd argument must be an instance of Command!")
        if self._server is not None:
            self._server.send_now(self._node, cmd, timeout)
            return
        frame = self._node.connection.send(cmd)
        self.sock.settimeout(timeout)
        self.sock.sendall(frame)
        if isinstance(cmd, ShutdownCN):
            self._node.connection.close()
            self.sock.close()
            self._node.closed = True

    def _attach(self, server: MasterServer) -> Node:
        """Hand this entry's connection to ``server`` unless it has it already."""
        if self._server is not server:
            if not self._node.closed:
                server.adopt(self._node)
            self._server = server
        return self._node

    def __repr__(self) -> str:
        return f"<CNRegistryEntry {self.key}>"


class MasterNode:
    """A master node that compute nodes register with, and that hands them work.

    Args:
        send_timeout: Seconds a node may keep bytes queued in the master
            (it reads slowly) before it fails, and the longest a
            ``shutdown_compute_nodes`` or ``send_command`` waits for a node
            to take its frame; ``None`` waits as long as needed.
        slow_node_wait: Seconds a ``send_request`` waits for a node that
            falls behind in it before it returns with the rest queued.
        max_queued: Bytes that may be queued in the master for one node; a
            node over it fails.
        ssl_context: The TLS profile (``spec/tls-profile.md``): a
            server-side :class:`ssl.SSLContext`, see
            :func:`skyllh_cluster.tls.server_context`.  ``None`` (the
            default): plain TCP, byte for byte the original's.
        allow: The networks compute nodes may connect from (an
            :class:`~skyllh_cluster.tls.AllowList`, ``"10.0.0.0/8,192.0.2.5"``
            or an iterable of networks); others are closed at accept.
            ``None``: anyone.
    """

    def __init__(
        self,
        *,
        send_timeout: Optional[float] = 60.0,
        slow_node_wait: float = 1.0,
        max_queued: int = MAX_QUEUED,
        ssl_context: Optional[ssl.SSLContext] = None,
        allow: "AllowList | str | Iterable[str] | None" = None,
    ) -> None:
        self.send_timeout = send_timeout
        if allow is not None and not isinstance(allow, AllowList):
            allow = AllowList.parse(allow) if isinstance(allow, str) else AllowList(allow)
        self._engine_options: Dict[str, Any] = {
            "slow_node_wait": slow_node_wait,
            "max_queued": max_queued,
            "ssl_context": ssl_context,
            "allow": allow,
        }
        MasterServer(**self._engine_options).close()  # refuses bad options now, not at the first broadcast
        self._server: Optional[MasterServer] = None
        self.cn_registry: Dict[str, CNRegistryEntry] = dict()
        # The engine, the registry's entries and their nodes at the last broadcast.
        self._last_broadcast: Optional[Tuple[MasterServer, List[CNRegistryEntry], List[Node]]] = None

    @property
    def cn_registry(self) -> Dict[str, CNRegistryEntry]:
        """The dictionary with the registered compute nodes, by key."""
        return self._cn_registry

    @cn_registry.setter
    def cn_registry(self, d: Dict[str, CNRegistryEntry]) -> None:
        if not isinstance(d, dict):
            raise TypeError("The cn_registry property must be of type dict!")
        self._cn_registry = d

    @property
    def master_address(self) -> Optional[Tuple[str, int]]:
        """The ``(host, port)`` listened on while :meth:`register_compute_nodes` runs, else ``None``.

        With ``master_port=0`` this is where to find the port that was picked.
        """
        return None if self._server is None else self._server.address

    def clear_cn_registry(self) -> None:
        """Close the connections to all compute nodes and empty the registry."""
        for entry in self._cn_registry.values():
            if entry._server is not None:
                entry._server.discard(entry._node)
            else:
                entry.sock.close()
        self.cn_registry = dict()
        self._last_broadcast = None

    def register_compute_nodes(
        self,
        n_cn: int = 10,
        master_port: int = 9999,
        blocksize: int = 2048,
        *,
        host: Optional[str] = None,
        timeout: Optional[float] = None,
        registration_timeout: float = 3.0,
        unregistered_fraction: float = 0.5,
    ) -> None:
        """Wait until ``n_cn`` compute nodes have registered.

        Clears the registry, listens on ``(host, master_port)``, registers
        nodes, and stops listening once ``n_cn`` are registered.

        Args:
            n_cn: How many compute nodes to register.
            master_port: The port to listen on (0 picks a free one).
            blocksize: Largest number of bytes read from a node at once.
            host: The address to bind; ``None`` binds what the original
                binds, ``socket.getfqdn(socket.gethostname())``.
            timeout: Overall seconds to wait; ``None`` waits for ever.
            registration_timeout: Seconds one connection may take to send its
                whole RegisterCN before it is closed (MST-7).
            unregistered_fraction: Connections that have not registered yet
                are capped at this fraction of the open-file limit and of
                the memory available; at the cap the oldest is closed.

        Raises:
            RegistrationTimeout: fewer than ``n_cn`` nodes registered within
                ``timeout``; it says how many did, and those stay in
                :attr:`cn_registry`.
        """
        self.clear_cn_registry()
        if self._server is not None:
            self._server.close()
        if host is None:
            host = socket.getfqdn(socket.gethostname())
        server = MasterServer(
            blocksize=blocksize,
            registration_timeout=registration_timeout,
            unregistered_fraction=unregistered_fraction,
            **self._engine_options,
        )
        self._server = server
        logger.debug("listening on %s:%d for %d compute nodes", host, master_port, n_cn)
        server.listen(host, master_port, backlog=max(n_cn, 128))
        # Entries are made as nodes register, while the loop waits for the
        # next one anyway, so that the last ACK is not followed by n_cn more steps.
        entries: Dict[str, CNRegistryEntry] = {}

        def admitted(node: Node, count: int) -> None:
            entries[node.key] = CNRegistryEntry._of(node, server)

        try:
            server.register(n_cn, timeout=timeout, progress=admitted)
        finally:
            nodes = server.nodes
            if list(map(_node_of, entries.values())) != nodes:  # a node was dropped after registering
                entries = {node.key: CNRegistryEntry._of(node, server) for node in nodes}
            self.cn_registry = entries

    def send_request(self, msg: Any) -> BroadcastResult:
        """Send ``MSG(msg)`` to every registered compute node.

        Returns the :class:`BroadcastResult` when no node failed: every
        live node has the frame in its socket, or (a slow node, listed in
        ``queued``) the rest of it queued in the master, written during
        later calls.  A node that falls behind holds this call for at most
        ``slow_node_wait`` seconds; one already behind does not hold it.

        Raises:
            BroadcastError: some nodes failed, after every other live node
                got the message; the failed nodes left the registry.
            LocalProtocolError: ``msg`` is outside the value subset or too
                large for a frame; nothing was sent.
        """
        return self._broadcast(MSG(msg), close_after=False)

    def shutdown_compute_nodes(self) -> BroadcastResult:
        """Send ShutdownCN to every registered compute node, close them all and empty the registry.

        Raises:
            BroadcastError: as :meth:`send_request`.
        """
        return self._broadcast(ShutdownCN(), close_after=True)

    def close(self) -> None:
        """Close every connection and the engine."""
        self.clear_cn_registry()
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> "MasterNode":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _nodes_for(self, entries: List["CNRegistryEntry"]) -> List[Node]:
        """The engine's nodes for ``entries``; the engine lets go of every other node."""
        # These passes run before the first node is sent anything, so they
        # stay in C (map, set operations) in the usual case.
        for kind in set(map(type, entries)):
            if not issubclass(kind, CNRegistryEntry):
                entry = next(entry for entry in entries if type(entry) is kind)
                raise TypeError(f"cn_registry holds {entry!r}, which is not a CNRegistryEntry")
        if self._server is None:
            self._server = MasterServer(**self._engine_options)
        server = self._server
        if set(map(_server_of, entries)) <= {server}:  # every entry is already the engine's
            nodes: List[Node] = list(map(_node_of, entries))
        else:
            nodes = [entry._attach(server) for entry in entries]
        # An entry taken out of the registry is a node no longer wanted; the
        # original closed its socket when the entry was garbage-collected.
        for node in set(server.connections).difference(nodes):
            server.discard(node)
        return nodes

    def _broadcast(self, command: Command, *, close_after: bool) -> BroadcastResult:
        entries = list(self._cn_registry.values())
        last = self._last_broadcast
        if last is not None and last[0] is self._server and entries == last[1]:
            # The registry holds what it held at the last broadcast (the usual
            # case, compared by identity in C): _nodes_for's checks hold still.
            server, _, nodes = last
        else:
            nodes = self._nodes_for(entries)
            server = self._server  # type: ignore[assignment]
            self._last_broadcast = (server, entries, nodes)
        result = server.broadcast(command, nodes, timeout=self.send_timeout, close_after=close_after)
        gone = set(result.failed) | set(result.expired)
        if close_after:
            self.cn_registry = dict()
            self._last_broadcast = None
        elif gone:
            self.cn_registry = {key: e for key, e in self._cn_registry.items() if e.key not in gone}
        if result.failed:
            raise BroadcastError(result)
        return result
