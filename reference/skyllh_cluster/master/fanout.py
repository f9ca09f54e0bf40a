"""Doing one small step for each of many nodes, on several cores at once.

On a loopback or LAN interface a TCP ``send`` costs the sender several
microseconds of kernel time per socket (on loopback the receiver's whole TCP
stack runs in the sender's system call), against one or two microseconds of
Python.  A broadcast to thousands of nodes is therefore bound by those
system calls, and the only way to shorten it is to make them on several
cores: ``socket.send`` releases the GIL, so while one thread is in the
kernel another runs its bit of Python.  :class:`FanOut` runs a step over
chunks of a list of nodes on a small fixed pool of threads (never a thread
per node).  Each node is in exactly one chunk, so a step may touch its own
nodes freely; anything shared stays with the caller, who gets the outcomes
back in order.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, List, Optional, Sequence, TypeVar

__all__ = ["FanOut", "PARALLEL_MINIMUM", "CHUNK"]

T = TypeVar("T")
R = TypeVar("R")

# Read once: os.cpu_count() reads a file, and masters are made on the hot path.
_CPUS = os.cpu_count() or 1

#: Below this many items, threads cost more than they save.
PARALLEL_MINIMUM = 512
#: Items a thread takes at a time: small enough to even out the threads'
#: ends, large enough that taking one costs nothing next to its sends.
CHUNK = 128


class FanOut:
    """Runs a step over many items on a few threads, the caller's included.

    Args:
        threads: How many threads run the step, the caller's included
            (default: the number of CPUs, at most 4).  1 means no pool.
    """

    def __init__(self, threads: Optional[int] = None) -> None:
        if threads is None:
            # One per core: on loopback the receivers need CPU too, and
            # measured on 2 cores, a third thread only added GIL hand-offs.
            threads = min(4, _CPUS)
        self.threads = max(1, threads)
        self._pool: Optional[ThreadPoolExecutor] = None

    def map_chunks(self, work: Callable[[Sequence[T]], List[R]], items: Sequence[T]) -> List[R]:
        """Return the concatenation of ``work(chunk)`` over consecutive chunks of ``items``.

        ``work`` must return one outcome per item of its chunk, and must not
        raise.  The threads take chunks of :data:`CHUNK` items from a shared
        queue, so that a thread whose sends were slow is not left with a
        fixed share while the others idle.
        """
        if self.threads == 1 or len(items) < PARALLEL_MINIMUM:
            return work(items)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="skyllh-cluster-fanout")
        outcomes: List[Optional[R]] = [None] * len(items)
        # Taking the next start from a shared iterator is atomic under the GIL.
        starts = iter(range(0, len(items), CHUNK))
        futures = [self._pool.submit(_take_chunks, work, items, starts, outcomes) for _ in range(self.threads - 1)]
        _take_chunks(work, items, starts, outcomes)
        for future in futures:
            future.result()
        return outcomes  # type: ignore[return-value]

    @property
    def started(self) -> bool:
        """Whether the pool's threads have been started (they are only for large lists)."""
        return self._pool is not None

    def close(self) -> None:
        """Stop the threads (they are idle between calls)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _take_chunks(
    work: Callable[[Sequence[T]], List[R]], items: Sequence[T], starts: Iterator[int], outcomes: List[Optional[R]]
) -> None:
    for start in starts:
        outcomes[start : start + CHUNK] = work(items[start : start + CHUNK])
