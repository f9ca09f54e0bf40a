"""``--cn-command`` templates for the compute nodes the project knows.

Each template runs with this interpreter, quoted for :func:`shlex.split`, so
that the kit finds the same Python (and installed packages) as the caller.
"""

from __future__ import annotations

import shlex
import sys

__all__ = ["REFERENCE", "ORIGINAL", "template"]


def template(module: str) -> str:
    """``python -m MODULE {host} {port} --live-time {live_time}`` with this interpreter."""
    return f"{shlex.quote(sys.executable)} -m {module} {{host}} {{port}} --live-time {{live_time}}"


#: The reference compute node, ``python -m skyllh_cluster.compute_node``.
REFERENCE = template("skyllh_cluster.compute_node")

#: The original compute node of skyllh==24.1.0, ``python -m skyllh.cluster.compute_node``.
ORIGINAL = template("skyllh.cluster.compute_node")
