"""Start the reference master in scenario mode, for the kit to test.

>>> with reference_master() as master:          # doctest: +SKIP
...     pytest.main(["--pyargs", "skyllh_cluster.conformance", "--target", master.target])

Runs ``python -m skyllh_cluster master --scenario conformance --host
127.0.0.1 --port 0`` with this interpreter (so it works without the
``skyllh-cluster`` script on ``PATH``), reads ``listening on HOST:PORT`` from
its stderr and stops it by pid at the end.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from .process import MasterProcess, address_pattern

__all__ = ["reference_master", "command"]


def command(host: str = "127.0.0.1", port: int = 0, registration_timeout: Optional[float] = 1.0) -> List[str]:
    """The reference master's scenario command line.

    The registration timeout (MST-7) is 1 s by default here, so that the
    kit's MST-7 and FRM-6 checks do not wait for the 30 s production default.
    """
    argv = [sys.executable, "-m", "skyllh_cluster", "master", "--scenario", "conformance", "--host", host, "--port", str(port)]
    if registration_timeout is not None:
        argv += ["--registration-timeout", str(registration_timeout)]
    return argv


def reference_master(host: str = "127.0.0.1", port: int = 0, registration_timeout: Optional[float] = 1.0) -> MasterProcess:
    """A context manager running the reference master; ``.target`` is its ``HOST:PORT``."""
    return MasterProcess(command(host, port, registration_timeout), address_pattern("listening on"))
