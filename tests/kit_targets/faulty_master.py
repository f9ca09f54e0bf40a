"""A conformance-scenario master for the kit's self-tests, with one optional fault.

    python tests/kit_targets/faulty_master.py [--fault CLAUSE-ID] [--write-mode MODE]
        [--tls-cert FILE --tls-key FILE [--tls-ca FILE --tls-require-client-cert]]

Prints ``listening on HOST:PORT`` on stderr and serves the scenario until
killed.  One thread per connection (a test target, not the reference).  With
no fault it meets every clause the kit tests; ``--fault`` breaks exactly the
named one (see :data:`FAULTS`).  ``--write-mode`` is ``normal`` (one write per
frame), ``single-write`` (everything in one write) or ``byte-by-byte``.
Payloads are decoded only with :func:`skyllh_cluster.codec.loads`.
With ``--tls-cert`` it speaks the TLS profile (mutual TLS with
``--tls-require-client-cert``); the faults TLS-4 and TLS-6 are those of a
master in TLS mode.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit_targets.faults import bad_ack, bad_msg, emulate_unsafe_unpickler, frame  # noqa: E402

from skyllh_cluster.codec import dumps, loads  # noqa: E402
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN  # noqa: E402
from skyllh_cluster.conformance.payloads import encode  # noqa: E402
from skyllh_cluster.errors import ProtocolError  # noqa: E402
from skyllh_cluster.scenario import SCENARIO_PAYLOADS  # noqa: E402

#: The clauses this master can break, and how.
FAULTS = {
    "FRM-1": "big-endian length prefixes",
    "FRM-3": "an empty frame after the ACK",
    "FRM-4": "a first frame that does not arrive in one piece is refused",
    "FRM-5": "a first frame cut short by end of stream is ACKed",
    "FRM-6": "no time limit once the first frame has started",
    "ENC-1": "a byte after STOP in the first MSG",
    "ENC-2": "a MSG value with EMPTY_SET",
    "ENC-3": "a MSG value naming os.system",
    "ENC-4": "a MSG value with a memo reference never stored",
    "ENC-5": "a call nested in a RegisterCN is run (emulated pickle.loads)",
    "ENC-7": "MSGs encoded at pickle protocol 2",
    "ENC-8": "a non-canonical RegisterCN is refused",
    "CMD-1": "the ACK made with NEWOBJ and (1,)",
    "CMD-2": "an ACK with state",
    "CMD-4": "a MSG with an extra key",
    "VAL-2": "a MSG value {[1]: 2}",
    "VAL-3": "a MSG value that contains itself",
    "VAL-4": "65535 sent as 65535.0",
    "MST-1": "a live time over 100000 s is refused",
    "MST-2": "the ACK is sent as soon as the length prefix arrives",
    "MST-3": "an invalid first frame is ACKed",
    "MST-4": "one connection at a time, no time limits",
    "MST-5": "a MSG after ShutdownCN",
    "MST-6": "the connection stays open after ShutdownCN",
    "MST-7": "no time limit for a connection that sends nothing",
    "MST-9": "expired nodes get the scenario",
    "MST-10": "one connection at a time (with time limits)",
    "ERR-1": "an invalid first frame closes every connection",
    "SCN-1": "the first two payloads swapped",
    "SCN-2": "stops serving after two nodes",
    "SEC-1": "a top-level call in the first frame is run (emulated pickle.loads)",
    "CMD-3": "a RegisterCN with extra keys in its state is ACKed",
    "ENC-6": "a RegisterCN refused under ENC-6 is ACKed",
    "MST-11": "bytes after the RegisterCN are ignored: the node is ACKed and served",
    "TLS-1": "TLS mode: TLS 1.0 and 1.1 are accepted",
    "TLS-2": "TLS mode: run with a certificate that does not name the master's address (the self-test gives it)",
    "TLS-4": "TLS mode: client certificates are not required, even with --tls-require-client-cert",
    "TLS-5": "TLS mode: a connection that does not start a TLS handshake drops every other connection",
    "TLS-6": "TLS mode: a connection whose first byte is not a TLS handshake is served in plain TCP",
    "TLS-7": "TLS mode: each handshake runs in the accept loop, with no time limit",
}

#: Second faults for clauses that already have one: name -> (clause, how).
EXTRA_FAULTS = {
    "ENC-1/acks-trailing": ("ENC-1", "a RegisterCN with bytes after STOP is ACKed"),
    "MST-4/hostile-exit": ("MST-4", "the process exits on a first frame over 2000 bytes that does not decode"),
    "MST-9/late-scenario": ("MST-9", "an expired node is ACKed and gets the scenario 3 s later"),
    "MST-9/kept-open": ("MST-9", "an expired node is ACKed and then kept open, sent nothing and never dropped"),
}


class Master:
    def __init__(
        self, fault: Optional[str], write_mode: str, registration_timeout: float, tls: Optional[ssl.SSLContext] = None
    ) -> None:
        self.fault = fault
        self.tls = tls
        self.write_mode = write_mode
        self.timeout = registration_timeout
        self.lock = threading.Lock()
        self.clients: List[socket.socket] = []
        self.served = 0
        self.drop_until = 0.0

    # -- writing ---------------------------------------------------------------------
    def write(self, sock: socket.socket, frames: List[bytes]) -> None:
        if self.write_mode == "single-write":
            sock.sendall(b"".join(frames))
        elif self.write_mode == "byte-by-byte":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in b"".join(frames):
                sock.sendall(bytes([byte]))
        else:
            for f in frames:
                sock.sendall(f)

    def frames(self) -> List[bytes]:
        fault = self.fault
        values = list(SCENARIO_PAYLOADS)
        if fault == "SCN-1":
            values[0], values[1] = values[1], values[0]
        if fault == "VAL-4":
            values[values.index(65535)] = 65535.0
        ack = bad_ack(fault) if fault in ("CMD-1", "CMD-2") else dumps(ACK())
        if fault == "ENC-7":
            msgs = [encode(MSG(v), 2) for v in values]
        else:
            msgs = [dumps(MSG(v)) for v in values]
        if fault in ("ENC-1", "ENC-2", "ENC-3", "ENC-4", "CMD-4", "VAL-2", "VAL-3"):
            msgs[0] = bad_msg(fault)
        payloads = [ack, *msgs, dumps(ShutdownCN())]
        if fault == "MST-5":
            payloads.append(dumps(MSG("after ShutdownCN")))
        out = [frame(p, big_endian=fault == "FRM-1") for p in payloads]
        if fault == "FRM-3":
            out.insert(1, b"\x00\x00")
        return out

    # -- reading the registration ------------------------------------------------------
    def read_registration(self, sock: socket.socket) -> Optional[bytes]:
        """The first frame's payload; None if the connection is to be dropped."""
        limited = self.fault not in ("MST-4",)
        data = b""
        start = time.monotonic()
        while True:
            if len(data) >= 2:
                size = int.from_bytes(data[:2], "little")
                if self.fault == "MST-2":
                    sock.sendall(frame(dumps(ACK())))
                if len(data) >= 2 + size:
                    if self.fault != "MST-11" and (len(data) > 2 + size or self._more_waiting(sock)):
                        return None  # bytes after the RegisterCN: no ACK, close (MST-11)
                    return data[2 : 2 + size]
            if data and self.fault == "FRM-4":
                return None  # the first piece was not the whole frame
            if not limited or (not data and self.fault == "MST-7") or (data and self.fault == "FRM-6"):
                sock.settimeout(None)
            else:
                left = start + self.timeout - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, OSError):
                return None
            if not chunk:
                if data and self.fault == "FRM-5":
                    sock.sendall(frame(dumps(ACK())))
                return None
            data += chunk

    def decode(self, payload: bytes) -> object:
        if self.fault == "ENC-1/acks-trailing" and payload.find(b"b.") > 0:
            payload = payload[: payload.find(b"b.") + 2]  # reads up to the STOP after BUILD, ignores the rest
        try:
            command = loads(payload)
        except ProtocolError as error:
            if self.fault == "CMD-3" and error.clause == "CMD-3" and b"_cn_live_time" in payload:
                return RegisterCN(int(time.time()), 3600)
            if self.fault == "ENC-6" and error.clause == "ENC-6" and b"RegisterCN" in payload:
                return RegisterCN(int(time.time()), 3600)
            raise
        except ValueError as error:  # the reference codec before its hardening (issue 10, F1)
            raise ProtocolError("ENC-6", f"refused: {type(error).__name__}") from None
        if self.fault == "ENC-8" and dumps(command) != payload:
            raise ProtocolError("ENC-8", "not canonical")
        return command

    @staticmethod
    def _more_waiting(sock: socket.socket) -> bool:
        if isinstance(sock, ssl.SSLSocket):
            return sock.pending() > 0 or bool(select.select([sock], [], [], 0)[0])
        sock.setblocking(False)
        try:
            return bool(sock.recv(1, socket.MSG_PEEK))
        except (BlockingIOError, OSError):
            return False
        finally:
            sock.setblocking(True)

    def drop_everyone(self) -> None:
        """Drop every connection open now, and any accepted in the next moment."""
        self.drop_until = time.monotonic() + 0.5
        with self.lock:
            for other in self.clients:
                try:
                    socket.socket.shutdown(other, socket.SHUT_RDWR)  # wakes the thread blocked on it
                except OSError:
                    pass

    # -- one connection ------------------------------------------------------------------
    def start_tls(self, sock: socket.socket) -> Optional[socket.socket]:
        """The TLS side of an accepted connection; None if its handshake fails (or it is served plain: TLS-6)."""
        assert self.tls is not None
        sock.settimeout(self.timeout)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            first = b""
        if self.fault == "TLS-6" and first and first != b"\x16":
            sock.settimeout(None)
            return sock  # the plain fallback the profile forbids
        if self.fault == "TLS-5" and first and first != b"\x16":
            self.drop_everyone()
            sock.close()
            return None
        try:
            tls = self.tls.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            sock.close()
            return None
        tls.settimeout(None)
        return tls

    def serve(self, sock: socket.socket) -> None:
        if self.tls is not None and not isinstance(sock, ssl.SSLSocket):
            wrapped = self.start_tls(sock)
            if wrapped is None:
                return
            sock = wrapped
        with self.lock:
            self.clients.append(sock)
        try:
            self._serve(sock)
        except OSError:
            pass
        finally:
            with self.lock:
                if sock in self.clients:
                    self.clients.remove(sock)
            sock.close()

    def _serve(self, sock: socket.socket) -> None:
        if time.monotonic() < self.drop_until:
            return
        payload = self.read_registration(sock)
        if payload is None:
            return
        if self.fault in ("SEC-1", "ENC-5"):
            emulate_unsafe_unpickler(payload, "top" if self.fault == "SEC-1" else "nested")
        try:
            command = self.decode(payload)
            valid = isinstance(command, RegisterCN)
        except ProtocolError:
            valid = False
        if not valid and self.fault == "MST-4/hostile-exit" and len(payload) > 2000:
            os._exit(1)
        if not valid:
            if self.fault == "MST-3":
                sock.sendall(frame(dumps(ACK())))
            if self.fault == "ERR-1":
                # Like a master whose registration aborts: every connection
                # open now, and any accepted in the next moment, is dropped.
                self.drop_everyone()
            return
        assert isinstance(command, RegisterCN)
        if self.fault == "MST-1" and command.cn_live_time > 100000:
            return
        if command.cn_start_time + command.cn_live_time <= time.time() and self.fault != "MST-9":
            sock.sendall(frame(dumps(ACK())))
            if self.fault == "MST-9/late-scenario":
                time.sleep(3)  # longer than the kit's default timeout
                self.write(sock, self.frames()[1:])
            if self.fault == "MST-9/kept-open":
                sock.settimeout(60)
                while sock.recv(4096):
                    pass
            return  # expired: nothing more (MST-9)
        if self.fault == "SCN-2" and self.served >= 2:
            return  # stops serving after two nodes
        frames = self.frames()
        if self.fault == "MST-2":
            frames = frames[1:]  # the ACK went out early
        self.write(sock, frames)
        with self.lock:
            self.served += 1
        if self.fault == "MST-6":
            sock.settimeout(30)
            while sock.recv(4096):
                pass


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault", choices=sorted(FAULTS) + sorted(EXTRA_FAULTS), default=None)
    parser.add_argument("--write-mode", choices=["normal", "single-write", "byte-by-byte"], default="normal")
    parser.add_argument("--registration-timeout", type=float, default=1.0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-ca")
    parser.add_argument("--tls-require-client-cert", action="store_true")
    args = parser.parse_args(argv)
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        context.num_tickets = 0
        if args.fault == "TLS-1":
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        if args.tls_ca:
            context.load_verify_locations(args.tls_ca)
            mutual = args.tls_require_client_cert and args.fault != "TLS-4"
            context.verify_mode = ssl.CERT_REQUIRED if mutual else ssl.CERT_NONE
    master = Master(args.fault, args.write_mode, args.registration_timeout, context)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(64)
    host, port = listener.getsockname()[:2]
    print(f"listening on {host}:{port}", file=sys.stderr, flush=True)
    sequential = args.fault in ("MST-4", "MST-10")
    while True:
        sock, _ = listener.accept()
        if args.fault == "TLS-7" and context is not None:
            try:
                sock = context.wrap_socket(sock, server_side=True)  # blocks every other connection meanwhile
            except (ssl.SSLError, OSError):
                sock.close()
                continue
        if sequential:
            master.serve(sock)
        else:
            threading.Thread(target=master.serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
