"""The four commands of the SkyLLH cluster protocol (spec section 4).

This module keeps the names and signatures of ``skyllh.cluster.commands`` so
that code written for the original changes only its import line.  The
differences are on the inside: a command is sent with the safe codec
(:func:`skyllh_cluster.dumps`), received without ``pickle.loads``, compares by
value, and a :class:`MSG` refuses at construction a value it could never send.

On the wire a command is identified by its class, named as
``skyllh.cluster.commands.<ClassName>`` whatever module defines it here; the
``_cmd`` strings below are kept for :meth:`Command.is_same_as` only and are
never sent.
"""

from __future__ import annotations

import socket
from typing import Any, ClassVar, Dict, Type, Union

from .blocking import Message, receive_payload
from .errors import LocalProtocolError, ProtocolError
from .msg_output import value_repr
from .wire.decoder import decode_payload
from .wire.encoder import encode_payload
from .wire.framing import HEADER_SIZE
from .wire.values import check_value, values_equal

__all__ = [
    "Command",
    "ACK",
    "MSG",
    "ShutdownCN",
    "RegisterCN",
    "COMMAND_CLASSES",
    "command_payload",
    "make_command",
    "receive_command_from_socket",
]


class Command:
    """Base class of the commands.  Instances compare by class and state."""

    _cmd: ClassVar[str] = ""

    def as_message(self) -> Message:
        """Return this command encoded as a :class:`~skyllh_cluster.srvclt.Message`."""
        return Message(command_payload(self))

    def send(self, sock: socket.socket) -> None:
        """Encode this command and send it as one frame on ``sock``."""
        self.as_message().send(sock)

    def is_same_as(self, cmd: Union["Command", Type["Command"]]) -> bool:
        """Whether ``cmd`` (an instance or a class) is the same kind of command."""
        return cmd._cmd == self._cmd

    def _state(self) -> Dict[str, Any]:
        return self.__dict__

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        mine, theirs = self._state(), other._state()  # type: ignore[attr-defined]
        return mine.keys() == theirs.keys() and all(values_equal(mine[k], theirs[k]) for k in mine)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the original's

    def describe(self, limit: int = 200) -> str:
        """The command as its repr reads it, each field at most ``limit`` characters.

        A longer field is cut, and says so (``<cut: N omitted>``); a big int
        is written without ``str()``'s digit limit.  So the cost is bounded
        by ``limit`` whatever a peer sent: an int of thousands of digits
        (``repr`` would raise) or a value of 10^6 shared references (``repr``
        would build megabytes).
        """
        args = ", ".join(f"{k.lstrip('_')}={_field_repr(v, limit)}" for k, v in self._state().items())
        return f"{type(self).__name__}({args})"

    def __repr__(self) -> str:
        return self.describe()


def _field_repr(value: Any, limit: int) -> str:
    try:
        return value_repr(value, limit)
    except (TypeError, ValueError):  # a value outside the subset, set by the program itself
        return f"<{type(value).__name__}>"


class ACK(Command):
    """The master's acknowledgement of a registration."""

    _cmd = "ACK"


class MSG(Command):
    """A message from the master; ``msg`` is any value of the subset (VAL-1)."""

    _cmd = "MSG"

    def __init__(self, msg: Any) -> None:
        check_value(msg)
        self.msg = msg


class ShutdownCN(Command):
    """The master's order to a compute node to close and exit."""

    _cmd = "SHUTDOWNCN"


def int_cast(value: Any, what: str) -> int:
    """``int(value)``, or the original's ``TypeError`` naming the property ``what``."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"The {what} property must be castable to type int!") from exc


class RegisterCN(Command):
    """A compute node's registration: its start time and live time, in seconds."""

    _cmd = "REGCN"

    def __init__(self, cn_start_time: Any, cn_live_time: Any) -> None:
        self.cn_start_time = cn_start_time
        self.cn_live_time = cn_live_time

    @property
    def cn_start_time(self) -> int:
        """The compute node's start time, as an integer Unix time stamp."""
        return self._cn_start_time

    @cn_start_time.setter
    def cn_start_time(self, t: Any) -> None:
        self._cn_start_time = int_cast(t, "cn_start_time")

    @property
    def cn_live_time(self) -> int:
        """The compute node's live time in seconds; after it the node counts as dead."""
        return self._cn_live_time

    @cn_live_time.setter
    def cn_live_time(self, t: Any) -> None:
        self._cn_live_time = int_cast(t, "cn_live_time")


#: The command classes by the class name that identifies them on the wire.
COMMAND_CLASSES: Dict[str, Type[Command]] = {
    cls.__name__: cls for cls in (ACK, MSG, ShutdownCN, RegisterCN)
}


_new = object.__new__


def command_payload(command: Command) -> bytes:
    """The canonical payload of ``command`` (:func:`skyllh_cluster.codec.dumps` documents it)."""
    kind = type(command)
    if COMMAND_CLASSES.get(kind.__name__) is not kind:
        raise LocalProtocolError("CMD-1", f"{kind.__qualname__} is not one of the four command classes")
    return encode_payload(kind.__name__, command.__dict__)


def make_command(class_name: str, state: Dict[str, Any]) -> Command:
    """The command of class ``class_name`` with ``state``, as a decoder found them.

    Nothing is called: the object is made without ``__init__``.  A RegisterCN
    gets its attributes one by one, so that they live in the object itself
    (Python 3.11+: 110 bytes less for each registered node); a MSG keeps the
    decoded state dict, so that re-encoding shares what the payload shared.
    """
    command = _new(COMMAND_CLASSES[class_name])
    if not state:
        return command
    if class_name == "RegisterCN" and next(iter(state)) == "_cn_start_time":
        command._cn_start_time = state["_cn_start_time"]  # type: ignore[attr-defined]
        command._cn_live_time = state["_cn_live_time"]  # type: ignore[attr-defined]
    else:  # a MSG, or a RegisterCN with its keys the other way round
        command.__dict__ = state
    return command


def receive_command_from_socket(sock: socket.socket, blocksize: int = 2048) -> Command:
    """Read one frame from ``sock`` and decode it safely into a command.

    Raises :class:`~skyllh_cluster.RemoteProtocolError` for a payload outside
    the profile (its offset counts from the frame's first byte) and
    ``RuntimeError('Socket connection broken!')`` when the peer closes the
    connection, as the original does.
    """
    payload = receive_payload(sock, blocksize)
    try:
        return make_command(*decode_payload(payload))
    except ProtocolError as exc:
        raise exc.with_offset(HEADER_SIZE).as_remote() from None
