"""Our compute node registered with the ORIGINAL MasterNode (skyllh==24.1.0).

The original master runs in a subprocess (tests/original_master_driver.py),
on loopback, with nothing of ours on its side.  Our nodes register with it,
some as ComputeNode objects in this process and one as the program
``python -m skyllh_cluster.compute_node``; the master sends every scenario
payload and then ShutdownCN.  Every wait is bounded, and only the processes
started here are stopped, by their own handles.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from node_threads import NodeThread

from skyllh_cluster.compute_node import MasterClosedConnection, Stop
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire.values import values_equal
from skyllh_cluster.wire.vector_json import value_to_json

pytestmark = pytest.mark.interop

TIMEOUT = 60.0
TESTS = Path(__file__).resolve().parent
REFERENCE = TESTS.parent / "reference"
DRIVER = TESTS / "original_master_driver.py"


def subprocess_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REFERENCE), env.get("PYTHONPATH")) if p)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


class Process:
    """A subprocess whose stdout lines arrive on a queue, so that every read has a timeout."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=subprocess_env(),
        )
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stdout: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        line = self.lines.get(timeout=TIMEOUT)
        assert line is not None, f"the process ended early: {self.finish()}"
        self.stdout.append(line)
        return line

    def finish(self) -> "tuple[int, List[str], str]":
        """Wait for the process (bounded), kill it if it hangs; return status, all stdout lines, stderr."""
        try:
            self.popen.wait(TIMEOUT)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if line is not None:
                self.stdout.append(line)
        assert self.popen.stderr is not None
        return self.popen.returncode, self.stdout, self.popen.stderr.read()


@pytest.fixture
def processes() -> Iterator[List[Process]]:
    started: List[Process] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(TIMEOUT)


def start_original_master(processes: List[Process], n_cn: int, then: str) -> "tuple[Process, str, int]":
    master = Process(str(DRIVER), str(n_cn), then)
    processes.append(master)
    word, address, port = master.next_line().split()
    assert word == "listening"
    assert address.startswith("127."), "the original master must listen on loopback"
    return master, address, int(port)


def test_our_nodes_receive_every_payload_from_the_original_master_and_shut_down(processes) -> None:
    in_process = 2
    master, address, port = start_original_master(processes, in_process + 1, "scenario")
    nodes = [NodeThread(port, address=address, timeout=TIMEOUT) for _ in range(in_process)]
    program = Process("-m", "skyllh_cluster.compute_node", address, str(port), "--live-time", "60")
    processes.append(program)

    assert master.next_line() == f"registered {in_process + 1}"
    status, out, err = program.finish()
    for node in nodes:
        node.finish()
    master_status, master_out, master_err = master.finish()

    assert master_status == 0, master_err
    assert master_out[-1] == "done"
    for node in nodes:
        assert node.error is None
        assert node.result is Stop.SHUTDOWN
        assert len(node.messages) == len(SCENARIO_PAYLOADS)
        for got, want in zip(node.messages, SCENARIO_PAYLOADS):
            assert values_equal(got, want), (got, want)
    assert status == 0, err
    assert out == [
        f"Registered to master {address}:{port}",
        "Runtime set to 60 seconds",
        *("MSG " + json.dumps(value_to_json(p), separators=(",", ":")) for p in SCENARIO_PAYLOADS),
        "Received shutdown command. Shutting down.",
    ]


def test_our_nodes_see_the_original_master_go_away(processes) -> None:
    master, address, port = start_original_master(processes, 2, "exit")
    node = NodeThread(port, address=address, timeout=TIMEOUT)
    program = Process("-m", "skyllh_cluster.compute_node", address, str(port))
    processes.append(program)

    master_status, master_out, master_err = master.finish()
    status, out, err = program.finish()
    node.finish()

    assert master_status == 0, master_err
    assert master_out[-2:] == ["registered 2", "done"]
    assert isinstance(node.error, MasterClosedConnection)
    assert status == 1
    assert out[0] == f"Registered to master {address}:{port}"
    assert "closed the connection before ShutdownCN" in err
