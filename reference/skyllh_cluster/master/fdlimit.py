"""The process's resource limits that bound a master: open files and memory.

A master needs one descriptor per compute node, and it caps the connections
that have not registered yet at a share of both limits (issue F8, see
:class:`~skyllh_cluster.master.server.MasterServer`).
"""

from __future__ import annotations

import logging
import os

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no resource module
    resource = None  # type: ignore[assignment]

__all__ = ["ensure_fd_limit", "fd_limit", "available_memory"]

logger = logging.getLogger(__name__)

#: Taken as the limit where the platform has none to read (or no limit is set).
UNLIMITED = 1 << 20


def ensure_fd_limit(wanted: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``wanted``, at most to the hard limit.

    Returns the soft limit in force afterwards (which may still be below
    ``wanted`` when the hard limit is lower).  Never lowers the limit.
    """
    if resource is None:  # pragma: no cover - Windows
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted if soft == resource.RLIM_INFINITY else soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        logger.info("raised the open-file limit from %d to %d", soft, target)
        return target
    return soft


def fd_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` in force (:data:`UNLIMITED` when there is none)."""
    if resource is None:  # pragma: no cover - Windows
        return UNLIMITED
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return UNLIMITED if soft == resource.RLIM_INFINITY else int(soft)


def available_memory() -> int:
    """Bytes of memory this process may still take: the lower of RAM available and ``RLIMIT_AS`` room.

    RAM available is ``MemAvailable`` of ``/proc/meminfo`` on Linux, else
    the free pages ``sysconf`` reports; a platform with neither counts as
    unlimited.
    """
    available = _ram_available()
    if resource is not None:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            available = min(available, int(limit))
    return available


def _ram_available() -> int:
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - neither /proc nor sysconf
        return UNLIMITED * 65536
