"""``make demo``: the conformance kit against the reference master, then the reference compute node.

Starts the reference master in scenario mode and runs the kit against it,
then runs the kit against the reference compute node, printing both clause
tables.  Exits non-zero if either run does not conform.
"""

from __future__ import annotations

import sys
import time

from skyllh_cluster.conformance.__main__ import main as run_kit
from skyllh_cluster.conformance.drivers.compute_nodes import REFERENCE
from skyllh_cluster.conformance.drivers.reference_master import reference_master

# Only the clause table and the summary: the kit's dots are not the point here.
QUIET = ["-q", "--no-header", "-p", "no:warnings"]


def main() -> int:
    print("== the conformance kit against the reference master "
          "(skyllh-cluster master --scenario conformance) ==", flush=True)
    started = time.monotonic()
    with reference_master() as master:
        master_status = run_kit(["--target", master.target, "--strict-conformance", *QUIET])
    master_time = time.monotonic() - started

    print("\n== the conformance kit against the reference compute node "
          "(python -m skyllh_cluster.compute_node) ==", flush=True)
    started = time.monotonic()
    node_status = run_kit(["--cn-command", REFERENCE, "--strict-conformance", *QUIET])
    node_time = time.monotonic() - started

    print(f"\nreference master: exit {master_status} in {master_time:.1f} s; "
          f"reference compute node: exit {node_status} in {node_time:.1f} s")
    return 0 if master_status == node_status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
