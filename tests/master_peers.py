"""Raw-socket compute nodes and expected bytes for the master's tests.

A :class:`RawNode` is a test peer that writes exact bytes and reads exact
bytes; nothing it receives is unpickled.  Expected frames are made with the
ORIGINAL classes (``skyllh.cluster.commands``, skyllh==24.1.0) and
``pickle.dumps`` on objects the test built itself, so each assertion also
checks that our master speaks the original's bytes.
"""

from __future__ import annotations

import gc
import os
import pickle
import socket
import threading
import time
from typing import Any, Callable, Optional, Tuple

from skyllh.cluster import commands as original

from skyllh_cluster.wire.framing import encode_frame

#: The original's ACK frame, from /work/shared/original-skyllh-cluster.md.
GOLDEN_ACK = bytes.fromhex(
    "310080049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e"
)
#: The original's ShutdownCN frame, from the same facts file.
GOLDEN_SHUTDOWN = bytes.fromhex(
    "38008004952d000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a53687574646f776e434e9493942981942e"
)
WAIT = 10.0  # seconds; the bound of every wait in these tests


def frame(payload: bytes) -> bytes:
    return encode_frame(payload)


def original_frame(command: Any) -> bytes:
    """The frame the original sends for ``command`` (an original command object)."""
    return frame(pickle.dumps(command, protocol=4))


def msg_frame(value: Any) -> bytes:
    return original_frame(original.MSG(value))


def register_frame(start: Optional[int] = None, live: int = 7200) -> bytes:
    return original_frame(original.RegisterCN(int(time.time()) if start is None else start, live))


class RawNode:
    """One raw TCP peer of the master."""

    def __init__(self, address: Tuple[str, int], *, rcvbuf: Optional[int] = None, timeout: float = WAIT) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.reset = False

    @property
    def key(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def send(self, data: bytes) -> "RawNode":
        self.sock.sendall(data)
        return self

    def register(self, start: Optional[int] = None, live: int = 7200) -> "RawNode":
        return self.send(register_frame(start, live))

    def read_exact(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(size)
            if not chunk:
                raise EOFError(f"EOF with {size} bytes still expected")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def read_to_eof(self) -> bytes:
        """Everything until the master closes (a reset counts as a close; see ``reset``)."""
        chunks = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                self.reset = True
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise TimeoutError("the master did not close the connection")
        return b"".join(chunks)

    def abort(self) -> None:
        """Close with a reset (SO_LINGER 0), like a node that crashed."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


class Background:
    """Run ``fn`` on a thread; ``result()`` joins (bounded) and re-raises its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # handed to the test thread
            self._error = exc

    def result(self, timeout: float = WAIT) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the background call did not finish")
        if self._error is not None:
            raise self._error
        return self._value


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``condition`` until it is truthy (bounded); return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what}")


def open_fds() -> int:
    """This process's open descriptors, after collecting garbage.

    Objects that earlier tests dropped may still hold sockets until a
    collection; without one, such a socket could close mid-test and be
    counted as the engine's.
    """
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


class MaliciousReduce:
    """Pickles to GLOBAL-style ``os.system(<cmd>)`` via REDUCE: the classic RCE payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> Tuple[Any, Tuple[str]]:
        return (os.system, (self.command,))


def malicious_frame(canary: str) -> bytes:
    """A frame whose payload, if unpickled, would create the file ``canary``."""
    return frame(pickle.dumps(MaliciousReduce(f"touch {canary}"), protocol=4))


# --- compute node processes ---------------------------------------------------------------

import json as _json
import queue as _queue
import re as _re
import subprocess as _subprocess
import sys as _sys
from pathlib import Path as _Path
from typing import Dict, List, Sequence

from skyllh_cluster.wire.vector_json import value_to_json

REFERENCE = _Path(__file__).resolve().parents[1] / "reference"
PROCESS_WAIT = 60.0  # seconds; starting the original imports numpy and scipy

#: How each kind of compute node is started, with the original's arguments.
NODE_COMMANDS = {
    "original": [_sys.executable, "-m", "skyllh.cluster.compute_node"],
    "ours": [_sys.executable, "-m", "skyllh_cluster.compute_node"],
    "cli": [_sys.executable, "-m", "skyllh_cluster", "compute-node"],
}


def subprocess_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REFERENCE), env.get("PYTHONPATH")) if p)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def start_compute_node(kind: str, host: str, port: int, live_time: int = 60, prefix: Sequence[str] = ()):
    return _subprocess.Popen(
        [*prefix, *NODE_COMMANDS[kind], host, str(port), "--live-time", str(live_time)],
        stdout=_subprocess.PIPE,
        stderr=_subprocess.PIPE,
        env=subprocess_env(),
        encoding="utf-8",
    )


def expected_node_output(
    host: str, port: int, live_time: int, messages: Sequence[Any], kind: str = "original"
) -> List[str]:
    """The lines a compute node of ``kind`` (a key of NODE_COMMANDS) prints for this session.

    The original prints ``Received general message: {m}`` for each MSG; ours
    prints ``MSG <json>`` (clause SCN-3, the vectors' JSON notation) and the
    original's other lines.
    """
    if kind == "original":
        lines = [f"Received general message: {m}" for m in messages]
    else:
        lines = ["MSG " + _json.dumps(value_to_json(m), separators=(",", ":")) for m in messages]
    return [
        f"Registered to master {host}:{port}",
        f"Runtime set to {live_time} seconds",
        *lines,
        "Received shutdown command. Shutting down.",
    ]


def finish(process, timeout: float = PROCESS_WAIT):
    """Wait (bounded) for a process we started; kill it by its handle if it overruns."""
    try:
        out, err = process.communicate(timeout=timeout)
    except _subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"process {process.args} did not finish; stderr: {err}")
    return process.returncode, out, err


class LineReader:
    """Reads a process's stream on a thread, so that waiting for a line is bounded."""

    def __init__(self, stream) -> None:
        self.lines: "_queue.Queue[str]" = _queue.Queue()
        self.seen: List[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # type: ignore[arg-type]

    def wait_for(self, pattern: str, timeout: float = PROCESS_WAIT):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line matching {pattern!r}; saw {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except _queue.Empty:
                continue
            if line is None:
                raise EOFError(f"stream ended without {pattern!r}; saw {self.seen}")
            self.seen.append(line)
            match = _re.search(pattern, line)
            if match:
                return match

    def rest(self, timeout: float = PROCESS_WAIT) -> List[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except _queue.Empty:
                continue
            if line is None:
                return self.seen
            self.seen.append(line)
        raise TimeoutError("the stream did not end")


def start_master_cli(*args: str, prefix: Sequence[str] = (), preexec_fn: Optional[Callable[[], None]] = None):
    """``python -m skyllh_cluster master ARGS``; returns the process and a reader of its stderr.

    ``preexec_fn`` runs in the child before the master starts (e.g. to
    lower its resource limits).
    """
    process = _subprocess.Popen(
        [*prefix, _sys.executable, "-m", "skyllh_cluster", "master", *args],
        stdin=_subprocess.PIPE,
        stdout=_subprocess.PIPE,
        stderr=_subprocess.PIPE,
        env=subprocess_env(),
        encoding="utf-8",
        preexec_fn=preexec_fn,
    )
    return process, LineReader(process.stderr)


def wait_exit(process, timeout: float = PROCESS_WAIT) -> int:
    """Wait (bounded) for a process whose streams are read elsewhere; kill it by its handle on overrun."""
    try:
        return process.wait(timeout=timeout)
    except _subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"process {process.args} did not finish")
