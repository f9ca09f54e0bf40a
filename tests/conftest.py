"""How the test suite runs in parallel (``make test``: pytest-xdist, ``--dist loadgroup``).

Most tests are independent and go to whichever worker is free, one by one:
the kit's self-tests mostly wait on sockets, timeouts and child processes,
so several run side by side even on two cores.  The modules below keep all
their tests on one worker, because a module-scoped fixture there does work
that must happen once: it starts every kit run of the module at once
(test_kit_faults), or builds a wheel and virtualenvs (test_kit_install,
test_packaging).  Spread over workers, each worker would do it again.  The
two modules that build the wheel share one worker too: ``pip wheel .``
builds in the source tree (``build/``, ``*.egg-info``), so two builds at
once could mix their files.
"""

from __future__ import annotations

from typing import List

import pytest

#: Test module -> the group of modules whose tests all run on one worker, one after another (see above).
ONE_WORKER_GROUPS = {
    "test_kit_faults.py": "kit_faults",
    "test_kit_install.py": "wheel",
    "test_packaging.py": "wheel",
}


# First, so that pytest-xdist sees the groups when it names the tests for --dist loadgroup.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        group = ONE_WORKER_GROUPS.get(item.path.name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
