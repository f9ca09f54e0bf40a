"""The kit says "passed" only on evidence: pre-flight, inconclusive checks, exit statuses.

* A target that does not speak the protocol (an HTTP server, a silent
  listener) stops the run at the pre-flight with one line and exit 1: not
  one clause passed.
* A ``--cn-command`` that cannot start or never connects is a configuration
  error (exit 4), one line, within the startup timeout.
* A master that never reacts to a canary frame (neither closes nor answers)
  leaves SEC-1 and ENC-5 *inconclusive* (exit 5), never passed.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, List

import pytest

from skyllh_cluster.codec import loads_checked
from skyllh_cluster.commands import RegisterCN
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.conformance.scenario_checks import scenario_frames

from kit_runs import run_kit

pytestmark = pytest.mark.timeout(300)

#: At most this many connections are served by a test target (every loop is bounded).
MAX_CONNECTIONS = 64


class HoldingMaster:
    """A master that serves the scenario to a valid RegisterCN and holds any other first frame.

    It reads an invalid first frame and then does nothing at all: it neither
    closes nor answers.  A kit that judged "no canary connection within a
    wait" as a pass would pass it on SEC-1; the kit must say inconclusive.
    """

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.target = "%s:%d" % self._sock.getsockname()
        self._held: List[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "HoldingMaster":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()

    def _serve(self) -> None:
        for _ in range(MAX_CONNECTIONS):
            while not self._stop.is_set():
                try:
                    conn, _ = self._sock.accept()
                    break
                except socket.timeout:
                    continue
            else:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            head = conn.recv(2, socket.MSG_WAITALL)
            payload = conn.recv(int.from_bytes(head, "little"), socket.MSG_WAITALL) if len(head) == 2 else b""
        except OSError:
            conn.close()
            return
        try:
            valid = isinstance(loads_checked(payload), RegisterCN)
        except ProtocolError:
            valid = False
        if not valid:
            self._held.append(conn)  # read, then nothing: no close, no reply
            return
        conn.sendall(b"".join(scenario_frames()))
        conn.close()


def test_unreacting_master_leaves_the_canary_clauses_inconclusive() -> None:
    with HoldingMaster() as master:
        run = run_kit(["--target", master.target, "--conformance-clause", "SEC-1,ENC-5", "--conformance-timeout", "0.3"])
    assert run.status == 5, run.output[-3000:]
    assert run.outcomes()["SEC-1"] == run.outcomes()["ENC-5"] == "inconclusive"
    assert "no evidence that the target handled a canary pickle as its first frame" in run.detail("SEC-1")
    assert run.report["summary"]["inconclusive"] == 2 and run.report["exit_status"] == 5
    assert re.search(r"\? +SEC-1 +MUST +inconclusive", run.output) or re.search(r"\?\? SEC-1", run.output)


@contextmanager
def _http_server() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = re.search(r"port (\d+)", line)
        assert port, line
        yield f"127.0.0.1:{port.group(1)}"
    finally:
        proc.kill()
        proc.wait(10)


def test_http_server_as_target_gets_one_line_and_no_pass() -> None:
    with _http_server() as target:
        run = run_kit(["--target", target, "--strict-conformance"])
    assert run.status == 1
    assert "passed" not in run.outcomes().values()
    assert run.outcomes()["MST-1"] == "failed"
    lines = [line for line in run.output.splitlines() if "does not speak the SkyLLH cluster protocol" in line]
    assert len(lines) == 1 and "HTML" in lines[0]
    assert "SkyLLH cluster protocol conformance of" not in run.output  # no table


def test_missing_node_program_is_a_configuration_error() -> None:
    started = time.monotonic()
    run = run_kit(["--cn-command", "/nonexistent/skyllh-node {host} {port}"])
    assert run.status == 4 and run.report == {}
    assert "cannot start the compute node" in run.output and "KIT ERROR" not in run.output
    assert time.monotonic() - started < 60


def test_node_that_never_connects_stops_within_the_startup_timeout() -> None:
    started = time.monotonic()
    run = run_kit(["--cn-command", f"{sys.executable} -c 'import time; time.sleep(60)' {{host}} {{port}}",
                   "--cn-startup-timeout", "1"])
    assert run.status == 4
    assert "got no connection within 1 s" in run.output and "KIT ERROR" not in run.output
    assert time.monotonic() - started < 30  # the 60 s sleeper was killed by the kit, not waited for


def test_node_that_exits_at_once_is_a_configuration_error() -> None:
    run = run_kit(["--cn-command", f"{sys.executable} -c 'raise SystemExit(7)' {{host}} {{port}}"])
    assert run.status == 4
    assert "got exit status 7 before it connected" in run.output
