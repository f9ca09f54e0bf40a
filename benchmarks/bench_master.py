"""Master benchmark: our MasterNode against the original, with the same raw nodes.

Run with ``python -m benchmarks`` (all benchmarks) or
``python benchmarks/bench_master.py``.  In one run, side by side:

1. registering N (default 5000) compute nodes: the wall time of
   ``register_compute_nodes``; ours must take at most the original's time;
2. broadcasting one 100-character MSG to those N nodes, from the call of
   ``send_request`` until the last node has the whole frame; ours must take
   at most half the original's latency;

the memory each master's Python heap takes per registered node (traced
with tracemalloc in a session of its own, after the timed ones), and, for
ours alone, 10,000 concurrent nodes (registration time, broadcast latency)
and the master process's open file descriptors after shutdown (must be back
to the count before the master was made).

The compute nodes are raw sockets driven by a load generator in a separate
process (this file run with ``--loadgen``; standard library only, one
epoll loop): it opens the connections to 127.0.0.1 with a bounded number
of connects in flight, writes a RegisterCN frame as soon as each connects,
reads the ACK, and notes when each node has received each further whole
frame.  Both processes read the same system-wide monotonic clock.  A
connect refused because the master is not listening yet is made again 2 ms
later, while the other nodes go on.

The generator shares the machine with the master, so the CPU time of
both is reported (the master's whole process, all its threads; medians per
registration and per broadcast).  On loopback a node's receive path runs
partly in the sender's system call, and on a machine with few cores the
master and the generator compete: a registration or a broadcast that keeps
every core busy takes at least (master CPU + generator CPU) / cores.

The RegisterCN frame is the canonical encoding of
``RegisterCN(<now>, 7200)``: the golden frame of the spec carries a start
time in 2024, so its live time has passed, and our master would (rightly,
MST-9) drop such nodes instead of sending to them.

Exits 1 when a required ratio is not met.  Timing lives here, not in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import IO, Any, Dict, List, Optional

# As in benchmarks/__init__.py, for when this file runs on its own: no BLAS
# threads spinning beside the masters (the original's import brings numpy).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

# --- the load generator (runs in its own process; standard library only) ------------

_PHASE_LIMIT = 120.0  # seconds; every phase of the generator is bounded
_CONNECTS_IN_FLIGHT = 1024  # stays below the listen backlog, so no SYN is dropped
_RETRY_DELAY = 0.002
_RECV_SIZE = 16384
# While frames are awaited the generator polls instead of sleeping in
# epoll_wait: woken for each of thousands of sockets, it would make every
# master pay a process wake-up per send.  The cost is a 0.5 ms resolution.
_POLL_INTERVAL = 0.0005


class _RawNode:
    __slots__ = ("sock", "fd", "buf", "frames", "connected", "eof")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.frames = 0  # whole frames received, the ACK included
        self.connected = False
        self.eof = False


def _raise_fd_limit(wanted: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class LoadGenerator:
    """N raw compute nodes on one epoll (the generator process's whole job).

    epoll is called directly, with a dict from descriptor to node, rather
    than through :mod:`selectors`: the generator's CPU is taken from the
    machine the master runs on, so every microsecond it spends per frame is
    charged to a master that uses both cores.
    """

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.by_fd: Dict[int, _RawNode] = {}
        self.nodes: List[_RawNode] = []
        self.done_at: Dict[int, float] = {}  # frames -> when the last node reached that many

    def connect(self, n: int, port: int, register_frame: bytes) -> Dict[str, Any]:
        """Open ``n`` connections, register each and wait for every ACK."""
        _raise_fd_limit(n + 256)
        cpu_started = time.process_time()
        limit = time.monotonic() + _PHASE_LIMIT
        started = 0
        in_flight = 0
        acked = 0
        retries = 0
        # Connects race the master's listen(): refused ones are made again
        # after a pause, during which the nodes already connected go on.
        # (Sleeping here instead would charge every refused connect to the
        # master as a whole pause of the generator.)
        no_connects_until = 0.0
        while acked < n:
            now = time.monotonic()
            if now > limit:
                raise TimeoutError(f"only {acked} of {n} nodes were acknowledged")
            while started < n and in_flight < _CONNECTS_IN_FLIGHT and now >= no_connects_until:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                node = _RawNode(sock)
                self.by_fd[node.fd] = node
                self.epoll.register(node.fd, select.EPOLLOUT)
                started += 1
                in_flight += 1
            wait = 0.05 if now >= no_connects_until else min(0.05, no_connects_until - now)
            for fd, _ in self.epoll.poll(wait, len(self.by_fd) + 1):
                node = self.by_fd[fd]
                if not node.connected:
                    error = node.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:  # refused: the master is not listening yet
                        self.epoll.unregister(fd)
                        del self.by_fd[fd]
                        node.sock.close()
                        started -= 1
                        in_flight -= 1
                        retries += 1
                        no_connects_until = time.monotonic() + _RETRY_DELAY
                        continue
                    node.connected = True
                    node.sock.send(register_frame)  # pipelined: no wait before reading
                    self.epoll.modify(fd, select.EPOLLIN)
                    self.nodes.append(node)
                    continue
                if self._read(node) and node.frames == 1:
                    acked += 1
                    in_flight -= 1
        self.done_at[1] = time.monotonic()
        return {"acked": acked, "retries": retries, "last_ack": self.done_at[1], "cpu": time.process_time() - cpu_started}

    def _read(self, node: _RawNode) -> bool:
        """Read what arrived; return whether a frame completed."""
        try:
            data = node.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return False
        except ConnectionError:
            data = b""
        return self._take(node, data)

    def _take(self, node: _RawNode, data: bytes) -> bool:
        """Count the whole frames ``data`` completes (b"": the master closed); return whether any did."""
        if not data:
            node.eof = True
            self.epoll.unregister(node.fd)
            del self.by_fd[node.fd]
            return False
        buf = node.buf
        if not buf and len(data) == 2 + (data[0] | data[1] << 8):  # exactly one whole frame
            node.frames += 1
            return True
        buf += data
        completed = False
        while len(buf) >= 2:
            size = buf[0] | buf[1] << 8
            if len(buf) < 2 + size:
                break
            del buf[: 2 + size]
            node.frames += 1
            completed = True
        return completed

    def await_frames(self, frames: int) -> Dict[str, Any]:
        """Wait until every node has received ``frames`` whole frames; say when the last did.

        The clock is read once, when the last node completes the frame; a
        node whose read is exactly one whole frame (the case for every
        broadcast here) costs one ``os.read`` and a few operations.
        """
        limit = time.monotonic() + _PHASE_LIMIT
        cpu_started = time.process_time()
        behind = sum(1 for node in self.nodes if node.frames < frames)
        by_fd = self.by_fd
        poll = self.epoll.poll
        read = os.read
        last = 0.0
        while behind:
            if time.monotonic() > limit:
                raise TimeoutError(f"{behind} nodes did not receive frame {frames}")
            events = poll(0, len(by_fd) + 1)
            if not events:
                time.sleep(_POLL_INTERVAL)
            for fd, _ in events:
                node = by_fd[fd]
                before = node.frames
                if node.buf:
                    self._read(node)
                else:
                    try:
                        data = read(fd, _RECV_SIZE)
                    except BlockingIOError:
                        continue
                    except ConnectionError:
                        data = b""
                    if data and len(data) == 2 + (data[0] | data[1] << 8):
                        node.frames = before + 1
                    else:
                        self._take(node, data)
                if before < frames <= node.frames:
                    behind -= 1
                    if not behind:
                        last = time.monotonic()
                elif node.eof and node.frames < frames:
                    raise ConnectionError(f"a node lost its connection after {node.frames} frames")
        return {"last": last, "cpu": time.process_time() - cpu_started}

    def close(self) -> Dict[str, Any]:
        """Wait (bounded) for the master to close each connection, then close ours."""
        limit = time.monotonic() + 10.0
        while any(not node.eof for node in self.nodes) and time.monotonic() < limit:
            for fd, _ in self.epoll.poll(0.2, len(self.by_fd) + 1):
                self._read(self.by_fd[fd])
        closed_by_master = sum(node.eof for node in self.nodes)
        for node in self.nodes:
            if not node.eof:
                self.epoll.unregister(node.fd)
                del self.by_fd[node.fd]
            node.sock.close()
        count = len(self.nodes)
        self.nodes = []
        return {"closed_by_master": closed_by_master, "nodes": count}


def _loadgen_main(commands: IO[str], replies: IO[str]) -> int:
    generator = LoadGenerator()
    for line in commands:
        request = json.loads(line)
        op = request.pop("op")
        try:
            if op == "connect":
                reply = generator.connect(request["n"], request["port"], bytes.fromhex(request["frame"]))
            elif op == "await":
                reply = generator.await_frames(request["frames"])
            elif op == "close":
                reply = generator.close()
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # report to the driver instead of dying silently
            reply = {"error": repr(exc)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


# --- the driver (the master's process) ---------------------------------------------------


class _Generator:
    """The driver's handle on the load generator process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, op: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()

    def reply(self) -> Dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"load generator: {reply['error']}")
        return reply

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class _Masters:
    """Our MasterNode and the original's, behind one interface."""

    def __init__(self) -> None:
        import skyllh.cluster.master_node as original
        from skyllh.cluster import commands  # noqa: F401  (the classes the original unpickles)

        from skyllh_cluster.commands import RegisterCN
        from skyllh_cluster.master_node import MasterNode
        from skyllh_cluster.protocol.connection import encode_command_frame

        self.original = original
        self.ours = MasterNode
        self.register_frame = encode_command_frame(RegisterCN(int(time.time()), 7200))
        self._check_original_binds_loopback()

    @staticmethod
    def _check_original_binds_loopback() -> None:
        # The original binds getfqdn(gethostname()).  Only loopback is allowed
        # here: if that name does not resolve into 127.0.0.0/8, make it.
        name = socket.getfqdn(socket.gethostname())
        if not socket.gethostbyname(name).startswith("127."):
            socket.getfqdn = lambda *args: "127.0.0.1"  # type: ignore[assignment]

    def make(self, which: str) -> Any:
        return self.ours() if which == "ours" else self.original.MasterNode()

    def register(self, which: str, master: Any, n: int, port: int) -> None:
        if which == "ours":
            master.register_compute_nodes(n, port, host="127.0.0.1", timeout=_PHASE_LIMIT)
        else:
            master.register_compute_nodes(n, port)


