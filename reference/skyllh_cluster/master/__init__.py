"""The scalable master: one event loop, no thread per node.

:class:`MasterServer` (``server``) is the engine; :mod:`skyllh_cluster.master_node`
puts the original's blocking API on top of it, and the ``skyllh-cluster
master`` command drives it from the command line.  Beside it: ``node`` (one
connection and its outbox), ``poller`` (epoll, or :mod:`selectors` off
Linux), ``fanout`` (a broadcast's sends on one thread per core), the optional
C loop ``_sendmany`` that makes those sends, ``fdlimit`` and ``reports``.
"""

from .node import Node
from .reports import BroadcastError, BroadcastResult, PeerClosedError, RegistrationTimeout, SendTimeoutError, TLSHandshakeError
from .server import MasterServer

__all__ = [
    "MasterServer",
    "Node",
    "BroadcastResult",
    "BroadcastError",
    "PeerClosedError",
    "SendTimeoutError",
    "RegistrationTimeout",
    "TLSHandshakeError",
]
