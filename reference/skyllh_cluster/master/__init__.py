"""The scalable master: one selector loop, no thread per node.

:class:`MasterServer` is the engine; :mod:`skyllh_cluster.master_node` puts
the original's blocking API on top of it, and the ``skyllh-cluster master``
command drives it from the command line.
"""

from .node import Node
from .reports import BroadcastError, BroadcastResult, PeerClosedError, RegistrationTimeout, SendTimeoutError
from .server import MasterServer

__all__ = [
    "MasterServer",
    "Node",
    "BroadcastResult",
    "BroadcastError",
    "PeerClosedError",
    "SendTimeoutError",
    "RegistrationTimeout",
]
