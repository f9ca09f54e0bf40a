"""A compute node for the kit's self-tests, with one optional fault.

    python tests/kit_targets/faulty_cn.py HOST PORT --live-time S [--fault CLAUSE-ID] [--write-mode MODE]
        [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]

With no fault it meets every clause the kit tests in compute-node mode and
prints one SCN-3 line (``MSG <json>``) per MSG; ``--fault`` breaks exactly
the named clause (see :data:`FAULTS`), or, for a name in
:data:`EXTRA_FAULTS`, breaks that clause in a second way.
``--write-mode byte-by-byte`` writes the RegisterCN one byte per write.
Payloads are decoded only with :func:`skyllh_cluster.codec.loads`.  Exit
status: 0 after ShutdownCN or at the end of the live time, 1 otherwise.
With ``--tls-ca`` it speaks the TLS profile (with a client certificate if
given); the faults TLS-3 and TLS-6 are those of a node in TLS mode.
"""

from __future__ import annotations

import argparse
import select
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit_targets.faults import bad_registration, emulate_unsafe_unpickler, frame  # noqa: E402

import json  # noqa: E402

from skyllh_cluster.codec import dumps, loads  # noqa: E402
from skyllh_cluster.wire.vector_json import value_to_json  # noqa: E402
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
    "SCN-3": "the original's legacy line `Received general message: ...` instead of `MSG <json>`",
    "ERR-1": "a long frame that does not decode ends the node",
    "CMD-2": "a ShutdownCN with a state is obeyed",
    "CMD-4": "a MSG refused under CMD-4 is printed as a value",
    "ENC-6": "a MSG refused under ENC-6 is printed as a value",
    "VAL-2": "a MSG refused under VAL-2 is printed as a value",
    "VAL-3": "a MSG refused under VAL-3 is printed as a value",
    "TLS-1": "TLS mode: a master that offers only TLS 1.0 or 1.1 is accepted",
    "TLS-3": "TLS mode: any master certificate is accepted (no verification, no host name check)",
    "TLS-6": "TLS mode: when the handshake fails, it connects again in plain TCP and registers",
}

#: Second faults for clauses that already have one: name -> (clause, how).
EXTRA_FAULTS = {
    "SCN-3/no-decode": ("SCN-3", "MSG is never decoded: the node only watches for the ShutdownCN bytes"),
    "ENC-1/obeys-bad-shutdown": ("ENC-1", "a ShutdownCN with bytes after STOP is obeyed"),
    "CN-4/ack-prefix": ("CN-4", "any reply that starts with the ACK's bytes counts as the ACK"),
    "CN-11/bool-as-int": ("CN-11", "True and False are printed as the ints 1 and 0"),
    "SCN-3/cut-always": ("SCN-3", "values of more than 3 nodes are printed cut, even when the line fits"),
    "ENC-3/prints-invalid": ("ENC-3", "a MSG refused under ENC-3 is printed as a value"),
    "CN-4/acts-then-stops": ("CN-4", "after a first reply that is a valid command but not an ACK, the MSGs that came with it are printed, then it exits 1"),
    "CN-8/stops-printing": ("CN-8", "after an unexpected ACK or RegisterCN, MSGs are dropped unprinted (ShutdownCN still obeyed)"),
    "CN-9/drops-after-skip": ("CN-9", "the frame after a skipped one is dropped unread"),
    "CN-9/obeys-bad-shutdown": ("CN-9", "a ShutdownCN with bytes after STOP is obeyed"),
}


