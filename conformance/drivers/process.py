"""A master process started for the kit: read its address, stop it by pid."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import IO, List, Optional, Pattern, Tuple

__all__ = ["MasterProcess"]


class MasterProcess:
    """Start ``argv``, wait for a line on stderr or stdout that gives its address.

    Used as a context manager: on exit the process is sent SIGTERM, then
    SIGKILL if it has not gone within ``stop_timeout`` seconds; only this
    process, by its pid.

    Args:
        argv: The command.
        address_line: A regex with groups ``host`` and ``port``.
        stream: ``"stderr"`` or ``"stdout"``, where the line appears.
        start_timeout: How long to wait for the line.
    """

    def __init__(
        self,
        argv: List[str],
        address_line: Pattern[str],
        *,
        stream: str = "stderr",
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.argv = argv
        self._pattern = address_line
        self._stream_name = stream
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[Tuple[str, int]] = None
        self.lines: List[str] = []
        self._found = threading.Event()

    def __enter__(self) -> "MasterProcess":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def target(self) -> str:
        """``HOST:PORT`` for ``--target``."""
        assert self.address is not None
        return f"{self.address[0]}:{self.address[1]}"

    def start(self) -> Tuple[str, int]:
        """Start the process and return its address once it has said it."""
        other = subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self._stream_name == "stdout" else other,
            stderr=subprocess.PIPE if self._stream_name == "stderr" else other,
            text=True,
            errors="replace",
        )
        stream = self.proc.stdout if self._stream_name == "stdout" else self.proc.stderr
        assert stream is not None
        # A reader thread keeps the pipe drained for the process's whole life,
        # so a chatty master never blocks on a full pipe.
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()
        deadline = time.monotonic() + self._start_timeout
        while not self._found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{' '.join(self.argv)} did not announce its address "
                    f"(status {self.proc.returncode}); it said: {' | '.join(self.lines[-5:])}"
                )
        assert self.address is not None
        return self.address

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            del self.lines[:-200]
            if not self._found.is_set():
                match = self._pattern.search(line)
                if match:
                    self.address = (match.group("host"), int(match.group("port")))
                    self._found.set()

    def stop(self) -> Optional[int]:
        """Stop the process (SIGTERM, then SIGKILL); return its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(self._stop_timeout)
        return self.proc.returncode


def address_pattern(prefix: str) -> Pattern[str]:
    """A regex for ``<prefix> HOST:PORT``."""
    return re.compile(re.escape(prefix) + r"\s+\[?(?P<host>[0-9A-Za-z.:-]+?)\]?:(?P<port>\d+)\s*$")
