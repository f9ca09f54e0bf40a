"""skyllh_cluster: the SkyLLH cluster protocol, written down and made safe.

The package is the reference implementation of ``spec/protocol.md``:

* :func:`loads` / :func:`dumps` — the safe codec for command payloads; it
  never executes anything (:mod:`skyllh_cluster.codec`, grammar in
  :mod:`skyllh_cluster.wire.grammar`);
* :class:`Connection` — the sans-I/O state machine of either role
  (:mod:`skyllh_cluster.protocol`);
* :mod:`~skyllh_cluster.commands`, :mod:`~skyllh_cluster.srvclt`,
  :mod:`~skyllh_cluster.compute_node` and :mod:`~skyllh_cluster.master_node`
  — the public API of ``skyllh.cluster`` with the same names and signatures.
"""

from .clauses import CLAUSES, Clause, Level, Role
from .codec import dumps, loads, loads_checked
from .commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    State,
    UndecodableFrame,
    encode_command_frame,
)
from .scenario import SCENARIO_PAYLOADS

__version__ = "0.1.0"

__all__ = [
    "loads",
    "dumps",
    "loads_checked",
    "Command",
    "ACK",
    "MSG",
    "ShutdownCN",
    "RegisterCN",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "Connection",
    "State",
    "Role",
    "NEED_DATA",
    "ConnectionClosed",
    "UndecodableFrame",
    "encode_command_frame",
    "CLAUSES",
    "Clause",
    "Level",
    "SCENARIO_PAYLOADS",
]
