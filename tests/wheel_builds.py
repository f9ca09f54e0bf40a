"""One ``pip wheel .`` of this clone at a time, also across pytest-xdist workers.

pip builds a local project in its source tree: setuptools writes ``build/``
and ``skyllh_cluster.egg-info`` there.  ``make test`` runs test modules side
by side, and two of them build the wheel (test_packaging, test_kit_install);
two builds at once could mix each other's files, so each takes this lock.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def one_build_at_a_time() -> Iterator[None]:
    """Hold the clone's build lock (a file under the git-ignored ``build/``) for the block."""
    lock = REPO / "build" / ".wheel-build.lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, also if the build raises
        yield
