"""What every test process needs, however the suite was started."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background of a shell (`make test &`, `nohup ... &`)
    # inherits SIGINT ignored, and so would every program the tests start: the
    # tests that interrupt a compute node, a master or the kit with SIGINT
    # (Ctrl-C) would then see it ignored.  With a handler here, the programs the
    # tests start get the default disposition, as from a terminal.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
