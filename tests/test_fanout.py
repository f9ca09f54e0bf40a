"""FanOut: per-node steps on a few threads, every outcome back in order."""

from __future__ import annotations

import threading
from typing import List, Sequence

import pytest

from skyllh_cluster.master import fanout
from skyllh_cluster.master.fanout import FanOut


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [0, 1, 5, 31, 32, 33, 100])
def test_every_item_is_worked_once_and_outcomes_keep_their_order(monkeypatch, threads, count):
    monkeypatch.setattr(fanout, "PARALLEL_MINIMUM", 2)
    monkeypatch.setattr(fanout, "CHUNK", 4)
    chunks: List[Sequence[int]] = []
    lock = threading.Lock()

    def work(chunk: Sequence[int]) -> List[int]:
        with lock:
            chunks.append(list(chunk))
        return [item * 10 for item in chunk]

    pool = FanOut(threads)
    try:
        assert pool.map_chunks(work, list(range(count))) == [item * 10 for item in range(count)]
        chunks.clear()
        assert pool.map_chunks(work, list(range(count))) == [item * 10 for item in range(count)]  # threads reused
    finally:
        pool.close()
    assert sorted(item for chunk in chunks for item in chunk) == list(range(count))
    if threads > 1 and count >= 2:
        assert all(len(chunk) <= 4 for chunk in chunks)


def test_the_threads_really_share_the_work(monkeypatch):
    monkeypatch.setattr(fanout, "PARALLEL_MINIMUM", 2)
    monkeypatch.setattr(fanout, "CHUNK", 1)
    arrived = threading.Barrier(2, timeout=10)  # bounded: fails instead of hanging

    def work(chunk: Sequence[int]) -> List[str]:
        if chunk[0] < 2:  # the first two chunks wait for each other: two threads or a timeout
            arrived.wait()
        return [threading.current_thread().name for _ in chunk]

    pool = FanOut(2)
    try:
        names = pool.map_chunks(work, list(range(8)))
    finally:
        pool.close()
    assert len(set(names[:2])) == 2


def thread_names(chunk: Sequence[int]) -> List[str]:
    return [threading.current_thread().name for _ in chunk]


def test_small_lists_are_worked_on_the_callers_thread():
    pool = FanOut(4)
    names = pool.map_chunks(thread_names, list(range(fanout.PARALLEL_MINIMUM - 1)))
    assert set(names) == {threading.current_thread().name}
    assert not pool.started  # no threads were started
    pool.close()


def test_one_thread_means_no_pool_whatever_the_size():
    pool = FanOut(1)
    assert set(pool.map_chunks(thread_names, list(range(5000)))) == {threading.current_thread().name}
    assert not pool.started
    pool.close()
    pool.close()  # idempotent


def test_default_threads_follow_the_cpus(monkeypatch):
    monkeypatch.setattr(fanout, "_CPUS", 2)
    assert FanOut().threads == 2
    monkeypatch.setattr(fanout, "_CPUS", 64)
    assert FanOut().threads == 4
    assert FanOut(0).threads == 1
