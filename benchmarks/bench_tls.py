"""TLS benchmark: the reference master's registration and broadcast over mutual TLS, side by side with plain.

Run with ``python -m benchmarks`` (all benchmarks) or
``python benchmarks/bench_tls.py [--nodes N]``.  In one run, for plain mode
and for mutual TLS (spec/tls-profile.md; TLS 1.3, EC P-256 certificates made
for the run with the ``openssl`` command), with the same engine and the same
load generator:

1. registering N (default 5000) compute nodes: from the moment the
   generator starts connecting until ``MasterServer.register`` returns;
2. broadcasting one 100-character MSG to those N nodes: from the call of
   ``broadcast`` until the last node has the whole frame;

with the CPU time of the master (its whole process) and of the generator,
and the ratios TLS / plain (the generator's CPU is counted from its start,
its connects and handshakes included).  Nothing is required of the ratios: a TLS
handshake costs public-key operations on both sides, which plain TCP does
not, and the figures say how much.

The compute nodes are sockets driven by a load generator in a separate
process (this file run with ``--loadgen``; standard library only, one epoll
loop, non-blocking TLS handshakes), with a bounded number of connects and
handshakes in flight.  Both processes read the same system-wide monotonic
clock.  Every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
_PHASE_LIMIT = 300.0  # seconds; every phase of the generator is bounded
_IN_FLIGHT = 512  # connections connecting or handshaking at once
_PAYLOAD = "x" * 100

# --- the load generator (its own process) ------------------------------------------------------

_CONNECTING, _HANDSHAKING, _SENDING, _READING = range(4)


class _Peer:
    __slots__ = ("sock", "fd", "state", "buf", "frames", "out")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: Any = sock
        self.fd = sock.fileno()
        self.state = _CONNECTING
        self.buf = bytearray()
        self.frames = 0
        self.out = b""


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class _Generator:
    def __init__(self, port: int, context: Optional[ssl.SSLContext], register_frame: bytes) -> None:
        self.port = port
        self.context = context
        self.register_frame = register_frame
        self.epoll = select.epoll()
        self.peers: Dict[int, _Peer] = {}

    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((HOST, self.port))
        peer = _Peer(sock)
        self.peers[peer.fd] = peer
        self.epoll.register(peer.fd, select.EPOLLOUT)

    def _advance(self, peer: _Peer) -> int:
        """Move ``peer`` on as far as it goes; return the epoll events it waits for (0: registered)."""
        if peer.state == _CONNECTING:
            error = peer.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
            if self.context is not None:
                peer.sock = self.context.wrap_socket(peer.sock, server_hostname=HOST, do_handshake_on_connect=False)
                peer.state = _HANDSHAKING
            else:
                peer.state = _SENDING
            peer.out = self.register_frame
        if peer.state == _HANDSHAKING:
            try:
                peer.sock.do_handshake()
            except ssl.SSLWantReadError:
                return select.EPOLLIN
            except ssl.SSLWantWriteError:
                return select.EPOLLOUT
            peer.state = _SENDING
        if peer.state == _SENDING:
            try:
                peer.sock.send(peer.out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return select.EPOLLOUT
            peer.state = _READING
        self._read(peer)
        return 0 if peer.frames else select.EPOLLIN

    def _read(self, peer: _Peer) -> None:
        while True:
            try:
                data = peer.sock.recv(16384)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            if not data:
                raise EOFError("the master closed a connection")
            buf = peer.buf
            buf += data
            while len(buf) >= 2:
                size = 2 + int.from_bytes(buf[:2], "little")
                if len(buf) < size:
                    break
                del buf[:size]
                peer.frames += 1

    def register(self, n: int) -> Dict[str, Any]:
        """Connect ``n`` nodes, at most _IN_FLIGHT unregistered at once, until each has its ACK."""
        started = time.monotonic()
        opened = registered = 0
        deadline = started + _PHASE_LIMIT
        while registered < n:
            while opened < n and opened - registered < _IN_FLIGHT:
                self._open()
                opened += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"{registered} of {n} registered within {_PHASE_LIMIT} s")
            for fd, _ in self.epoll.poll(0.1):
                peer = self.peers[fd]
                if peer.frames:
                    continue
                wanted = self._advance(peer)
                if wanted:
                    self.epoll.modify(fd, wanted)
                else:
                    self.epoll.modify(fd, select.EPOLLIN)
                    registered += 1
        return {"registered": registered, "seconds": time.monotonic() - started}

    def await_frames(self, frames: int) -> Dict[str, Any]:
        """Wait until every node has ``frames`` whole frames; report when the last one came."""
        waiting = {fd for fd, peer in self.peers.items() if peer.frames < frames}
        deadline = time.monotonic() + _PHASE_LIMIT
        last = time.monotonic()
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting)} nodes lack frame {frames}")
            for fd, _ in self.epoll.poll(0.1):
                peer = self.peers[fd]
                self._read(peer)
                if peer.frames >= frames and fd in waiting:
                    waiting.discard(fd)
                    last = time.monotonic()
        return {"last_frame_at": last}

    def close(self) -> None:
        for peer in self.peers.values():
            peer.sock.close()
        self.epoll.close()


def _loadgen_main(args: argparse.Namespace) -> int:
    _raise_fd_limit(args.nodes + 256)
    context = None
    if args.ca:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(args.ca)
        context.load_cert_chain(args.cert, args.key)
    frame = bytes.fromhex(args.register_frame)
    generator = _Generator(args.port, context, frame)

    def reply(**fields: Any) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        fields["cpu"] = usage.ru_utime + usage.ru_stime
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    try:
        for line in sys.stdin:
            command = line.split()
            if command[0] == "register":
                reply(**generator.register(args.nodes))
            elif command[0] == "await":
                reply(**generator.await_frames(int(command[1])))
            elif command[0] == "close":
                generator.close()
                reply(closed=True)
                return 0
    except Exception as exc:  # reported to the parent, which fails the run
        reply(error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


# --- the master side -----------------------------------------------------------------------------


class _LoadGen:
    def __init__(self, port: int, nodes: int, register_frame: bytes, tls: Optional[Dict[str, str]]) -> None:
        command = [sys.executable, __file__, "--loadgen", "--nodes", str(nodes), "--port", str(port)]
        command += ["--register-frame", register_frame.hex()]
        if tls is not None:
            command += ["--ca", tls["ca.pem"], "--cert", tls["node.pem"], "--key", tls["node.key"]]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, encoding="utf-8")

    def ask(self, command: str) -> Dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator ended")
        answer: Dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load generator: {answer['error']}")
        return answer

    def close(self) -> None:
        try:
            self.ask("close")
        finally:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _session(nodes: int, tls: Optional[Dict[str, str]]) -> Dict[str, float]:
    from skyllh_cluster.commands import MSG, RegisterCN
    from skyllh_cluster.master.server import MasterServer
    from skyllh_cluster.protocol.connection import encode_command_frame
    from skyllh_cluster.tls import server_context

    context = None
    if tls is not None:
        context = server_context(tls["master.pem"], tls["master.key"], cafile=tls["ca.pem"], require_client_cert=True)
    register_frame = encode_command_frame(RegisterCN(int(time.time()), 7200))
    with MasterServer(ssl_context=context, registration_timeout=60.0) as master:
        port = master.listen(HOST, 0, backlog=max(nodes, 128))[1]
        loadgen = _LoadGen(port, nodes, register_frame, tls)
        try:
            assert loadgen.process.stdin is not None
            cpu0 = _cpu()
            started = time.monotonic()
            loadgen.process.stdin.write("register\n")
            loadgen.process.stdin.flush()
            master.register(nodes, timeout=_PHASE_LIMIT)
            registration = time.monotonic() - started
            master_cpu_registration = _cpu() - cpu0
            generator = json.loads(loadgen.process.stdout.readline())  # type: ignore[union-attr]
            if "error" in generator:
                raise RuntimeError(generator["error"])
            generator_cpu_registration = generator["cpu"]
            assert loadgen.process.stdin is not None
            loadgen.process.stdin.write("await 2\n")
            loadgen.process.stdin.flush()
            time.sleep(0.2)  # the generator is in its loop before the broadcast starts
            cpu0 = _cpu()
            started = time.monotonic()
            result = master.broadcast(MSG(_PAYLOAD), timeout=_PHASE_LIMIT)
            master_cpu_broadcast = _cpu() - cpu0
            arrived = json.loads(loadgen.process.stdout.readline())  # type: ignore[union-attr]
            if "error" in arrived:
                raise RuntimeError(arrived["error"])
            broadcast = arrived["last_frame_at"] - started
            if not result.ok or len(result.delivered) + len(result.queued) != nodes:
                raise RuntimeError(f"the broadcast did not reach every node: {result}")
            master.shutdown(timeout=60.0)
        finally:
            loadgen.close()
    return {
        "registration_s": registration,
        "registration_master_cpu_s": master_cpu_registration,
        "generator_cpu_to_registration_s": generator_cpu_registration,
        "broadcast_ms": broadcast * 1000,
        "broadcast_master_cpu_ms": master_cpu_broadcast * 1000,
    }


def run(nodes: int) -> Dict[str, Any]:
    """Measure plain and mutual TLS side by side; return the figures and the ratios."""
    sys.path.insert(0, str(REPO / "tests"))
    import tls_certs  # the same certificates as the tests: openssl, EC P-256

    _raise_fd_limit(2 * nodes + 256)
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as directory:
        pki = tls_certs.make_pki(Path(directory))
        plain = _session(nodes, None)
        tls = _session(nodes, pki)
    ratios = {key: tls[key] / plain[key] if plain[key] else float("inf") for key in plain}
    return {"nodes": nodes, "plain": plain, "tls": tls, "tls_over_plain": ratios}


def _print_table(figures: Dict[str, Any], out: IO[str]) -> None:
    print(f"TLS benchmark: {figures['nodes']} compute nodes, mutual TLS 1.3 (EC P-256) vs plain", file=out)
    print(f"{'figure':34} {'plain':>10} {'TLS':>10} {'TLS/plain':>10}", file=out)
    for key in figures["plain"]:
        plain, tls, ratio = figures["plain"][key], figures["tls"][key], figures["tls_over_plain"][key]
        print(f"{key:34} {plain:10.3f} {tls:10.3f} {ratio:10.2f}", file=out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--register-frame", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        return _loadgen_main(args)
    figures = run(args.nodes)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        _print_table(figures, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
