"""The sans-I/O connection: one object per connection, for either role.

It does no I/O and reads no clock.  Bytes that arrived go in through
:meth:`Connection.receive_data`; whole commands come out of
:meth:`Connection.next_event`; :meth:`Connection.send` turns a command into
the bytes to write.  Every step is checked against the table in
:mod:`skyllh_cluster.protocol.states`, which is where the protocol's flow
lives; this module only applies it.

>>> from skyllh_cluster import ACK, RegisterCN, Connection, Role
>>> master, node = Connection(Role.MASTER), Connection(Role.COMPUTE_NODE)
>>> master.receive_data(node.send(RegisterCN(1732560000, 7200)))
>>> master.next_event()
RegisterCN(cn_start_time=1732560000, cn_live_time=7200)
>>> node.receive_data(master.send(ACK()))
>>> node.next_event(), node.state
(ACK(), <State.SERVING: 'SERVING'>)
"""

from __future__ import annotations

import functools
import logging
import operator
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..clauses import Role
from ..codec import dumps, loads
from ..commands import COMMAND_CLASSES, Command, RegisterCN
from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ..wire.framing import HEADER_SIZE, FrameBuffer, encode_frame
from . import states
from .events import NEED_DATA, ConnectionClosed, Event, UndecodableFrame
from .states import State

__all__ = ["Connection", "encode_command_frame", "BroadcastPlan"]

logger = logging.getLogger(__name__)


def encode_command_frame(command: Command) -> bytes:
    """Return the whole frame (length prefix and payload) for ``command``.

    (:func:`skyllh_cluster.wire.encoder.encode_payload` returns the payload
    alone.)  A master that broadcasts encodes once with this and hands the
    frame to each connection's :meth:`Connection.send`, or uses
    :meth:`Connection.plan_broadcast`.
    """
    return encode_frame(dumps(command))