def _session(
    masters: _Masters, generator: _Generator, which: str, n: int, broadcasts: int, trace_memory: bool = False
) -> Dict[str, Any]:
    """Register n nodes with one master, broadcast, shut down; return the figures.

    With ``trace_memory`` the Python heap is traced (tracemalloc, which
    slows allocation: no timing of that session is used) and the figures
    include what registering took from it per node.
    """
    message = "x" * 100
    fds_before = _open_fds()
    if trace_memory:
        tracemalloc.start()
        heap_before = tracemalloc.get_traced_memory()[0]
    master = masters.make(which)
    port = _free_port()
    generator.send("connect", n=n, port=port, frame=masters.register_frame.hex())
    cpu_started = time.process_time()
    started = time.monotonic()
    masters.register(which, master, n, port)
    registration = time.monotonic() - started
    master_cpu_registration = time.process_time() - cpu_started
    generator_cpu_registration = generator.reply()["cpu"]
    memory_per_node = None
    if trace_memory:
        memory_per_node = (tracemalloc.get_traced_memory()[0] - heap_before) / n
        tracemalloc.stop()
    if len(master.cn_registry) != n:
        raise RuntimeError(f"{which}: {len(master.cn_registry)} of {n} nodes registered")
    latencies: List[float] = []
    generator_cpu_broadcast: List[float] = []
    master_cpu_broadcast: List[float] = []
    for index in range(broadcasts):
        generator.send("await", frames=2 + index)
        cpu_started = time.process_time()
        started = time.monotonic()
        master.send_request(message)
        reply = generator.reply()  # the driver blocks here: no CPU of its own
        master_cpu_broadcast.append(time.process_time() - cpu_started)
        latencies.append(reply["last"] - started)
        generator_cpu_broadcast.append(reply["cpu"])
    generator.send("await", frames=2 + broadcasts)
    master.shutdown_compute_nodes()
    generator.reply()
    if which == "ours":
        master.close()
    else:
        master.clear_cn_registry()
    del master
    generator.send("close")
    generator.reply()
    return {
        "registration": registration,
        "latency": statistics.median(latencies) if latencies else None,
        "generator_cpu_registration": generator_cpu_registration,
        "generator_cpu_broadcast": statistics.median(generator_cpu_broadcast) if latencies else None,
        "master_cpu_registration": master_cpu_registration,
        "master_cpu_broadcast": statistics.median(master_cpu_broadcast) if latencies else None,
        "memory_per_node": memory_per_node,
        "fds_before": fds_before,
        "fds_after": _open_fds(),
    }