class Stop(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--live-time", type=int, default=7200)
    parser.add_argument("--fault", choices=sorted(FAULTS) + sorted(EXTRA_FAULTS), default=None)
    parser.add_argument("--write-mode", choices=["normal", "single-write", "byte-by-byte"], default="normal")
    parser.add_argument("--tls-ca")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    started = time.time()
    sock = socket.create_connection((args.host, args.port), timeout=10)
    if args.tls_ca is not None:
        try:
            sock = _start_tls(sock, args)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            if args.fault != "TLS-6":
                print(f"TLS with the master failed: {exc}", file=sys.stderr)
                return 1
            sock = socket.create_connection((args.host, args.port), timeout=10)  # the fallback TLS-6 forbids
    try:
        return Node(sock, args, started).run()
    except Stop as stop:
        return stop.status
    finally:
        sock.close()


def _start_tls(sock: socket.socket, args: argparse.Namespace) -> socket.socket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(args.tls_ca)
    if args.fault == "TLS-1":
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if args.fault == "TLS-3":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.tls_cert:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return context.wrap_socket(sock, server_hostname=args.host)


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
            buffered = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
            if not buffered and not select.select([self.sock], [], [], wait)[0]:
                raise Stop(0 if self.acked else 1)  # the live time has passed
            try:
                chunk = self.sock.recv(65536)
            except ssl.SSLWantReadError:
                continue  # part of a TLS record
            except ssl.SSLError:
                raise Stop(1) from None
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
        obeys_bad_shutdown = self.fault in ("ENC-1/obeys-bad-shutdown", "CN-9/obeys-bad-shutdown")
        if obeys_bad_shutdown and payload.startswith(SHUTDOWN) and payload != SHUTDOWN:
            return ShutdownCN()
        if self.fault == "CN-4/ack-prefix" and not self.acked and payload.startswith(ACK_PAYLOAD):
            return ACK()
        try:
            command = loads(payload)
        except ProtocolError as error:
            if self.fault == "CMD-2" and error.clause == "CMD-2" and b"ShutdownCN" in payload:
                return ShutdownCN()
            printed = self.fault in ("CMD-4", "ENC-6", "VAL-2", "VAL-3", "ENC-3/prints-invalid")
            if printed and error.clause == self.fault.split("/")[0] and b"\x8c\x03MSG" in payload:
                self.print_value(f"a value refused under {error.clause}")
            raise
        except ValueError as error:  # the reference codec before its hardening (issue 10, F1)
            raise ProtocolError("ENC-6", f"refused: {type(error).__name__}") from None
        if self.fault == "ENC-8" and dumps(command) != payload:
            raise ProtocolError("ENC-8", "not canonical")
        return command

    def act_on_what_came_with_it(self) -> None:
        """Print the MSGs that arrive within half a second (the CN-4/acts-then-stops fault)."""
        deadline = time.time() + 0.5
        while True:
            if len(self.buffer) >= 2 and len(self.buffer) >= 2 + int.from_bytes(self.buffer[:2], "little"):
                size = int.from_bytes(self.buffer[:2], "little")
                payload, self.buffer = self.buffer[2 : 2 + size], self.buffer[2 + size :]
                try:
                    command = loads(payload)
                except ProtocolError:
                    continue
                if isinstance(command, MSG):
                    self.print_value(command.msg)
                continue
            left = deadline - time.time()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.buffer += chunk

    def print_value(self, value) -> None:
        """The SCN-3 line for ``value`` (or what the fault makes of it)."""
        if self.fault == "SCN-3":
            line = f"Received general message: {value}"
        else:
            node = render(value)
            if self.fault == "CN-11/bool-as-int":
                node = _bools_as_ints(node)
            if self.fault == "SCN-3/cut-always" and _nodes(node) > 3:
                node = {"type": "cut", "omitted": _nodes(node)}
            line = "MSG " + json.dumps(node, separators=(",", ":"))
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def run(self) -> int:
        self.send(b"".join(self.registration()))
        try:
            reply = self.decode(self.next_payload())
        except ProtocolError:
            reply = None
        if not isinstance(reply, ACK) and self.fault != "CN-4":
            if self.fault == "CN-4/acts-then-stops" and reply is not None:
                self.act_on_what_came_with_it()
            return 1
        self.acked = True
        ignoring = False  # CN-8/stops-printing: set by an unexpected ACK or RegisterCN
        while True:
            payload = self.next_payload()
            if self.fault == "SCN-3/no-decode":
                if payload == SHUTDOWN:
                    self.sock.close()
                    return 0
                continue
            try:
                command = self.decode(payload)
            except ProtocolError:
                if self.fault == "CN-9" or (self.fault == "ERR-1" and len(payload) > 2000):
                    return 1
                if self.fault == "CN-9/drops-after-skip":
                    self.next_payload()
                continue
            if isinstance(command, (ACK, RegisterCN)) and self.fault == "CN-8/stops-printing":
                ignoring = True
            if isinstance(command, MSG) and ignoring:
                continue
            if isinstance(command, ShutdownCN):
                if self.fault == "CN-7":
                    time.sleep(3)
                self.sock.close()
                return 3 if self.fault == "CN-6" else 0
            if isinstance(command, (ACK, RegisterCN)) and self.fault == "CN-8":
                return 1
            if isinstance(command, MSG):
                if isinstance(command.msg, dict) and self.fault == "CN-11":
                    return 1
                self.print_value(command.msg)


SHUTDOWN = dumps(ShutdownCN())
ACK_PAYLOAD = dumps(ACK())

#: SCN-3: a line longer than this may be cut, and a cut line is at most this long.
LINE_LIMIT = 1 << 20
#: Rendering stops adding items once this much is written (the last scalar may add up to 130 KB).
CUT_BUDGET = LINE_LIMIT - 200_000


def render(value):
    """The SCN-3 JSON of ``value``; cut (with the count of nodes left out) only when the whole line would not fit."""
    sizes = {}
    if 5 + _size(value, sizes) <= LINE_LIMIT:
        return value_to_json(value)
    return _render_cut(value, [0], {})


def _size(value, memo) -> int:
    if type(value) in (list, tuple, dict) and id(value) in memo:
        return memo[id(value)]
    if type(value) in (list, tuple):
        total = 27 + sum(_size(v, memo) + 1 for v in value)
    elif type(value) is dict:
        total = 27 + sum(_size(k, memo) + _size(v, memo) + 4 for k, v in value.items())
    else:
        total = len(json.dumps(value_to_json(value), separators=(",", ":")))
    if type(value) in (list, tuple, dict):
        memo[id(value)] = total
    return total


def _count(value, memo) -> int:
    if type(value) not in (list, tuple, dict):
        return 1
    if id(value) not in memo:
        items = [x for kv in value.items() for x in kv] if type(value) is dict else value
        memo[id(value)] = 1 + sum(_count(x, memo) for x in items)
    return memo[id(value)]


def _render_cut(value, used, counts):
    kind = type(value)
    if kind not in (list, tuple, dict):
        node = value_to_json(value)
        used[0] += len(json.dumps(node))
        return node
    entries = list(value.items()) if kind is dict else list(value)
    items = []
    for i, entry in enumerate(entries):
        if used[0] > CUT_BUDGET:
            rest = entries[i:]
            if kind is dict:
                omitted = sum(_count(k, counts) + _count(v, counts) for k, v in rest)
            else:
                omitted = sum(_count(x, counts) for x in rest)
            items.append({"type": "cut", "omitted": omitted})
            break
        if kind is dict:
            items.append([_render_cut(entry[0], used, counts), _render_cut(entry[1], used, counts)])
        else:
            items.append(_render_cut(entry, used, counts))
    used[0] += 30
    return {"type": kind.__name__, "items": items}


def _bools_as_ints(node):
    if node.get("type") == "bool":
        return {"type": "int", "value": str(int(node["value"]))}
    if node.get("type") in ("list", "tuple"):
        return {**node, "items": [_bools_as_ints(i) for i in node["items"]]}
    if node.get("type") == "dict":
        return {**node, "items": [[_bools_as_ints(k), _bools_as_ints(v)] for k, v in node["items"]]}
    return node


def _nodes(node) -> int:
    if node.get("type") in ("list", "tuple"):
        return 1 + sum(_nodes(i) for i in node["items"])
    if node.get("type") == "dict":
        return 1 + sum(_nodes(k) + _nodes(v) for k, v in node["items"])
    return 1

if __name__ == "__main__":
    sys.exit(main())
