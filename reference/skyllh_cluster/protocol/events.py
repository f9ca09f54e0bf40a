"""Events that :meth:`Connection.next_event` returns besides commands.

A received command is returned as the command itself (an instance of
:class:`~skyllh_cluster.commands.ACK`, :class:`~skyllh_cluster.commands.MSG`,
and so on).  The classes here cover what is not a command.  Like h11's events
they are frozen and check their own fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..commands import Command
from ..errors import ProtocolError

__all__ = ["NEED_DATA", "NeedData", "ConnectionClosed", "UndecodableFrame", "Event"]


class NeedData:
    """Sentinel type: no whole frame has arrived yet; feed more bytes."""

    _instance: "NeedData | None" = None

    def __new__(cls) -> "NeedData":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __reduce__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`Connection.next_event` when more bytes are needed.
NEED_DATA = NeedData()


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the connection between two frames."""


@dataclass(frozen=True)
class UndecodableFrame:
    """A whole frame arrived whose payload is outside the profile.

    Only a compute node that is already serving sees this event: it skips
    the frame and carries on (CN-9).  Everywhere else the same frame raises
    :class:`~skyllh_cluster.errors.RemoteProtocolError`.
    """

    error: ProtocolError
    payload: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.error, ProtocolError):
            raise TypeError("UndecodableFrame.error must be a ProtocolError")
        if not isinstance(self.payload, bytes):
            raise TypeError("UndecodableFrame.payload must be bytes")


#: What :meth:`Connection.next_event` returns.
Event = Union[Command, NeedData, ConnectionClosed, UndecodableFrame]