def run(
    nodes: int = 5000, big: int = 10000, rounds: int = 5, broadcasts: int = 5, out: IO[str] = sys.stdout
) -> Dict[str, Any]:
    """Run the benchmark; print the table to ``out`` and return the figures."""
    from skyllh_cluster.master.fdlimit import ensure_fd_limit

    ensure_fd_limit(max(nodes, big) + 1024)
    masters = _Masters()
    generator = _Generator()
    results: Dict[str, List[Dict[str, Any]]] = {"ours": [], "original": []}
    try:
        for _ in range(rounds):  # interleaved, so that drift hits both alike
            for which in ("original", "ours"):
                results[which].append(_session(masters, generator, which, nodes, broadcasts))
        big_run = _session(masters, generator, "ours", big, broadcasts) if big else None
        memory = {
            which: _session(masters, generator, which, nodes, 0, trace_memory=True)["memory_per_node"]
            for which in ("original", "ours")
        }
    finally:
        generator.stop()

    def median(which: str, field: str) -> float:
        return statistics.median(r[field] for r in results[which])

    figures = {
        "nodes": nodes,
        "registration_ours": median("ours", "registration"),
        "registration_original": median("original", "registration"),
        "latency_ours": median("ours", "latency"),
        "latency_original": median("original", "latency"),
        "generator_cpu": {
            which: (median(which, "generator_cpu_registration"), median(which, "generator_cpu_broadcast"))
            for which in ("ours", "original")
        },
        "master_cpu": {
            which: (median(which, "master_cpu_registration"), median(which, "master_cpu_broadcast"))
            for which in ("ours", "original")
        },
        "big": big_run,
        "big_nodes": big,
        "memory_per_node": memory,
    }
    figures["registration_ratio"] = figures["registration_ours"] / figures["registration_original"]
    figures["latency_ratio"] = figures["latency_ours"] / figures["latency_original"]
    _print_table(figures, rounds, broadcasts, out)
    return figures


