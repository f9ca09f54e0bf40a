"""A ComputeNode that serves on a thread of the test, recording how it ended.

Shared by the compute node's own tests and the interop tests against the
original master; every wait on it is bounded.
"""

from __future__ import annotations

import threading
import time
from typing import Any, List, Optional

from skyllh_cluster.compute_node import ComputeNode, Stop


class NodeThread(threading.Thread):
    """Constructs a ComputeNode (which registers) and serves until it stops.

    ``options`` go to the node; by default its messages are collected in
    :attr:`messages` and nothing is echoed.  :meth:`finish` joins within
    ``timeout`` seconds and fails the test if the node is still running.
    """

    def __init__(
        self,
        port: int,
        live_time: Any = 60,
        node_class: type = ComputeNode,
        *,
        address: str = "127.0.0.1",
        timeout: float = 20.0,
        **options: Any,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.live_time, self.node_class, self.options = port, live_time, node_class, options
        self.address, self.timeout = address, timeout
        self.messages: List[Any] = []
        self.options.setdefault("on_message", self.messages.append)
        self.options.setdefault("echo", False)
        self.node: Optional[ComputeNode] = None
        self.result: Optional[Stop] = None
        self.error: Optional[BaseException] = None
        self.started_at = time.time()
        self.start()

    def run(self) -> None:
        try:
            self.node = self.node_class(self.live_time, self.address, self.port, **self.options)
            self.result = self.node.handle_requests()
        except BaseException as exc:  # recorded for the test to assert on
            self.error = exc

    def finish(self) -> "NodeThread":
        self.join(self.timeout)
        assert not self.is_alive(), "the compute node did not stop"
        return self
