"""The sans-I/O core: one :class:`Connection` per connection, for either role.

The transitions of both roles are the table in :mod:`.states`; the events
besides commands are in :mod:`.events`.  The blocking seed API, the scalable
master and the CLI are thin I/O layers around this package.
"""

from .connection import BroadcastPlan, Connection, encode_command_frame
from .events import NEED_DATA, ConnectionClosed, Event, NeedData, UndecodableFrame
from .states import INITIAL_STATE, TRANSITIONS, Role, State, Transition

__all__ = [
    "Connection",
    "encode_command_frame",
    "BroadcastPlan",
    "NEED_DATA",
    "NeedData",
    "ConnectionClosed",
    "UndecodableFrame",
    "Event",
    "Role",
    "State",
    "Transition",
    "TRANSITIONS",
    "INITIAL_STATE",
]
