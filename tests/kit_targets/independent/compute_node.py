"""A compute node (spec §6), written from spec/ alone.

    python compute_node.py HOST PORT [--live-time SECONDS] [--fault NAME]

Registers (CN-1 to CN-3), waits for the ACK (CN-4), then prints one line
``MSG <json>`` on stdout for each MSG, in order (CN-11, SCN-3), ignores ACK
and RegisterCN (CN-8), skips payloads it cannot decode (CN-9) and stops on
ShutdownCN (CN-6, CN-7) or when its live time has passed, whatever the master
does (CN-10).  Errors go to stderr (ERR-2).

Exit status: 0 after ShutdownCN, or at the end of the live time once ACKed;
1 when registration fails (CN-4), the master closes the connection (the spec
leaves this status open; 1 as the original) or the stream ends inside a frame
(FRM-5).

Faults (``--fault``), each breaking a requirement on purpose:

* ``no-msg-decode``: once ACKed, takes nothing out of a MSG: it refuses and
  obeys frames as it should, but drops every MSG unprinted (CN-11, SCN-3);
* ``obey-trailing-shutdown``: obeys a ShutdownCN with bytes after its STOP (ENC-1, CN-9);
* ``bool-as-int``: prints True and False as the ints 1 and 0 (CN-11, VAL-4);
* ``ignore-live-time``: only notices its live time when a frame arrives (CN-10);
* ``mute-after-unknown``: after an ACK or RegisterCN it does not handle, it
  drops every later MSG unprinted, yet still obeys ShutdownCN (CN-8).
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kit_targets.independent import encoder  # noqa: E402
from kit_targets.independent.decoder import Command, Refusal, decode  # noqa: E402
from kit_targets.independent.framing import FrameSplitter, frame  # noqa: E402
from kit_targets.independent.notation import lift_int_digit_limit, msg_line  # noqa: E402

FAULTS = ("no-msg-decode", "obey-trailing-shutdown", "bool-as-int", "ignore-live-time", "mute-after-unknown")


class Stop(Exception):
    """The node is done; ``status`` is its exit status."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def log(text: str) -> None:
    print(f"compute node: {text}", file=sys.stderr, flush=True)


