"""The state machines of both roles, as one table.

Theory of operation
===================

A SkyLLH cluster connection is short to describe.  A compute node connects to
the master and sends one ``RegisterCN``.  The master answers with one ``ACK``.
From then on only the master speaks: any number of ``MSG`` commands, then one
``ShutdownCN``, after which both sides close.  Either side may close at any
time, and each side stops once the compute node's live time has passed.

Each :class:`~skyllh_cluster.protocol.connection.Connection` follows one row
set of :data:`TRANSITIONS`, chosen by its role.  A row says: in ``state``, on
``trigger``, go to ``next_state``; the clause that makes it so is named, and
an error raised for a missing row names the clause of the nearest row.  The
triggers are:

* ``send X`` — this side sends command X;
* ``recv X`` — a whole frame arrived and decoded to command X;
* ``recv undecodable frame`` — a whole frame arrived, but its payload is
  outside the profile.  The framing is intact, so a compute node that is
  already serving may skip it (CN-9); anywhere else it ends the connection;
* ``peer closed`` — the peer closed its side between two frames (a close in
  the middle of a frame is always an error, FRM-5);
* ``live time passed`` — the I/O layer, which owns the clock, reports that
  the registered live time is over (MST-9, CN-10);
* ``close`` — this side closes the connection.

A ``recv`` or ``send`` with no row is a protocol error: the remote side's
fault (:class:`~skyllh_cluster.errors.RemoteProtocolError`, and the
connection goes to ``ERROR``) or this side's
(:class:`~skyllh_cluster.errors.LocalProtocolError`, nothing is sent and the
state does not change).  ``spec/state-machines.md`` is generated from this
table by ``scripts/gen_state_diagrams.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, Mapping, Tuple

from ..clauses import CLAUSES, Role

__all__ = [
    "Role",
    "State",
    "Transition",
    "TRANSITIONS",
    "INITIAL_STATE",
    "FINAL_STATES",
    "COMMAND_NAMES",
    "UNDECODABLE",
    "PEER_CLOSED",
    "LIVE_TIME_PASSED",
    "CLOSE",
    "send",
    "recv",
    "lookup",
    "rows_for",
    "refusal_clause",
]


class State(enum.Enum):
    """The states of one connection, seen from one side."""

    #: Compute node: connected, RegisterCN not yet sent.
    CONNECTED = "CONNECTED"
    #: Compute node: RegisterCN sent, waiting for the master's reply.
    AWAIT_ACK = "AWAIT_ACK"
    #: Master: connection accepted, waiting for the whole RegisterCN frame.
    AWAIT_REGISTRATION = "AWAIT_REGISTRATION"
    #: Master: RegisterCN received; an ACK is owed.
    REGISTERED = "REGISTERED"
    #: Both: registration complete; the master sends MSG commands.
    SERVING = "SERVING"
    #: Both: ShutdownCN sent or received; nothing more may be sent.
    SHUT_DOWN = "SHUT_DOWN"
    #: Both: the compute node's live time has passed.
    EXPIRED = "EXPIRED"
    #: Both: the connection is closed, cleanly.
    CLOSED = "CLOSED"
    #: Both: the peer broke the protocol; close the connection.
    ERROR = "ERROR"

    # Members are singletons compared by identity, so identity hashing is
    # exact; Enum's own __hash__ runs Python code on every table lookup,
    # which a broadcast to thousands of nodes pays thousands of times.
    __hash__ = object.__hash__


COMMAND_NAMES = ("RegisterCN", "ACK", "MSG", "ShutdownCN")
UNDECODABLE = "recv undecodable frame"
PEER_CLOSED = "peer closed"
LIVE_TIME_PASSED = "live time passed"
CLOSE = "close"


_SEND = {name: f"send {name}" for name in COMMAND_NAMES}
_RECV = {name: f"recv {name}" for name in COMMAND_NAMES}


def send(command_name: str) -> str:
    """The trigger for sending the command of that class name."""
    return _SEND.get(command_name) or f"send {command_name}"


def recv(command_name: str) -> str:
    """The trigger for receiving the command of that class name."""
    return _RECV.get(command_name) or f"recv {command_name}"


@dataclass(frozen=True)
class Transition:
    """One row of the table: in ``state``, ``trigger`` leads to ``next_state``."""

    role: Role
    state: State
    trigger: str
    next_state: State
    clause: str

    def __post_init__(self) -> None:
        if self.clause not in CLAUSES:
            raise ValueError(f"transition names unknown clause {self.clause!r}")
        if self.role not in (Role.MASTER, Role.COMPUTE_NODE):
            raise ValueError(f"a connection's role is MASTER or COMPUTE_NODE, not {self.role}")


_MST, _CN = Role.MASTER, Role.COMPUTE_NODE
S = State  # short name for the table below


def _rows() -> Tuple[Transition, ...]:
    rows = [
        # --- master side of a connection -------------------------------------
        Transition(_MST, S.AWAIT_REGISTRATION, recv("RegisterCN"), S.REGISTERED, "MST-1"),
        *(Transition(_MST, S.AWAIT_REGISTRATION, recv(n), S.ERROR, "MST-3") for n in ("ACK", "MSG", "ShutdownCN")),
        Transition(_MST, S.AWAIT_REGISTRATION, UNDECODABLE, S.ERROR, "MST-3"),
        Transition(_MST, S.REGISTERED, send("ACK"), S.SERVING, "MST-2"),
        Transition(_MST, S.SERVING, send("MSG"), S.SERVING, "MST-5"),
        Transition(_MST, S.SERVING, send("ShutdownCN"), S.SHUT_DOWN, "MST-5"),
        Transition(_MST, S.SERVING, LIVE_TIME_PASSED, S.EXPIRED, "MST-9"),
        # A compute node sends nothing after its RegisterCN (CN-5); the master's side is MST-11.
        *(
            Transition(_MST, state, trigger, S.ERROR, "MST-11")
            for state in (S.REGISTERED, S.SERVING, S.SHUT_DOWN, S.EXPIRED)
            for trigger in (*map(recv, COMMAND_NAMES), UNDECODABLE)
        ),
        # --- compute node side -------------------------------------------------
        Transition(_CN, S.CONNECTED, send("RegisterCN"), S.AWAIT_ACK, "CN-1"),
        Transition(_CN, S.AWAIT_ACK, recv("ACK"), S.SERVING, "CN-4"),
        *(Transition(_CN, S.AWAIT_ACK, recv(n), S.ERROR, "CN-4") for n in ("RegisterCN", "MSG", "ShutdownCN")),
        Transition(_CN, S.AWAIT_ACK, UNDECODABLE, S.ERROR, "CN-4"),
        Transition(_CN, S.AWAIT_ACK, LIVE_TIME_PASSED, S.EXPIRED, "CN-10"),
        Transition(_CN, S.SERVING, recv("MSG"), S.SERVING, "CN-11"),
        Transition(_CN, S.SERVING, recv("ACK"), S.SERVING, "CN-8"),
        Transition(_CN, S.SERVING, recv("RegisterCN"), S.SERVING, "CN-8"),
        Transition(_CN, S.SERVING, UNDECODABLE, S.SERVING, "CN-9"),
        Transition(_CN, S.SERVING, recv("ShutdownCN"), S.SHUT_DOWN, "CN-6"),
        Transition(_CN, S.SERVING, LIVE_TIME_PASSED, S.EXPIRED, "CN-10"),
        # The master sends nothing before the registration (MST-2), nothing
        # after ShutdownCN (MST-5) and nothing once the live time is over (MST-9).
        *(
            Transition(_CN, state, trigger, S.ERROR, clause)
            for state, clause in ((S.CONNECTED, "MST-2"), (S.SHUT_DOWN, "MST-5"), (S.EXPIRED, "MST-9"))
            for trigger in (*map(recv, COMMAND_NAMES), UNDECODABLE)
        ),
    ]
    # Either side may close, and the peer may close, in any live state.
    live = {
        _MST: (S.AWAIT_REGISTRATION, S.REGISTERED, S.SERVING, S.SHUT_DOWN, S.EXPIRED, S.ERROR),
        _CN: (S.CONNECTED, S.AWAIT_ACK, S.SERVING, S.SHUT_DOWN, S.EXPIRED, S.ERROR),
    }
    for role, states in live.items():
        for state in states:
            if state is not S.ERROR:
                rows.append(Transition(role, state, PEER_CLOSED, S.CLOSED, "ERR-1"))
            rows.append(Transition(role, state, CLOSE, S.CLOSED, "ERR-1"))
    return tuple(rows)


#: Every transition of both roles.  The single source of the protocol's flow.
TRANSITIONS: Tuple[Transition, ...] = _rows()

INITIAL_STATE: Dict[Role, State] = {_MST: S.AWAIT_REGISTRATION, _CN: S.CONNECTED}
FINAL_STATES = frozenset({S.CLOSED})

_ROWS: Dict[Role, Dict[Tuple[State, str], Transition]] = {_MST: {}, _CN: {}}
for _t in TRANSITIONS:
    if (_t.state, _t.trigger) in _ROWS[_t.role]:  # pragma: no cover - guards the table
        raise AssertionError(f"two rows for {_t.role} {_t.state} {_t.trigger!r}")
    _ROWS[_t.role][(_t.state, _t.trigger)] = _t
# One read-only view per role, shared by every connection of that role.
_ROW_VIEWS = {role: MappingProxyType(rows) for role, rows in _ROWS.items()}


def rows_for(role: Role) -> Mapping[Tuple[State, str], Transition]:
    """The rows of one role, keyed by ``(state, trigger)``, read-only."""
    return _ROW_VIEWS[role]


def lookup(role: Role, state: State, trigger: str) -> "Transition | None":
    """The row for ``trigger`` in ``state``, or ``None`` when there is none."""
    return _ROWS[role].get((state, trigger))


# Which clause a missing row breaks, for error messages.
_SEND_REFUSALS = {
    (_MST, S.AWAIT_REGISTRATION): "MST-2",  # nothing before the registration
    (_MST, S.REGISTERED): "MST-2",  # the ACK comes first
    (_MST, S.SERVING): "MST-5",
    (_MST, S.SHUT_DOWN): "MST-5",
    (_CN, S.CONNECTED): "CN-1",
    (_CN, S.AWAIT_ACK): "CN-5",
    (_CN, S.SERVING): "CN-5",
    (_CN, S.SHUT_DOWN): "CN-5",
}


def refusal_clause(role: Role, state: State) -> str:
    """The clause broken by sending something that ``state`` does not allow."""
    return _SEND_REFUSALS.get((role, state), "ERR-1")
