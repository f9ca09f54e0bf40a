"""The kit's compute-node launcher: a node's output stays readable as evidence after the kit stops it."""

from __future__ import annotations

import sys

from skyllh_cluster.conformance.launcher import NodeProcess
from skyllh_cluster.conformance.transcript import Transcript

_CHATTY = "import sys, time; print('MSG 1', flush=True); print('last words', file=sys.stderr, flush=True); time.sleep(30)"


def test_output_is_kept_when_the_node_is_stopped() -> None:
    node = NodeProcess([sys.executable, "-c", _CHATTY], Transcript("chatty node"))
    try:
        for _ in range(200):  # the node writes within a second or so, however loaded the machine
            if node.output_tail():
                break
            node.wait_exit(0.05)
    finally:
        node.stop()  # killed while it sleeps: its files are closed
    assert node.stdout_bytes() == b"MSG 1\n"
    assert node.output_tail() == "last words"
    node.stop()  # a second stop changes nothing
    assert node.output_tail() == "last words"
