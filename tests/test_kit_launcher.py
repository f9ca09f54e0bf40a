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


_COUNTING = "import sys\nfor i in range(3000):\n    print(f'MSG {i}', flush=True)"


def test_reading_while_the_node_writes_loses_no_line() -> None:
    # The kit reads the node's output while the node still writes it (through the same open file).
    node = NodeProcess([sys.executable, "-c", _COUNTING], Transcript("counting node"))
    try:
        for _ in range(10000):
            node.stdout_bytes()
            if node.poll() is not None:
                break
        assert node.wait_exit(30) == 0
    finally:
        node.stop()
    assert node.stdout_bytes() == b"".join(f"MSG {i}\n".encode() for i in range(3000))
