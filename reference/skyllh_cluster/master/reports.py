"""What the master's engine reports: broadcast outcomes and registration timeouts.

A broadcast never stops at the first broken socket (clause MST-8): it writes
to every live node and then says what happened to each one, as a
:class:`BroadcastResult`.  :class:`~skyllh_cluster.master_node.MasterNode`
turns a result with failures into one :class:`BroadcastError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Tuple

__all__ = ["BroadcastResult", "BroadcastError", "PeerClosedError", "SendTimeoutError", "RegistrationTimeout", "TLSHandshakeError"]


class PeerClosedError(ConnectionError):
    """The compute node closed its connection (recorded as a node's failure)."""


class TLSHandshakeError(ConnectionError):
    """A connection's TLS handshake failed, or TLS met plain TCP (spec/tls-profile.md, TLS-5).

    Nothing the peer sent was decoded, and it was sent nothing but TLS's own records.
    """


class SendTimeoutError(TimeoutError):
    """A node did not take its frames in time: too many bytes queued for it, or queued too long."""


@dataclass(frozen=True)
class BroadcastResult:
    """The outcome of sending one command to a set of compute nodes.

    Attributes:
        command: The class name of the command sent, e.g. ``"MSG"``.
        delivered: Keys (``"addr:port"``) of the nodes whose frame was written
            in full to their connection, in registry order.
        failed: Key -> the exception that ended that node's connection: an
            :class:`OSError` from the socket, a :class:`PeerClosedError`, a
            :class:`SendTimeoutError`, or the
            :class:`~skyllh_cluster.errors.ProtocolError` the node caused.
            Failed nodes are closed and dropped.
        expired: Keys of the nodes whose live time had passed (MST-9); they
            were dropped and sent nothing.  Not a failure.
        queued: Keys of the slow nodes whose socket has not taken the whole
            frame yet: the rest is queued in the master and written during
            later calls (see :meth:`MasterServer.broadcast
            <skyllh_cluster.master.server.MasterServer.broadcast>`).  Not a
            failure, and not in ``delivered``.
    """

    command: str
    delivered: Tuple[str, ...] = ()
    failed: Mapping[str, BaseException] = field(default_factory=dict)
    expired: Tuple[str, ...] = ()
    queued: Tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether no node failed."""
        return not self.failed


class BroadcastError(ConnectionError):
    """Some compute nodes could not be sent a command; the others were.

    A :class:`ConnectionError` (so an :class:`OSError`), like the
    ``ConnectionResetError`` the original raised at the first dead node; but
    this one is raised only after every live node was served.

    Attributes:
        result: The whole :class:`BroadcastResult`; its ``delivered`` nodes
            did get the command.
    """

    def __init__(self, result: BroadcastResult) -> None:
        self.result = result
        causes = "; ".join(f"{key}: {cause!r}" for key, cause in result.failed.items())
        super().__init__(
            f"{result.command} reached {len(result.delivered)} compute node(s) and failed for "
            f"{len(result.failed)}: {causes}"
        )

    @property
    def failures(self) -> Mapping[str, BaseException]:
        """Key -> cause, for every node that failed."""
        return self.result.failed


class RegistrationTimeout(TimeoutError):
    """Fewer compute nodes registered than were asked for, within the timeout.

    Attributes:
        registered: How many nodes had registered (they stay registered).
        n_cn: How many were asked for.
        timeout: The timeout, in seconds.
    """

    def __init__(self, registered: int, n_cn: int, timeout: float) -> None:
        self.registered = registered
        self.n_cn = n_cn
        self.timeout = timeout
        super().__init__(f"only {registered} of {n_cn} compute nodes registered within {timeout:g} s")