def _print_table(f: Dict[str, Any], rounds: int, broadcasts: int, out: IO[str]) -> None:
    ms = 1e3
    n = f["nodes"]
    print(f"master benchmark: raw nodes on 127.0.0.1, median of {rounds} rounds x {broadcasts} broadcasts", file=out)
    print(f"{'figure':<44} {'ours':>10} {'original':>10} {'ratio':>7} {'required':>9}", file=out)
    print(
        f"{f'register {n} nodes (ms)':<44} {f['registration_ours'] * ms:>10.1f} "
        f"{f['registration_original'] * ms:>10.1f} {f['registration_ratio']:>7.2f} {'<= 1.00':>9}",
        file=out,
    )
    print(
        f"{f'MSG of 100 chars to {n} nodes, latency (ms)':<44} {f['latency_ours'] * ms:>10.1f} "
        f"{f['latency_original'] * ms:>10.1f} {f['latency_ratio']:>7.2f} {'<= 0.50':>9}",
        file=out,
    )
    for label, cpu in (("master", f["master_cpu"]), ("load generator", f["generator_cpu"])):
        print(
            f"{f'{label} CPU: registration / MSG (ms)':<44} "
            f"{cpu['ours'][0] * ms:>5.0f} /{cpu['ours'][1] * ms:>4.0f} "
            f"{cpu['original'][0] * ms:>5.0f} /{cpu['original'][1] * ms:>4.0f}",
            file=out,
        )
    memory = f["memory_per_node"]
    print(
        f"{f'memory per node, registered (bytes, tracemalloc)':<44} {memory['ours']:>10.0f} {memory['original']:>10.0f}",
        file=out,
    )
    big = f["big"]
    if big is not None:
        b = f["big_nodes"]
        print(f"{f'ours, register {b} nodes (ms)':<44} {big['registration'] * ms:>10.1f}", file=out)
        print(f"{f'ours, MSG to {b} nodes, latency (ms)':<44} {big['latency'] * ms:>10.1f}", file=out)
        print(
            f"{'ours, open fds before / after shutdown':<44} {big['fds_before']:>5} / {big['fds_after']:<4}",
            file=out,
        )


def failures(figures: Dict[str, Any]) -> List[str]:
    """The required ratios that were not met, in words."""
    missed = []
    if figures["registration_ratio"] > 1.0:
        missed.append(f"registration ratio {figures['registration_ratio']:.2f} > 1.00")
    if figures["latency_ratio"] > 0.5:
        missed.append(f"broadcast latency ratio {figures['latency_ratio']:.2f} > 0.50")
    big = figures["big"]
    if big is not None and big["fds_after"] != big["fds_before"]:
        missed.append(f"open fds {big['fds_after']} after shutdown, {big['fds_before']} before")
    return missed


def main(argv: Optional[List[str]] = None) -> int:
    """Run the master benchmark; exit status 1 if a required ratio is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5000, help="nodes for the side-by-side figures")
    parser.add_argument("--big", type=int, default=10000, help="nodes for ours alone (0: skip)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per master; the figures are their medians")
    parser.add_argument("--broadcasts", type=int, default=5, help="broadcasts per round")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        return _loadgen_main(sys.stdin, sys.stdout)
    figures = run(args.nodes, args.big, args.rounds, args.broadcasts)
    missed = failures(figures)
    for line in missed:
        print(f"REQUIREMENT NOT MET: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
