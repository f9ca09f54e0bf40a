"""A pytest plugin for the self-tests: the kit's own ``Kit.connect`` breaks after the pre-flight.

Loaded with ``-p kit_sabotage``; it stands for a bug inside the kit, which
must end the run with exit status 3 and a KIT ERROR line, never a verdict.
"""

from __future__ import annotations

from skyllh_cluster.conformance.session import Kit


def _sabotaged(self: Kit, label: str = "node", patience: object = None, **options: object) -> object:
    raise RuntimeError("sabotaged by the self-test")


def pytest_runtest_setup(item: object) -> None:
    Kit.connect = _sabotaged  # type: ignore[method-assign]