class ComputeNode:
    """One connection to the master, from RegisterCN to the end."""

    def __init__(self, host: str, port: int, live_time: int, fault: Optional[str]) -> None:
        self.start_time = int(time.time())  # CN-2: whole seconds, truncated
        self.live_time = live_time  # CN-3
        self.end_time = self.start_time + live_time  # CN-10: Unix time at which it stops
        self.fault = fault
        self.muted = False  # the mute-after-unknown fault, once triggered
        self.host, self.port = host, port
        self.state = "CONNECTED"
        self.splitter = FrameSplitter()
        self.sock: Optional[socket.socket] = None

    def run(self) -> int:
        try:
            self.connect_and_register()
            self.serve()
        except Stop as stop:
            log(str(stop))
            status = stop.status
        finally:
            if self.sock is not None:
                self.sock.close()
        return status

    def remaining(self) -> float:
        return self.end_time - time.time()

    def connect_and_register(self) -> None:
        """CN-1: RegisterCN as the first frame, canonical (ENC-7), in one write."""
        if self.remaining() <= 0:
            raise Stop(1, "[CN-10] the live time ended before the node connected")
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.remaining())
            self.sock.sendall(frame(encoder.register(self.start_time, self.live_time)))
        except OSError as error:
            raise Stop(1, f"[CN-4] could not register: {error.__class__.__name__}") from None
        self.sock.setblocking(False)
        self.state = "AWAIT_ACK"

    def serve(self) -> None:
        """Read until ShutdownCN, the end of the stream or the end of the live time."""
        while True:
            self.check_live_time()
            wait = max(0.0, self.remaining()) if self.fault != "ignore-live-time" else None
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                continue
            data = self.receive()
            self.check_live_time(arrived=True)  # CN-10: nothing after the moment is acted on
            self.splitter.feed(data)
            for payload in self.splitter.payloads():
                self.on_payload(payload)

    def receive(self) -> bytes:
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as error:
            raise Stop(1, f"the connection failed: {error.__class__.__name__}") from None
        if not data:
            self.on_end_of_stream()
        return data

    def on_end_of_stream(self) -> None:
        if self.splitter.inside_frame:
            raise Stop(1, f"[FRM-5] at stream offset {self.splitter.offset}: the stream ended inside a frame")
        if self.state == "AWAIT_ACK":
            raise Stop(1, "[CN-4] the master closed the connection before an ACK")
        raise Stop(1, "the master closed the connection")

    def check_live_time(self, arrived: bool = False) -> None:
        """CN-10: stop at the end of the live time; status 1 if no ACK came (CN-4)."""
        if self.fault == "ignore-live-time" and not arrived:
            return
        if self.remaining() <= 0:
            raise Stop(0 if self.state == "SERVING" else 1, "[CN-10] the live time has passed")

    def on_payload(self, payload: bytes) -> None:
        """One complete frame, in the state machine of spec/state-machines.md §2."""
        start = self.splitter.offset - len(payload)
        try:
            command = self.decode(payload)
        except Refusal as refusal:
            return self.on_undecodable(refusal, start)
        if self.state == "AWAIT_ACK":
            return self.on_first_reply(command)
        self.on_command(command)

    def decode(self, payload: bytes) -> Command:
        try:
            return decode(payload)
        except Refusal as refusal:
            trailing = self.fault == "obey-trailing-shutdown" and refusal.reason.endswith("after STOP")
            if trailing and decode(payload[: refusal.offset + 1]).name == "ShutdownCN":
                return Command("ShutdownCN")
            raise

    def on_undecodable(self, refusal: Refusal, start: int) -> None:
        """CN-4 before the ACK; CN-9 after it: skip the frame and keep serving."""
        where = f"[{refusal.clause}] at stream offset {start + refusal.offset}: {refusal.reason}"
        if self.state == "AWAIT_ACK":
            raise Stop(1, f"[CN-4] the first reply cannot be decoded: {where}")
        log(f"skipped a frame: {where}")

    def on_first_reply(self, command: Command) -> None:
        if command.name != "ACK":
            raise Stop(1, f"[CN-4] the first reply is {command.name}, not ACK")
        self.state = "SERVING"

    def on_command(self, command: Command) -> None:
        """CN-6: ShutdownCN ends the node; CN-8: ACK and RegisterCN are ignored; CN-11: MSG is printed."""
        if command.name == "ShutdownCN":
            self.state = "SHUT_DOWN"
            raise Stop(0, "ShutdownCN")
        if command.name != "MSG":
            log(f"[CN-8] ignored {command.name}")
            self.muted = self.fault == "mute-after-unknown"
            return
        if self.fault == "no-msg-decode" or self.muted:
            return
        assert command.state is not None
        self.print_msg(command.state["msg"])

    def print_msg(self, value: Any) -> None:
        """SCN-3: one line per MSG, flushed at once so the order on stdout is the arrival order."""
        if self.fault == "bool-as-int":
            value = _bools_as_ints(value)
        sys.stdout.write(msg_line(value) + "\n")
        sys.stdout.flush()


def _bools_as_ints(value: Any) -> Any:
    if type(value) is bool:
        return int(value)
    if type(value) in (list, tuple):
        return type(value)(_bools_as_ints(v) for v in value)
    return value


def main(argv: Optional[List[str]] = None) -> int:
    lift_int_digit_limit()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--live-time", type=int, default=7200, help="seconds to serve (default 7200)")
    parser.add_argument("--fault", choices=FAULTS)
    args = parser.parse_args(argv)
    if args.live_time < 0:
        parser.error("--live-time must be 0 or more")
    return ComputeNode(args.host, args.port, args.live_time, args.fault).run()


if __name__ == "__main__":
    sys.exit(main())
