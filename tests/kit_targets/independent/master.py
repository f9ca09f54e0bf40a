"""A master running the conformance scenario (spec §9), written from spec/ alone.

    python master.py --host 127.0.0.1 --port 0 [--registration-timeout 3] [--fault NAME]

Prints ``listening HOST:PORT`` on stdout as its first line, then serves every
compute node that connects until SIGTERM (SCN-2).  One thread, one selector,
non-blocking sockets (MST-4, MST-10): no connection can hold up another.
Errors go to stderr as ``[CLAUSE] at stream offset N: reason`` (ERR-2).

Faults (``--fault``), each breaking one requirement on purpose:

* ``ack-trailing``: ACKs a RegisterCN that has bytes after its STOP (ENC-1, MST-3);
* ``ack-unchecked``: ACKs any first frame that names RegisterCN, without
  decoding it (MST-3 and every receiver rule of ENC, CMD and VAL);
* ``no-close``: never closes a connection after ShutdownCN (MST-6);
* ``swap-msgs``: sends the second and third scenario payloads in the wrong order (SCN-1).
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kit_targets.independent import encoder  # noqa: E402
from kit_targets.independent.decoder import Command, Refusal, decode  # noqa: E402
from kit_targets.independent.framing import FrameSplitter, frame  # noqa: E402

SCENARIO_PAYLOADS = ["conformance", "ünïcødé ✓", b"\x00\x01\xfe\xff", 0, 255, 65535, -1,
    2**31 - 1, 2**31, -(2**31) - 1, 2**64, 1.5, float("-inf"), None, True, False,
    [1, "a", [2.5]], (1, 2), {"trial": 3, "seed": None}, "x" * 60000]  # fmt: skip

FAULTS = ("ack-trailing", "ack-unchecked", "no-close", "swap-msgs")
LINGER = 2.0  #: after ShutdownCN, how long to wait for the node's close before closing anyway
MAX_CONNECTIONS = 512  #: §10: a bound on connections held at once
READ_SIZE = 65536


def log(text: str) -> None:
    print(f"master: {text}", file=sys.stderr, flush=True)


def scenario_stream(fault: Optional[str]) -> bytes:
    """ACK, MSG(p) for each scenario payload, ShutdownCN, as one byte string (MST-2, SCN-1)."""
    payloads = list(SCENARIO_PAYLOADS)
    if fault == "swap-msgs":
        payloads[1], payloads[2] = payloads[2], payloads[1]
    frames = [frame(encoder.ack())] + [frame(encoder.msg(p)) for p in payloads] + [frame(encoder.shutdown())]
    return b"".join(frames)


class Connection:
    """One accepted connection and where it is in the master's state machine."""

    #: The most bytes one wake-up writes (None: all that is queued).
    write_chunk: Optional[int] = None

    def __init__(self, server: "Master", sock: socket.socket, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.state = "AWAIT_REGISTRATION"
        self.splitter = FrameSplitter()
        self.outgoing = bytearray()
        self.deadline: Optional[float] = time.monotonic() + server.registration_timeout  # MST-7
        self.expires_at: Optional[float] = None  # MST-9, in Unix time
        self.ack_unsent = 0  # bytes of the ACK frame not yet written (MST-2 before MST-9)

    # -- events --------------------------------------------------------------
    def on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            return self.close(f"read failed: {error.__class__.__name__}")
        if not data:
            return self.on_end_of_stream()
        {"AWAIT_REGISTRATION": self.on_registration_bytes, "SERVING": self.on_unexpected_bytes,
         "SHUT_DOWN": self.on_unexpected_bytes}[self.state](data)  # fmt: skip

    def on_end_of_stream(self) -> None:
        """FRM-5 inside a frame; between frames the peer simply closed (§7)."""
        if self.splitter.inside_frame and self.state == "AWAIT_REGISTRATION":
            return self.close(f"[FRM-5] at stream offset {self.splitter.offset}: the stream ended inside a frame")
        self.close()

    def on_registration_bytes(self, data: bytes) -> None:
        """MST-1 to MST-3: one complete, valid RegisterCN, and nothing after it (CN-5)."""
        self.splitter.feed(data)
        payload = self.splitter.next_payload()
        if payload is None:
            return
        start = self.splitter.offset - len(payload)
        try:
            command = self.decode_first(payload)
        except Refusal as refusal:
            return self.close(f"[{refusal.clause}] at stream offset {start + refusal.offset}: {refusal.reason}")
        if self.splitter.pending:
            return self.close(f"[CN-5] at stream offset {self.splitter.offset}: bytes after the RegisterCN")
        self.register(command)

    def decode_first(self, payload: bytes) -> Command:
        """MST-3: only a RegisterCN; any other command is refused as soon as its class is read."""
        try:
            return decode(payload, expect=("RegisterCN", "MST-3"))
        except Refusal as refusal:
            if self.server.fault == "ack-unchecked" and b"RegisterCN" in payload:
                return Command("RegisterCN", {"_cn_start_time": int(time.time()), "_cn_live_time": 3600})
            if self.server.fault == "ack-trailing" and refusal.reason.endswith("after STOP"):
                return decode(payload[: refusal.offset + 1], expect=("RegisterCN", "MST-3"))
            raise

    def register(self, command: Command) -> None:
        """Record the node, queue ACK, the MSGs and ShutdownCN, or only the ACK if its live time has passed."""
        assert command.state is not None
        start, live = command.state["_cn_start_time"], command.state["_cn_live_time"]
        self.expires_at = start + live
        self.deadline = None
        log(f"registered {self.peer}: start {start}, live time {live}")
        if time.time() >= self.expires_at:  # MST-9: ACK, then nothing
            self.outgoing += frame(encoder.ack())
        else:
            self.outgoing += self.server.stream
        self.ack_unsent = len(frame(encoder.ack()))
        self.state = "SERVING"
        self.server.want_write(self, True)

    def on_unexpected_bytes(self, data: bytes) -> None:
        """CN-5: a compute node sends nothing after its RegisterCN."""
        log(f"{self.peer}: [CN-5] at stream offset {self.splitter.offset}: {len(data)} bytes after the RegisterCN")
        if self.state == "SHUT_DOWN":
            return  # the ShutdownCN is on its way; keep draining until the node closes
        self.close()

    def on_writable(self) -> None:
        try:
            sent = self.sock.send(self.outgoing if self.write_chunk is None else self.outgoing[: self.write_chunk])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            return self.close(f"write failed: {error.__class__.__name__}")
        del self.outgoing[:sent]
        self.ack_unsent = max(0, self.ack_unsent - sent)
        if not self.outgoing:
            self.on_all_sent()

    def on_all_sent(self) -> None:
        """MST-6: after the whole ShutdownCN, half-close, then close when the node has closed."""
        self.server.want_write(self, False)
        if time.time() >= (self.expires_at or 0):
            return self.close()
        self.state = "SHUT_DOWN"
        if self.server.fault == "no-close":
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self.close()
        self.deadline = time.monotonic() + LINGER

    def on_deadline(self) -> None:
        if self.state == "AWAIT_REGISTRATION":
            return self.close(f"[MST-7] no complete RegisterCN within {self.server.registration_timeout} s")
        self.close()

    def on_live_time(self) -> None:
        """MST-9: a node whose live time has passed is dropped, once it has its ACK (REGISTERED -> SERVING, MST-2)."""
        if self.state == "SERVING" and not self.ack_unsent and self.expires_at is not None and time.time() >= self.expires_at:
            self.close("[MST-9] the node's live time has passed")

    def close(self, problem: str = "") -> None:
        if problem:
            log(f"{self.peer}: {problem}")
        self.server.forget(self)
        self.sock.close()


class Master:
    """The listening socket, the selector and every open connection."""

    def __init__(self, host: str, port: int, registration_timeout: float, fault: Optional[str]) -> None:
        self.registration_timeout = registration_timeout
        self.fault = fault
        self.stream = scenario_stream(fault)
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server((host, port), backlog=128)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.connections: List[Connection] = []

    @property
    def address(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"{host}:{port}"

    def serve_forever(self) -> None:
        while True:
            for key, mask in self.selector.select(self.next_timeout()):
                if key.data is None:
                    self.accept()
                    continue
                if mask & selectors.EVENT_READ and key.data in self.connections:
                    key.data.on_readable()
                if mask & selectors.EVENT_WRITE and key.data in self.connections:
                    key.data.on_writable()
            self.run_timers()

    def next_timeout(self) -> float:
        deadlines = [c.deadline for c in self.connections if c.deadline is not None]
        if not deadlines:
            return 0.5
        return max(0.0, min(0.5, min(deadlines) - time.monotonic()))

    def run_timers(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.deadline is not None and now >= conn.deadline:
                conn.on_deadline()
            elif conn in self.connections:
                conn.on_live_time()

    def accept(self) -> None:
        for _ in range(64):  # bounded per wake-up
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log(f"accept failed: {error.__class__.__name__}")
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            conn = Connection(self, sock, f"{peer[0]}:{peer[1]}")
            self.connections.append(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def want_write(self, conn: Connection, on: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        self.selector.modify(conn.sock, events, conn)

    def forget(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
            self.selector.unregister(conn.sock)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--registration-timeout", type=float, default=3.0, help="MST-7 bound in seconds (default 3)")
    parser.add_argument("--fault", choices=FAULTS)
    args = parser.parse_args(argv)
    master = Master(args.host, args.port, args.registration_timeout, args.fault)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening {master.address}", flush=True)
    try:
        master.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