class Connection:
    """One SkyLLH cluster connection, seen from ``role``'s side.

    Args:
        role: :attr:`Role.MASTER` for the master's end of a connection it
            accepted, :attr:`Role.COMPUTE_NODE` for a compute node's end.
        start_time: A compute node's start, as Unix time.  With
            ``live_time`` it sets :attr:`deadline`; for the master's end the
            deadline comes from the RegisterCN it receives.
        live_time: A compute node's live time in seconds.
    """

    # No per-instance dict: a master holds one Connection per compute node.
    __slots__ = ("role", "_rows", "_state", "_frames", "_error", "_registration", "_deadline", "__weakref__")

    def __init__(
        self,
        role: Role,
        *,
        start_time: Optional[float] = None,
        live_time: Optional[float] = None,
    ) -> None:
        if role not in states.INITIAL_STATE:
            raise ValueError(f"a connection's role is MASTER or COMPUTE_NODE, not {role!r}")
        self.role = role
        self._rows = states.rows_for(role)
        self._state = states.INITIAL_STATE[role]
        self._frames = FrameBuffer()
        self._error: Optional[RemoteProtocolError] = None
        self._registration: Optional[RegisterCN] = None
        self._deadline: Optional[float] = None
        if start_time is not None and live_time is not None:
            self._deadline = start_time + live_time

    # -- read-only views --------------------------------------------------------
    @property
    def state(self) -> State:
        """The current state (see :class:`~skyllh_cluster.protocol.states.State`)."""
        return self._state

    @property
    def registration(self) -> Optional[RegisterCN]:
        """The RegisterCN sent (compute node) or received (master), if any."""
        return self._registration

    @property
    def deadline(self) -> Optional[float]:
        """Unix time at which the compute node's live time passes, if known."""
        return self._deadline

    @property
    def in_frame(self) -> bool:
        """Whether part of a frame has arrived and its rest has not (FRM-6)."""
        return self._frames.in_frame

    def __repr__(self) -> str:
        return f"<Connection {self.role.name} {self._state.name}>"

    # -- the state table ----------------------------------------------------------
    def _apply(self, trigger: str) -> Optional[states.Transition]:
        row = self._rows.get((self._state, trigger))
        if row is not None:
            if logger.isEnabledFor(logging.DEBUG):  # the names cost more than the step itself
                logger.debug("%s: %s --%s--> %s", self.role.name, self._state.name, trigger, row.next_state.name)
            self._state = row.next_state
        return row

    def _fail(self, error: RemoteProtocolError) -> RemoteProtocolError:
        self._state = State.ERROR
        self._error = error
        return error

    # -- receiving -------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the peer; ``b""`` means the peer closed."""
        self._frames.feed(bytes(data))

    def next_event(self) -> Event:
        """Return the next event: a command, or one of the events in :mod:`.events`.

        Returns :data:`NEED_DATA` when no whole frame is buffered, and
        :class:`ConnectionClosed` once the peer has closed between frames.

        Raises:
            RemoteProtocolError: the peer broke the protocol.  The connection
                is then in state ``ERROR`` and raises the same error again on
                every later call; close it.
        """
        if self._error is not None:
            raise self._error
        if self._state is State.CLOSED:
            return ConnectionClosed()
        frame_offset = self._frames.stream_offset
        try:
            payload = self._frames.next_payload()
        except ProtocolError as exc:
            raise self._fail(exc.as_remote()) from None
        if payload is None:
            if self._frames.at_eof:
                self._apply(states.PEER_CLOSED)
                return ConnectionClosed()
            return NEED_DATA
        try:
            command = loads(payload)
        except ProtocolError as exc:
            return self._undecodable(exc.with_offset(frame_offset + HEADER_SIZE), payload)
        return self._received(command, frame_offset)

    def _undecodable(self, error: ProtocolError, payload: bytes) -> Event:
        state = self._state
        row = self._apply(states.UNDECODABLE)
        if row is None or row.next_state is State.ERROR:
            clause = row.clause if row is not None else "ERR-1"
            raise self._fail(
                RemoteProtocolError(
                    error.clause,
                    f"{error.reason}; an undecodable frame in state {state.name} ends the connection ({clause})",
                    error.offset,
                )
            )
        # The I/O layer reports the skipped frame (one line per frame); the core only traces it.
        logger.debug("%s: skipping an undecodable frame: %s", self.role.name, error)
        return UndecodableFrame(error, payload)

    def _received(self, command: Command, frame_offset: int) -> Event:
        state = self._state
        name = type(command).__name__
        row = self._apply(states.recv(name))
        if row is None or row.next_state is State.ERROR:
            clause = row.clause if row is not None else "ERR-1"
            raise self._fail(RemoteProtocolError(clause, f"received {name} in state {state.name}", frame_offset))
        if isinstance(command, RegisterCN):
            trailing = self._frames.buffered
            if trailing and self.role is Role.MASTER:
                # Bytes that came with the RegisterCN are owed no ACK (MST-11).
                raise self._fail(
                    RemoteProtocolError(
                        "MST-11", f"{trailing} more bytes arrived with the RegisterCN; it gets no ACK", frame_offset
                    )
                )
            self._registered(command)
        return command

    def _registered(self, command: RegisterCN) -> None:
        self._registration = command
        if self._deadline is None:
            self._deadline = command.cn_start_time + command.cn_live_time

    # -- sending -------------------------------------------------------------------------
    def send(self, command: Command, *, frame: Optional[bytes] = None) -> bytes:
        """Return the bytes that send ``command``, and move to the next state.

        ``frame`` may carry the command's frame from :func:`encode_command_frame`,
        so that a broadcast is encoded once.

        Raises:
            LocalProtocolError: the state does not allow sending ``command``,
                or it does not encode (too large, value outside the subset).
                Nothing is to be sent and the state is unchanged.
        """
        name = type(command).__name__
        if COMMAND_CLASSES.get(name) is not type(command):
            raise TypeError(f"not a SkyLLH cluster command: {command!r}")
        trigger = states.send(name)
        if (self._state, trigger) not in self._rows:
            raise LocalProtocolError(
                states.refusal_clause(self.role, self._state),
                f"cannot send {name} in state {self._state.name}",
            )
        if frame is None:
            frame = encode_command_frame(command)
        self._apply(trigger)
        if isinstance(command, RegisterCN):
            self._registered(command)
        return frame

    # -- time and closing --------------------------------------------------------------
    def expire_if_due(self, now: float) -> bool:
        """Enter ``EXPIRED`` if the live time has passed at ``now``; say whether it did."""
        if self._deadline is None or now < self._deadline:
            return False
        return self._apply(states.LIVE_TIME_PASSED) is not None

    def close(self) -> None:
        """Record that this side closed the connection."""
        self._apply(states.CLOSE)

    # -- many connections at once -------------------------------------------------------
    @classmethod
    def registered_elsewhere(cls, registration: RegisterCN) -> "Connection":
        """A master's connection that is SERVING a node which registered on another path.

        For a socket whose compute node has already sent ``registration``
        and been sent its ACK by other code (the seed API lets a user build
        a registry entry by hand): the connection takes the table's
        transitions for receiving the RegisterCN and sending the ACK, so
        that it is where a connection that registered here would be.
        """
        if type(registration) is not RegisterCN:
            raise TypeError(f"registration must be a RegisterCN, not {registration!r}")
        connection = cls(Role.MASTER)
        for trigger in (states.recv("RegisterCN"), states.send("ACK")):
            if connection._apply(trigger) is None:  # pragma: no cover - the table guarantees both
                raise AssertionError(f"the master's table has no {trigger} from {connection._state.name}")
        connection._registered(registration)
        return connection

    @staticmethod
    def plan_broadcast(connections: Sequence["Connection"], command: Command, now: float) -> "BroadcastPlan":
        """Send ``command`` on every connection of ``connections`` at once, as far as the states go.

        Equivalent to calling, for each connection, :meth:`expire_if_due`
        and then :meth:`send` with one shared frame, but it encodes once and
        consults the table once per distinct state, so that a master with
        thousands of nodes spends its time in ``send`` system calls and not
        here.  Returns which connections are to be written the frame.

        Raises:
            LocalProtocolError: ``command`` does not encode; no state changed.
        """
        name = type(command).__name__
        if COMMAND_CLASSES.get(name) is not type(command):
            raise TypeError(f"not a SkyLLH cluster command: {command!r}")
        plan = BroadcastPlan(encode_command_frame(command))
        trigger = states.send(name)
        if not isinstance(command, RegisterCN) and Connection._send_uniformly(connections, trigger, now):
            plan.sendable = list(range(len(connections)))
        else:
            Connection._send_each(connections, command, trigger, now, plan)
        logger.debug(
            "%s to %d connection(s): %d sendable, %d expired, %d refused",
            name, len(connections), len(plan.sendable), len(plan.expired), len(plan.refused),
        )
        return plan

    @staticmethod
    def _send_uniformly(connections: Sequence["Connection"], trigger: str, now: float) -> bool:
        """The usual broadcast: one state for all, no live time over; send, or return False."""
        # Finding that out takes a few C passes over the list, and then one
        # assignment per connection.  (list.count compares by identity
        # first, so these passes call no __eq__.)
        count = len(connections)
        if not count:
            return False
        roles = list(map(_role_of, connections))
        kinds = list(map(_state_of, connections))
        if roles.count(roles[0]) != count or kinds.count(kinds[0]) != count:
            return False
        state = kinds[0]
        row = states.lookup(roles[0], state, trigger)
        deadlines = list(map(_deadline_of, connections))
        if None in deadlines:
            deadlines = list(filter(_is_set, deadlines))
        if row is None or min(deadlines, default=now + 1) <= now:
            return False
        next_state = row.next_state
        if next_state is not state:  # MSG keeps SERVING: nothing to write
            for conn in connections:
                conn._state = next_state
        return True

    @staticmethod
    def _send_each(
        connections: Sequence["Connection"], command: Command, trigger: str, now: float, plan: "BroadcastPlan"
    ) -> None:
        rows: Dict[Tuple[Role, State], Optional[states.Transition]] = {}
        for index, conn in enumerate(connections):
            if conn.expire_if_due(now):
                plan.expired.append(index)
                continue
            key = (conn.role, conn._state)
            if key not in rows:
                rows[key] = states.lookup(conn.role, conn._state, trigger)
            row = rows[key]
            if row is None:
                error = LocalProtocolError(
                    states.refusal_clause(conn.role, conn._state),
                    f"cannot send {type(command).__name__} in state {conn._state.name}",
                )
                plan.refused.append((index, error))
                continue
            conn._state = row.next_state
            if isinstance(command, RegisterCN):
                conn._registered(command)
            plan.sendable.append(index)


@dataclass
class BroadcastPlan:
    """Which of many connections may be sent one command now, by index.

    ``sendable`` connections have made the send transition and are to be
    written ``frame``; ``expired`` ones entered ``EXPIRED`` instead (send
    them nothing, MST-9); ``refused`` ones are in a state that forbids the
    command, with the error that :meth:`Connection.send` would have raised.
    """

    frame: bytes
    sendable: List[int] = field(default_factory=list)
    expired: List[int] = field(default_factory=list)
    refused: List[Tuple[int, LocalProtocolError]] = field(default_factory=list)


_role_of = operator.attrgetter("role")
_state_of = operator.attrgetter("_state")
_deadline_of = operator.attrgetter("_deadline")
_is_set = functools.partial(operator.is_not, None)
