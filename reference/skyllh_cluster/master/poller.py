"""Which of many sockets are ready: epoll where the OS has it, :mod:`selectors` elsewhere.

The engine watches every node's socket, and in a busy registration one
event passes through here per packet that arrives.  :mod:`selectors` wraps
each registration in a ``SelectorKey`` and looks each event up through it;
on Linux, :class:`EpollPoller` calls epoll itself and keeps one dict entry
per socket, which halves the Python spent per node.  :class:`SelectorsPoller`
offers the same five methods over :mod:`selectors` for every other OS.

Both report events the way :mod:`selectors` does: an error or hang-up on a
socket counts as readable (and as writable if writing is watched), so that
the next ``recv`` or ``send`` finds out what happened.
"""

from __future__ import annotations

import math
import select
import selectors
from typing import Any, Dict, List, Optional, Tuple, Union

__all__ = ["READ", "WRITE", "Poller", "EpollPoller", "SelectorsPoller", "DefaultPoller"]

#: Watch for, or report, a socket that has something to read (or has closed).
READ = selectors.EVENT_READ
#: Watch for, or report, a socket that takes more bytes.
WRITE = selectors.EVENT_WRITE

#: What :meth:`Poller.poll` returns: the data registered with each ready socket, and how it is ready.
Ready = List[Tuple[object, int]]


class SelectorsPoller:
    """The portable poller: :func:`selectors.DefaultSelector` behind the poller's methods."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def register(self, fd: int, events: int, data: object) -> None:
        """Watch ``fd`` for ``events`` (``READ``, ``WRITE`` or both); report it with ``data``."""
        self._selector.register(fd, events, data)

    def modify(self, fd: int, events: int, data: object) -> None:
        """Change what ``fd`` is watched for."""
        self._selector.modify(fd, events, data)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed)."""
        self._selector.unregister(fd)

    def poll(self, timeout: Optional[float]) -> Ready:
        """Wait up to ``timeout`` seconds (``None``: no limit) and return what is ready."""
        return [(key.data, events) for key, events in self._selector.select(timeout)]

    def close(self) -> None:
        """Release the OS's poller."""
        self._selector.close()


class EpollPoller:
    """The Linux poller: epoll, with one ``(data, events)`` entry per watched descriptor.

    Args:
        epoll: The ``select.epoll`` object to use (default: a new one).  Any
            object with its ``register``, ``modify``, ``unregister``,
            ``poll`` and ``close`` methods will do: a test hook.
    """

    def __init__(self, epoll: Optional[Any] = None) -> None:
        self._epoll = select.epoll() if epoll is None else epoll
        self._watched: Dict[int, Tuple[object, int]] = {}

    def register(self, fd: int, events: int, data: object) -> None:
        """Watch ``fd`` for ``events`` (``READ``, ``WRITE`` or both); report it with ``data``."""
        if fd in self._watched:
            raise KeyError(f"descriptor {fd} is already registered")
        self._epoll.register(fd, _EPOLL_EVENTS[events])
        self._watched[fd] = (data, events)

    def modify(self, fd: int, events: int, data: object) -> None:
        """Change what ``fd`` is watched for."""
        if fd not in self._watched:
            raise KeyError(f"descriptor {fd} is not registered")
        self._epoll.modify(fd, _EPOLL_EVENTS[events])
        self._watched[fd] = (data, events)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed)."""
        del self._watched[fd]
        self._epoll.unregister(fd)

    def poll(self, timeout: Optional[float]) -> Ready:
        """Wait up to ``timeout`` seconds (``None``: no limit) and return what is ready."""
        if timeout is None:
            timeout = -1
        elif timeout > 0:
            # epoll counts milliseconds; rounding up keeps it from waking
            # before the timeout and polling again in a busy loop.
            timeout = math.ceil(timeout * 1e3) * 1e-3
        else:
            timeout = 0
        watched = self._watched
        ready: Ready = []
        for fd, event in self._epoll.poll(timeout, max(1, len(watched))):
            entry = watched.get(fd)
            if entry is None:  # pragma: no cover - unregistered while its event was on the way
                continue
            if event == select.EPOLLIN:  # the common case, without the arithmetic
                ready.append((entry[0], READ))
                continue
            # EPOLLOUT, or an error or hang-up, which selectors reports as
            # writable and, unless the event is EPOLLOUT alone, readable.
            events = READ | WRITE if event & ~select.EPOLLOUT else WRITE
            ready.append((entry[0], events & entry[1]))
        return ready

    def close(self) -> None:
        """Release the OS's poller."""
        self._epoll.close()
        self._watched.clear()


_EPOLL_EVENTS: Dict[int, int] = {}
if hasattr(select, "epoll"):  # pragma: no branch - the tests run on Linux
    _EPOLL_EVENTS = {
        READ: select.EPOLLIN,
        WRITE: select.EPOLLOUT,
        READ | WRITE: select.EPOLLIN | select.EPOLLOUT,
    }

#: A poller of either kind.
Poller = Union[EpollPoller, SelectorsPoller]

#: The poller the engine uses on this OS.
DefaultPoller = EpollPoller if hasattr(select, "epoll") else SelectorsPoller
