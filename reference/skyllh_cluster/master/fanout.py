"""Doing one small step for each of many nodes, on several cores at once.

On a loopback or LAN interface a TCP ``send`` costs the sender several
microseconds of kernel time per socket (on loopback the receiver's whole TCP
stack runs in the sender's system call), against one or two microseconds of
Python.  A broadcast to thousands of nodes is therefore bound by those
system calls, and the only way to shorten it is to make them on several
cores: ``socket.send`` releases the GIL, so while one thread is in the
kernel another runs its bit of Python.  :class:`FanOut` maps a per-node step
over a list of nodes on a small fixed pool of threads (never a thread per
node).  Each node is in exactly one thread's share, so a step may touch its
own node freely; anything shared stays with the caller, who gets the
outcomes back in order.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, TypeVar

__all__ = ["FanOut", "PARALLEL_MINIMUM"]

T = TypeVar("T")
R = TypeVar("R")

#: Below this many items, threads cost more than they save.
PARALLEL_MINIMUM = 512


class FanOut:
    """Maps a step over many items on a few threads, the caller's included.

    Args:
        threads: How many threads run the step, the caller's included
            (default: one more than the number of CPUs, at most 4).  1 means no pool.
    """

    def __init__(self, threads: Optional[int] = None) -> None:
        if threads is None:
            # One more than the cores: while one thread runs its bit of
            # Python under the GIL, every core can still be in a send.
            threads = min(4, (os.cpu_count() or 1) + 1)
        self.threads = max(1, threads)
        self._pool: Optional[ThreadPoolExecutor] = None

    def map(self, step: Callable[[T], R], items: Sequence[T]) -> List[R]:
        """Return ``[step(item) for item in items]``, computed in contiguous shares on the threads.

        ``step`` must not raise: it returns its failure as an outcome.
        """
        if self.threads == 1 or len(items) < PARALLEL_MINIMUM:
            return [step(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="skyllh-cluster-fanout")
        size = -(-len(items) // self.threads)
        shares = [items[start : start + size] for start in range(0, len(items), size)]
        futures = [self._pool.submit(_map_share, step, share) for share in shares[1:]]
        outcomes = _map_share(step, shares[0])
        for future in futures:
            outcomes.extend(future.result())
        return outcomes

    def close(self) -> None:
        """Stop the threads (they are idle between calls)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _map_share(step: Callable[[T], R], share: Sequence[T]) -> List[R]:
    return [step(item) for item in share]
