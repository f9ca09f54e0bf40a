"""Starting and stopping the compute node under test (compute-node mode).

The user gives a command template, ``--cn-command "CMD {host} {port}
{live_time}"``.  It is split like a shell would (:func:`shlex.split`) and only
then are the placeholders filled in, one argument at a time, so that an
address can never turn into extra arguments.  The process is started without
a shell, its output goes to temporary files (a chatty node cannot block on a
full pipe), and it is always stopped by its own pid with bounded waits.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
import time
from typing import IO, List, Optional, Tuple

from .failures import KitError
from .transcript import Transcript

__all__ = ["command_line", "NodeProcess"]

logger = logging.getLogger(__name__)

PLACEHOLDERS = ("host", "port", "live_time")
#: The most of each output stream the kit reads (and keeps after the node is stopped).
_KEEP = 16 << 20
_STDOUT, _STDERR = 0, 1


def command_line(template: str, host: str, port: int, live_time: int) -> List[str]:
    """The argument list for one node: the template split, then filled in."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise KitError(f"--cn-command {template!r} does not split into words: {exc}") from exc
    if not words:
        raise KitError("--cn-command is empty")
    values = {"host": host, "port": str(port), "live_time": str(live_time)}
    try:
        return [word.format(**values) for word in words]
    except (KeyError, IndexError, ValueError) as exc:
        raise KitError(
            f"--cn-command {template!r}: unknown placeholder {exc}; use {{host}}, {{port}} and {{live_time}}"
        ) from exc


class NodeProcess:
    """One compute node process, started from the template, stopped by pid."""

    def __init__(self, argv: List[str], transcript: Transcript) -> None:
        self.argv = argv
        self.transcript = transcript
        self._out: IO[bytes] = tempfile.TemporaryFile()
        self._err: IO[bytes] = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err)
        except OSError as exc:
            self._out.close()
            self._err.close()
            raise KitError(f"cannot start the compute node {shlex.join(argv)}: {exc}") from exc
        self.started = time.time()
        #: What the node wrote, kept by :meth:`stop` so that evidence can still be read after it.
        self._kept: Optional[Tuple[bytes, bytes]] = None
        transcript.note(f"started compute node pid {self.proc.pid}: {shlex.join(argv)}")

    @property
    def pid(self) -> int:
        """The process id of the node."""
        return self.proc.pid

    def wait_exit(self, timeout: float) -> Optional[int]:
        """The exit status, waiting at most ``timeout`` seconds; ``None`` if still running."""
        try:
            status = self.proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None
        self.transcript.note(f"compute node exited with status {status}")
        return status

    def poll(self) -> Optional[int]:
        """The exit status if the node has exited, else ``None``."""
        return self.proc.poll()

    def stdout_bytes(self, limit: int = 16 << 20) -> bytes:
        """What the node has written to its standard output so far (SCN-3 lines among it), at most ``limit`` bytes."""
        return self._read(_STDOUT)[:limit]

    def output_tail(self, lines: int = 5) -> str:
        """The last lines the node wrote to stderr (or stdout), for evidence."""
        for which in (_STDERR, _STDOUT):
            text = self._read(which).decode("utf-8", "replace").strip()
            if text:
                tail = text.splitlines()[-lines:]
                return " | ".join(line[:200] for line in tail)
        return ""

    def _read(self, which: int) -> bytes:
        # After stop() the files are closed: a check that fails the node then still needs its output.
        if self._kept is not None:
            return self._kept[which]
        stream = (self._out, self._err)[which]
        # pread, not seek and read: the node writes through the same open file, whose offset a seek would move
        # under it (its next line would then overwrite the first ones).
        chunks: List[bytes] = []
        size = 0
        while size < _KEEP:
            chunk = os.pread(stream.fileno(), _KEEP - size, size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def stop(self) -> None:
        """Kill the node if it still runs (by its pid only) and release its files."""
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a kill that takes this long
                logger.warning("compute node pid %d did not die within 5 s of SIGKILL", self.proc.pid)
            self.transcript.note(f"kit killed compute node pid {self.proc.pid}")
        if self._kept is None:
            self._kept = (self._read(_STDOUT), self._read(_STDERR))
        self._out.close()
        self._err.close()
