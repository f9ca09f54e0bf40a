"""The open-file limit: a master needs one descriptor per compute node."""

from __future__ import annotations

import logging

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no resource module
    resource = None  # type: ignore[assignment]

__all__ = ["ensure_fd_limit"]

logger = logging.getLogger(__name__)


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
