"""A compute node for the kit's self-tests, with one optional fault.

    python tests/kit_targets/faulty_cn.py HOST PORT --live-time S [--fault CLAUSE-ID] [--write-mode MODE]

With no fault it meets every clause the kit tests in compute-node mode;
``--fault`` breaks exactly the named one (see :data:`FAULTS`).
``--write-mode byte-by-byte`` writes the RegisterCN one byte per write.
Payloads are decoded only with :func:`skyllh_cluster.codec.loads`.  Exit
status: 0 after ShutdownCN or at the end of the live time, 1 otherwise.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit_targets.faults import bad_registration, emulate_unsafe_unpickler, frame  # noqa: E402

from skyllh_cluster.codec import dumps, loads  # noqa: E402
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN  # noqa: E402
from skyllh_cluster.errors import ProtocolError  # noqa: E402

FAULTS = {
    "CN-1": "an ACK before the RegisterCN",
    "CN-2": "a start time an hour early",
    "CN-3": "the live time plus one",
    "CN-4": "any first reply counts as an ACK",
    "CN-5": "an ACK after the RegisterCN",
    "CN-6": "exit status 3 after ShutdownCN",
    "CN-7": "a 3 s pause before closing after ShutdownCN",
    "CN-8": "an unexpected ACK or RegisterCN ends the node",
    "CN-9": "an undecodable frame ends the node",
    "CN-10": "the live time is checked only when a frame arrives",
    "CN-11": "a MSG holding a dict ends the node",
    "FRM-1": "a big-endian length prefix",
    "FRM-3": "an empty frame before the RegisterCN",
    "FRM-4": "each recv is taken as exactly one frame",
    "FRM-5": "end of stream inside a frame is ignored",
    "ENC-1": "a byte after STOP",
    "ENC-2": "times written with the INT opcode",
    "ENC-3": "a class from skyllh.cluster.evil",
    "ENC-4": "a memo reference never stored",
    "ENC-5": "a call nested in a MSG is run (emulated pickle.loads)",
    "ENC-7": "the RegisterCN at pickle protocol 2",
    "ENC-8": "non-canonical payloads are refused",
    "CMD-1": "NEWOBJ with (1,)",
    "CMD-3": "times as str",
    "SEC-1": "a top-level call is run (emulated pickle.loads)",
}


class Stop(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--live-time", type=int, default=7200)
    parser.add_argument("--fault", choices=sorted(FAULTS), default=None)
    parser.add_argument("--write-mode", choices=["normal", "single-write", "byte-by-byte"], default="normal")
    args = parser.parse_args(argv)
    started = time.time()
    sock = socket.create_connection((args.host, args.port), timeout=10)
    try:
        return Node(sock, args, started).run()
    except Stop as stop:
        return stop.status
    finally:
        sock.close()


class Node:
    def __init__(self, sock: socket.socket, args: argparse.Namespace, started: float) -> None:
        self.sock = sock
        self.fault = args.fault
        self.write_mode = args.write_mode
        self.live_time = args.live_time
        self.started = started
        self.deadline = int(started) + args.live_time
        self.buffer = b""
        self.acked = False

    def registration(self) -> List[bytes]:
        start, live = int(self.started), self.live_time
        if self.fault == "CN-2":
            start -= 3600
        if self.fault == "CN-3":
            live += 1
        if self.fault in ("ENC-1", "ENC-2", "ENC-3", "ENC-4", "ENC-7", "CMD-1", "CMD-3"):
            payload = bad_registration(self.fault, start, live)
        else:
            payload = dumps(RegisterCN(start, live))
        frames = [frame(payload, big_endian=self.fault == "FRM-1")]
        if self.fault == "CN-1":
            frames.insert(0, frame(dumps(ACK())))
        if self.fault == "FRM-3":
            frames.insert(0, b"\x00\x00")
        if self.fault == "CN-5":
            frames.append(frame(dumps(ACK())))
        return frames

    def send(self, data: bytes) -> None:
        if self.write_mode == "byte-by-byte":
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in data:
                self.sock.sendall(bytes([byte]))
        else:
            self.sock.sendall(data)

    def next_payload(self) -> bytes:
        """The next frame's payload; Stop at end of stream or at the live time."""
        while True:
            if len(self.buffer) >= 2:
                size = int.from_bytes(self.buffer[:2], "little")
                if len(self.buffer) >= 2 + size:
                    payload, self.buffer = self.buffer[2 : 2 + size], self.buffer[2 + size :]
                    return payload
            watch_clock = self.fault != "CN-10"
            wait = max(0.0, self.deadline - time.time()) if watch_clock else None
            if not select.select([self.sock], [], [], wait)[0]:
                raise Stop(0 if self.acked else 1)  # the live time has passed
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buffer and self.fault == "FRM-5":
                    time.sleep(max(0.0, min(30.0, self.deadline - time.time())))
                raise Stop(1)
            if self.fault == "FRM-4":
                self.buffer = b""
                return chunk[2:]  # takes each piece as one whole frame
            self.buffer += chunk
            if self.fault == "CN-10" and time.time() >= self.deadline:
                raise Stop(0)

    def decode(self, payload: bytes):
        if self.fault in ("SEC-1", "ENC-5"):
            emulate_unsafe_unpickler(payload, "top" if self.fault == "SEC-1" else "nested")
        command = loads(payload)
        if self.fault == "ENC-8" and dumps(command) != payload:
            raise ProtocolError("ENC-8", "not canonical")
        return command

    def run(self) -> int:
        self.send(b"".join(self.registration()))
        try:
            reply = self.decode(self.next_payload())
        except ProtocolError:
            reply = None
        if not isinstance(reply, ACK) and self.fault != "CN-4":
            return 1
        self.acked = True
        while True:
            payload = self.next_payload()
            try:
                command = self.decode(payload)
            except ProtocolError:
                if self.fault == "CN-9":
                    return 1
                continue
            if isinstance(command, ShutdownCN):
                if self.fault == "CN-7":
                    time.sleep(3)
                self.sock.close()
                return 3 if self.fault == "CN-6" else 0
            if isinstance(command, (ACK, RegisterCN)) and self.fault == "CN-8":
                return 1
            if isinstance(command, MSG) and isinstance(command.msg, dict) and self.fault == "CN-11":
                return 1


if __name__ == "__main__":
    sys.exit(main())
