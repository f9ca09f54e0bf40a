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
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Type, Union

from .wire.values import check_value, values_equal

if TYPE_CHECKING:  # the runtime import is deferred: srvclt needs the codec, which needs us
    from .srvclt import Message

__all__ = [
    "Command",
    "ACK",
    "MSG",
    "ShutdownCN",
    "RegisterCN",
    "COMMAND_CLASSES",
    "receive_command_from_socket",
]


class Command:
    """Base class of the commands.  Instances compare by class and state."""

    _cmd: ClassVar[str] = ""

    def as_message(self) -> "Message":
        """Return this command encoded as a :class:`~skyllh_cluster.srvclt.Message`."""
        from .codec import dumps
        from .srvclt import Message

        return Message(dumps(self))

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

    def __repr__(self) -> str:
        args = ", ".join(f"{k.lstrip('_')}={v!r}" for k, v in self._state().items())
        return f"{type(self).__name__}({args})"


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


def receive_command_from_socket(sock: socket.socket, blocksize: int = 2048) -> Command:
    """Read one frame from ``sock`` and decode it safely into a command.

    Raises :class:`~skyllh_cluster.ProtocolError` for a payload outside the
    profile and ``RuntimeError('Socket connection broken!')`` when the peer
    closes the connection, as the original does.
    """
    from .srvclt import receive_object_from_socket

    return receive_object_from_socket(sock, blocksize=blocksize)

