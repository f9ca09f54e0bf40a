"""Raw-socket compute nodes and expected bytes for the master's tests.

A :class:`RawNode` is a test peer that writes exact bytes and reads exact
bytes; nothing it receives is unpickled.  Expected frames are made with the
ORIGINAL classes (``skyllh.cluster.commands``, skyllh==24.1.0) and
``pickle.dumps`` on objects the test built itself, so each assertion also
checks that our master speaks the original's bytes.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from typing import Any, Callable, Optional, Tuple

from skyllh.cluster import commands as original

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
    return len(payload).to_bytes(2, "little") + payload


def original_frame(command: Any) -> bytes:
    """The frame the original sends for ``command`` (an original command object)."""
    return frame(pickle.dumps(command, protocol=4))


def msg_frame(value: Any) -> bytes:
    return original_frame(original.MSG(value))


def register_frame(start: Optional[int] = None, live: int = 7200) -> bytes:
    return original_frame(original.RegisterCN(int(time.time()) if start is None else start, live))


class RawNode:
    """One raw TCP peer of the master."""

    def __init__(self, address: Tuple[str, int], *, rcvbuf: Optional[int] = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
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
