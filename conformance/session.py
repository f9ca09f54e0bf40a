"""The kit's view of one run: its options, and the peers its tests use.

:class:`KitOptions` is what the command line said.  :class:`Kit` is handed to
every kit test (the ``kit`` fixture); it opens connections to the master
under test (master mode), starts compute nodes under test and accepts their
connections (compute-node mode), plants canaries, and gives Hypothesis its
settings.  Whatever a test opens through it is closed, and every process it
starts is killed by pid, when the test ends.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, Phase, settings

from skyllh_cluster.commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from skyllh_cluster.wire.framing import HEADER_SIZE

from .canary import Canary, Evidence
from .failures import ClauseFailure, Inconclusive, KitError, NeverConnected, NoReply
from .launcher import NodeProcess, command_line
from .peer import Frame, Listener, WireConnection, connect
from .tls import CertificateStore, TLSSettings, client_context, server_context
from .transcript import Transcript

__all__ = ["KitOptions", "Kit", "NodeUnderTest", "LiveTimeWatch", "parse_address", "MAX_STRETCH"]

#: A slow target's waits are stretched to at most this many times the
#: configured ones (see :meth:`Kit.calibrate`).
MAX_STRETCH = 5.0
#: A reply may take this many times the pre-flight's reply latency.
LATENCY_FACTOR = 50.0
#: A compute node's reply may take this many times its measured start-up
#: (from launch to its RegisterCN in the pre-flight): a node that starts
#: slowly runs on a slow or loaded machine, and is slow at everything else.
STARTUP_FACTOR = 10.0
#: The shortest live time given to the nodes of the CN-10 checks (whole
#: seconds); a node that starts slowly gets more (see :class:`LiveTimeWatch`).
SHORT_LIVE_TIME = 3
#: The idle CN-10 node gets its ACK this many seconds before its live time
#: ends (delayed until then), so that a node counting from the ACK is late by
#: nearly its whole live time.
ACK_BEFORE_END = 1.0
#: How late after ``cn_start_time + cn_live_time`` a CN-10 node may close (seconds), before stretching
#: for its measured close latency; under a second, as a node counting from its connect is that late.
LIVE_TIME_SLACK = 0.75

logger = logging.getLogger(__name__)


def parse_address(text: str, option: str) -> Tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) as a tuple; :class:`ValueError` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{option} wants HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class KitOptions:
    """The kit's command-line options, checked."""

    target: Optional[Tuple[str, int]] = None
    cn_command: Optional[str] = None
    listen: Tuple[str, int] = ("127.0.0.1", 0)
    timeout: float = 2.0
    examples: int = 10
    strict: bool = False
    registration_budget: float = 5.0
    cn_startup_timeout: float = 10.0
    cn_live_time: int = 60
    seeded: bool = False
    tls: TLSSettings = TLSSettings()

    @property
    def target_text(self) -> str:
        """The target(s) as the report names them."""
        parts = []
        if self.target is not None:
            parts.append(f"{self.target[0]}:{self.target[1]}")
        if self.cn_command is not None:
            parts.append(self.cn_command)
        return " + ".join(parts)


class Kit:
    """What a kit test uses to talk to the target.  One per run; see the module docstring."""

    def __init__(self, options: KitOptions) -> None:
        self.options = options
        self._listener: Optional[Listener] = None
        self._opened: List[Any] = []
        #: The target's reply latency measured by the pre-flight (seconds).
        self.latency = 0.0
        #: Clauses whose tests run in this session (set by the plugin; empty: all).
        self.selected: "set[str]" = set()
        self._stall_verdicts: "dict[str, Optional[ClauseFailure]]" = {}
        #: Certificates no target trusts, made on first use (the TLS checks).
        self.untrusted = CertificateStore()
        tls = options.tls
        #: The kit's context as a compute node (master mode in TLS), and as a master (compute-node mode in TLS).
        self.client_tls: Optional[ssl.SSLContext] = client_context(tls.ca, tls.cert, tls.key) if tls.master_mode else None
        self.server_tls: Optional[ssl.SSLContext] = (
            server_context(tls.cert, tls.key, tls.ca) if tls.node_mode and tls.cert is not None else None
        )
        #: Seconds from launching a compute node under test to its RegisterCN (pre-flight).
        self.node_startup = 0.0
        #: Seconds from the pre-flight's ShutdownCN to the node's close (its close latency).
        self.node_close = 0.0
        #: How the compute node under test prints MSG values: "json" (SCN-3
        #: lines), "legacy" (the original's lines) or "none"; ``None`` until known.
        self.node_output_form: Optional[str] = None
        #: Closed at the end of the run, not of a test (nodes that outlive one test).
        self._session_opened: List[Any] = []
        self._live_time_watch: Optional["LiveTimeWatch"] = None

    def calibrate(self, latency: float) -> None:
        """Adapt the waits to the target's measured reply latency (from the pre-flight).

        A target whose ACK took ``latency`` seconds gets replies waited for
        ``LATENCY_FACTOR`` times that, never less than ``--conformance-timeout``
        and never more than ``MAX_STRETCH`` times it.
        """
        self.latency = max(self.latency, latency)
        logger.info("target reply latency %.4f s: timeout %.2f s, patience %.2f s", latency, self.timeout, self.patience)

    def calibrate_node(self, startup: float, stdout: bytes, close: Optional[float] = None) -> None:
        """Adapt the waits to the compute node's start-up time, and learn how it prints MSG values.

        ``startup`` is the seconds from launching the pre-flight node to its
        RegisterCN; ``stdout`` is what that node printed for the scenario;
        ``close`` the seconds from its ShutdownCN to its close, if it closed.
        A node that took ``startup`` seconds to start gets replies waited for
        ``STARTUP_FACTOR`` times that, within the same bounds as :meth:`calibrate`.
        """
        from .node_output import output_form

        self.node_startup = max(self.node_startup, startup)
        if close is not None:
            self.node_close = max(self.node_close, close)
        self.node_output_form = output_form(stdout)
        logger.info("compute node start-up %.3f s, output %s: timeout %.2f s", startup, self.node_output_form, self.timeout)

    @property
    def timeout(self) -> float:
        """The longest single wait for a reply: ``--conformance-timeout``, stretched for a slow target."""
        base = self.options.timeout
        slow = max(self.latency * LATENCY_FACTOR, self.node_startup * STARTUP_FACTOR)
        return min(base * MAX_STRETCH, max(base, slow))

    @property
    def patience(self) -> float:
        """How long a check waits for positive evidence (a close, an exit) before it is inconclusive."""
        return self.options.timeout * MAX_STRETCH

    @property
    def grace(self) -> float:
        """How long after positive evidence the kit still watches for a late effect (a canary)."""
        return min(self.timeout, max(0.2, 10 * self.latency))

    def budget_hint(self) -> str:
        """What to change when a registration bound (MST-7, FRM-6) is over the kit's budget."""
        return (
            f"; the kit allows --registration-budget {self.options.registration_budget:g} s: if the master's bound "
            "is longer by design, give the kit a larger --registration-budget, or lower the master's bound "
            "(the reference: skyllh-cluster master --registration-timeout S)"
        )

    def judge_canary(
        self, canary: Canary, handled: Evidence, what: str, transcripts: Any, gone: Optional[Callable[[], bool]] = None
    ) -> str:
        """:meth:`.Canary.judge` with this run's patience and grace; ``transcripts`` is a callable."""
        return canary.judge(
            handled, what=what, patience=self.patience, grace=self.grace, transcripts=transcripts, gone=gone
        )

    def bait_master(self, label: str, bait: Callable[[str, int], bytes], what: str, attempts: int = 3) -> str:
        """Send a canary pickle as a connection's first frame; pass only on evidence (SEC-1, ENC-5).

        ``bait(host, port)`` builds the payload for a canary at ``host:port``.
        A connection the master resets without reading (for example when it
        closes its listening socket with connections still queued) is no
        evidence either way, so the bait is sent again on a new connection,
        up to ``attempts`` times, before the check is inconclusive.

        Raises:
            ClauseFailure: the canary got a connection: the master ran the payload.
            Inconclusive: the master never showed that it read the bait.
        """
        for attempt in range(1, attempts + 1):
            conn = self.connect(label if attempt == 1 else f"{label} (attempt {attempt})")
            canary = self.canary_for(conn)
            try:
                conn.send(_framed(bait(canary.host, canary.port)))
            except ClauseFailure as refused:
                # Reset before the master took the bytes: it never saw the bait.
                if attempt == attempts:
                    raise Inconclusive(
                        f"no evidence that the master handled {what}: {refused.evidence}, {attempts} times",
                        transcripts=[conn.transcript],
                    ) from None
                conn.close()
                continue
            try:
                return self.judge_canary(
                    canary, conn.reaction, what, lambda: [conn.transcript], gone=lambda: conn.was_reset
                )
            except Inconclusive:
                if not conn.was_reset or attempt == attempts:
                    raise
                conn.close()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- Hypothesis --------------------------------------------------------------------
    def settings(self, cost: int = 1) -> settings:
        """Hypothesis settings for a kit test.

        ``cost`` is how expensive one example is, relative to a plain master
        exchange: a test that starts a process per example passes 5 and gets
        a fifth of ``--conformance-examples`` (at least 1).  Runs are
        derandomized (the same inputs every run) unless ``--hypothesis-seed``
        is given, which then picks the inputs.
        """
        return settings(
            max_examples=max(1, self.options.examples // max(1, cost)),
            deadline=None,
            derandomize=not self.options.seeded,
            database=None,
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )

    # -- cleanup -----------------------------------------------------------------------
    def track(self, resource: Any) -> Any:
        """Close ``resource`` (anything with ``close`` or ``stop``) when the test ends."""
        self._opened.append(resource)
        return resource

    def cleanup(self) -> None:
        """Close everything opened since the last cleanup, newest first."""
        while self._opened:
            resource = self._opened.pop()
            (getattr(resource, "stop", None) or resource.close)()

    def close(self) -> None:
        """End of the run: clean up and stop listening."""
        self.cleanup()
        for resource in self._session_opened:
            if isinstance(resource, NodeProcess):
                resource.stop()  # the watch threads then see their nodes gone
        if self._live_time_watch is not None:
            self._live_time_watch.join(2.0)
        while self._session_opened:
            resource = self._session_opened.pop()
            (getattr(resource, "stop", None) or resource.close)()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.untrusted.close()

    # -- master mode: the kit plays compute nodes ---------------------------------------
    @property
    def target(self) -> Tuple[str, int]:
        """The master under test."""
        if self.options.target is None:
            raise KitError("this test needs --target HOST:PORT")
        return self.options.target

    def connect(self, label: str = "node", patience: Optional[float] = None, *, receive_buffer: Optional[int] = None) -> WireConnection:
        """A fresh connection to the master under test, closed when the test ends.

        ``patience`` bounds how long connecting may take (default: the timeout);
        ``receive_buffer`` shrinks the kit's receive window (see :func:`.peer.connect`).
        """
        transcript = Transcript(label)
        return self.track(connect(self.target, transcript, self.timeout, retry_for=patience, tls=self.client_tls,
                                  receive_buffer=receive_buffer))

    def connect_with(self, label: str, context: Optional[ssl.SSLContext]) -> WireConnection:
        """A connection to the master with another TLS context than the run's (``None``: plain TCP)."""
        return self.track(connect(self.target, Transcript(label), self.timeout, tls=context))

    def untrusted_files(self) -> "dict[str, str]":
        """The certificates no target trusts (see :func:`.tls.untrusted_certificates`).

        Raises:
            Inconclusive: the kit cannot make certificates here.
        """
        from .tls import NoCertificateTool

        try:
            return self.untrusted.files()
        except NoCertificateTool as exc:
            raise Inconclusive(str(exc)) from None

    # -- MST-7 and FRM-6: one window for both registration bounds ---------------------
    def judge_stall(self, which: str, half_frame: bytes) -> None:
        """Check that the master ends a stalled connection within ``--registration-budget``.

        ``which`` is ``"silent"`` (MST-7: a connection that sends nothing) or
        ``"half-frame"`` (FRM-6: one that sends ``half_frame`` and stops).
        MST-7 also judges a trickle: ``half_frame`` one byte every eighth of
        the budget, closed within the budget from its connect.
        The first of the checks to run opens every connection, the trickle
        first, judges them in order (so that all bounds run out in one
        window), closes them, and keeps the other's verdict for its own test.
        Each deadline runs from the connection's start -- for a later one,
        the later of its connect and the end of the one before, so
        that a master serving one connection at a time is not blamed for the
        other's wait.

        A master passes only by closing the connection having sent nothing.
        A half-frame connection reset before the master showed it read
        anything (a listener closed with connections queued resets them) is
        no evidence: it is replaced once by a fresh one with a fresh deadline.
        """
        if which not in self._stall_verdicts:
            self._stall_verdicts.update(self._judge_stalls(which, half_frame))
        verdict = self._stall_verdicts[which]
        if which == "silent" and verdict is None:
            verdict = self._stall_verdicts.get("trickle")  # MST-7 names the trickle too
        if verdict is not None:
            raise verdict

    def _judge_stalls(self, which: str, half_frame: bytes) -> "dict[str, Optional[ClauseFailure]]":
        both = not self.selected or {"MST-7", "FRM-6"} <= self.selected
        wanted = ["silent", "half-frame"] if both else [which]
        if "silent" in wanted:
            # First, so that its deadline is the earliest: judging it (while feeding it) ends before the
            # others' deadlines, and a master serving one connection at a time takes it first.
            wanted.insert(0, "trickle")
        labels = {"silent": "silent connection", "half-frame": "half a RegisterCN, then silence",
                  "trickle": "a RegisterCN trickled one byte at a time"}
        opened: "dict[str, Tuple[WireConnection, float]]" = {}
        for kind in wanted:
            opened[kind] = (self._stall_connection(labels[kind], half_frame if kind == "half-frame" else b""), time.monotonic())
        verdicts: "dict[str, Optional[ClauseFailure]]" = {}
        try:
            for i, kind in enumerate(wanted):
                conn, start = opened[kind]
                if i:
                    start = max(start, _ended_at(opened[wanted[i - 1]][0]))
                if kind == "trickle":
                    verdicts[kind] = self._judge_trickle(conn, start, half_frame)
                else:
                    verdicts[kind] = self._judge_one_stall(kind, conn, start, half_frame)
                opened[kind][0].close()
        finally:
            for conn, _ in opened.values():
                conn.close()
        return verdicts

    #: The trickle writes one byte every this fraction of the registration budget, so that the bytes it has
    #: (half a RegisterCN) would take several budgets to complete a frame: only the bound can end it.
    TRICKLE_STEPS = 8

    def _judge_trickle(self, conn: WireConnection, start: float, prefix: bytes) -> Optional[ClauseFailure]:
        """MST-7's trickle: one byte of a RegisterCN every budget/8 s; the close must come within the budget."""
        budget = self.options.registration_budget
        deadline = start + budget
        step = budget / self.TRICKLE_STEPS
        what = f"a RegisterCN trickled one byte every {step:.2g} s"
        sent = 0
        while True:
            left = deadline - time.monotonic()
            try:
                frames = conn.wait_closed(max(0.0, min(step, left)))
            except NoReply:
                if left <= step:
                    return conn.fail(
                        f"expected the master to close the connection within {budget:g} s of its start, got it open "
                        f"after {what} ({sent} bytes so far)" + self.budget_hint(),
                        kind=NoReply,
                    )
                if sent < len(prefix):  # bounded: the prefix is never completed into a frame
                    try:
                        conn.send(prefix[sent : sent + 1])
                    except ClauseFailure:
                        continue  # the master closed as the byte went: the next wait sees the close
                    sent += 1
                continue
            if frames or conn.transcript.bytes_in("<-"):
                got = frames[0].describe() if frames else f"{len(conn.transcript.bytes_in('<-'))} bytes"
                return conn.fail(f"expected no reply to {what}, got {got}")
            return None

    def _judge_one_stall(self, kind: str, conn: WireConnection, start: float, half_frame: bytes) -> Optional[ClauseFailure]:
        what = "no bytes at all" if kind == "silent" else "half a RegisterCN and then silence"
        budget = self.options.registration_budget
        deadline = start + budget
        fresh = False
        while True:
            try:
                frames = conn.wait_closed(max(0.0, deadline - time.monotonic()))
            except NoReply:
                return conn.fail(
                    f"expected the master to close the connection after {what}, got it open after {budget:g} s"
                    + self.budget_hint(),
                    kind=NoReply,
                )
            if frames or conn.transcript.bytes_in("<-"):
                got = frames[0].describe() if frames else f"{len(conn.transcript.bytes_in('<-'))} bytes"
                return conn.fail(f"expected no reply to {what}, got {got}")
            if kind == "half-frame" and conn.was_reset and not fresh:
                conn.close()
                conn = self._stall_connection("half a RegisterCN, then silence (again, after a reset)", half_frame)
                self.track(conn)
                deadline = time.monotonic() + budget
                fresh = True
                continue
            return None

    def _stall_connection(self, label: str, data: bytes) -> WireConnection:
        conn = connect(self.target, Transcript(label), self.timeout, tls=self.client_tls)
        if data:
            conn.send(data)
        return conn

    def canary_for(self, conn: WireConnection) -> Canary:
        """A canary listener on the address from which the target sees ``conn``."""
        host = conn.sock.getsockname()[0]
        return self.track(Canary(host))

    def canary_at_listener(self) -> Canary:
        """A canary listener on the kit's master address (which the node can reach)."""
        return self.track(Canary(self.listener.address[0]))

    # -- compute-node mode: the kit plays the master ---------------------------------------
    @property
    def listener(self) -> Listener:
        """The kit's master socket (opened on first use, for the whole run)."""
        if self._listener is None:
            host, port = self.options.listen
            self._listener = Listener(host, port, self.timeout, tls=self.server_tls)
        return self._listener

    def start_node(self, live_time: Optional[int] = None, label: str = "node", *, for_the_run: bool = False) -> "NodeUnderTest":
        """Start a compute node under test and accept its connection.

        The node is killed (by pid) when the test ends, if it has not exited;
        with ``for_the_run``, when the run ends.
        """
        if self.options.cn_command is None:
            raise KitError("this test needs --cn-command")
        keep = self._session_opened.append if for_the_run else self.track
        listener = self.listener
        dropped = listener.drain()
        transcript = Transcript(label)
        if dropped:
            transcript.note(f"closed {dropped} stray connections left from earlier nodes")
        live = self.options.cn_live_time if live_time is None else live_time
        host, port = listener.address
        process = NodeProcess(command_line(self.options.cn_command, host, port, live), transcript)
        keep(process)
        node = NodeUnderTest(process, live, transcript, self.timeout)
        node.conn = _accept_from(listener, process, transcript, self.options.cn_startup_timeout)
        keep(node.conn)
        return node

    def node_prints_lines(self) -> bool:
        """Whether the compute node under test prints a line per MSG (SCN-3 or the original's form).

        Only then is a missing line evidence that a node did not act on a
        MSG.  Learnt from the pre-flight node; when that is unknown, from one
        node sent ACK, one MSG and ShutdownCN.
        """
        if self.node_output_form is None:
            from .node_output import output_form

            node = self.start_node(label="output probe")
            try:
                node.register()
                node.send(command_frame(ACK()) + command_frame(MSG("kit output probe")) + command_frame(ShutdownCN()))
                try:
                    node.conn.wait_closed(self.patience)
                except NoReply:
                    pass
                node.process.wait_exit(self.timeout)
                self.node_output_form = output_form(node.process.stdout_bytes())
            finally:
                node.process.stop()
                node.conn.close()
        return self.node_output_form != "none"

    def live_time_watch(self) -> "LiveTimeWatch":
        """The CN-10 nodes (started on first use, or by the plugin before the first test)."""
        if self._live_time_watch is None:
            self._live_time_watch = LiveTimeWatch(self)
        return self._live_time_watch

    def start_node_raw(self, listener: Listener, label: str, host: Optional[str] = None) -> "Tuple[NodeProcess, socket.socket, Transcript]":
        """Start a node told to connect to ``listener`` (as ``host``, default its address); accept its TCP connection.

        Nothing is read and no TLS runs: the test plays whatever master it
        checks against.  The node is killed when the test ends.
        """
        if self.options.cn_command is None:
            raise KitError("this test needs --cn-command")
        transcript = Transcript(label)
        address, port = listener.address
        process = self.track(
            NodeProcess(command_line(self.options.cn_command, host or address, port, self.options.cn_live_time), transcript)
        )
        sock = self.track(_accept_raw_from(listener, process, transcript, self.options.cn_startup_timeout))
        return process, sock, transcript


class LiveTimeWatch:
    """Two compute nodes with a short live time, watched side by side in the background (CN-10).

    One is sent its ACK late, :data:`ACK_BEFORE_END` seconds before its live
    time ends, and then nothing; the other is never sent its ACK.  Both must
    close the connection at ``cn_start_time + cn_live_time``, as each node
    reported them in its RegisterCN (the ACKed one exits 0, the other
    non-zero), within a slack well under the ACK's delay: a node that counts
    its live time from the ACK, or from its connect, is late by more.  Each
    node is watched by its own thread, which sends the late ACK and records
    when the node closed and how it exited; a check then only reads the
    record.  So the live time runs out while the kit's other checks run,
    instead of being waited for twice in a row.
    """

    KINDS = ("idle", "unacknowledged")

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        # The late ACK must leave a good part of the live time before it, and reach
        # the idle node well before the end, which a slow node's registration delays.
        self.live_time = max(SHORT_LIVE_TIME, math.ceil(4 * kit.node_startup) + 2)
        #: How late after its end a node may close: small beside the ACK's delay, stretched for a slow close.
        self.slack = round(min(LIVE_TIME_SLACK + 2 * kit.node_close, (self.live_time - ACK_BEFORE_END) / 2), 2)
        self.ack_sent: Optional[float] = None
        self.nodes: "dict[str, NodeUnderTest]" = {}
        self.ends: "dict[str, float]" = {}  # cn_start_time + cn_live_time, as registered (Unix time)
        self.closed: "dict[str, Optional[float]]" = {}  # seconds after the node's end; None: not closed
        self.limit: "dict[str, float]" = {}
        self.frames: "dict[str, List[Frame]]" = {}
        self.status: "dict[str, Optional[int]]" = {}
        self.errors: "dict[str, ClauseFailure]" = {}
        self._threads: "dict[str, threading.Thread]" = {}
        for kind in self.KINDS:
            try:
                node = kit.start_node(self.live_time, label=f"{kind} node, live time {self.live_time} s", for_the_run=True)
                registration = node.register()
            except ClauseFailure as failure:
                self.errors[kind] = failure
                continue
            self.nodes[kind] = node
            # A start time far from the kit's clock breaks CN-2; the waits stay bounded all the same.
            self.ends[kind] = min(registration.cn_start_time + registration.cn_live_time,
                                  node.process.started + self.live_time + 2)
            thread = threading.Thread(target=self._watch, args=(kind, node), name=f"CN-10 {kind} node", daemon=True)
            self._threads[kind] = thread
            thread.start()

    def _watch(self, kind: str, node: "NodeUnderTest") -> None:
        end = self.ends[kind]
        try:
            if kind == "idle":
                time.sleep(max(0.0, end - ACK_BEFORE_END - time.time()))
                node.transcript.note(f"ACK delayed to {ACK_BEFORE_END:g} s before cn_start_time + cn_live_time")
                node.send(command_frame(ACK()))
                self.ack_sent = time.time()
            limit = round(max(end + self.slack - time.time(), 0.0), 2)
            self.limit[kind] = limit
            self.frames[kind] = node.conn.wait_closed(limit)
            self.closed[kind] = time.time() - end
        except NoReply:
            self.closed[kind] = None
            return
        except ClauseFailure as failure:
            self.errors[kind] = failure
            return
        except (OSError, ValueError):  # the run ended and closed the socket under the watch
            return
        self.status[kind] = node.process.wait_exit(self.kit.timeout)

    def join(self, wait: float) -> None:
        """Wait at most ``wait`` seconds for every watch to end."""
        deadline = time.monotonic() + wait
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))

    def judge(self, kind: str) -> None:
        """Raise what the ``kind`` node did at the end of its live time, unless it did it right."""
        if kind in self.errors:
            raise self.errors[kind]
        node = self.nodes[kind]
        thread = self._threads[kind]
        thread.join(self.live_time + 2 * self.kit.timeout + self.kit.patience)
        if thread.is_alive():  # pragma: no cover - the watch's own waits are bounded
            raise Inconclusive(f"the kit's watch of the {kind} node did not end", transcripts=[node.transcript])
        acked = kind == "idle"
        end = self.ends[kind]
        what = (f"at cn_start_time + cn_live_time ({self.live_time} s), as it registered them"
                + (f", its ACK sent {ACK_BEFORE_END:g} s before" if acked else " without an ACK"))
        if acked and (self.ack_sent is None or self.ack_sent > end - ACK_BEFORE_END / 2):
            late = "never" if self.ack_sent is None else f"{end - self.ack_sent:.2f} s before its live time ended"
            raise Inconclusive(
                f"the node registered so late that its ACK left the kit {late}, too close to the end to judge",
                transcripts=[node.transcript],
            )
        if self.closed.get(kind) is None:
            raise node.fail(
                f"expected the node to close the connection {what}, within {self.slack:g} s, got it still open "
                f"{self.slack:g} s after",
                kind=NoReply,
            )
        if self.frames.get(kind):
            raise node.fail(f"expected nothing from the node, got {self.frames[kind][0].describe()}", clause="CN-5")
        status = self.status.get(kind)
        if status is None:
            raise node.fail(f"expected the node to exit {what}, got it still running after {self.kit.timeout:g} s", kind=NoReply)
        if acked and status != 0:
            raise node.fail(f"expected exit status 0 at the end of the live time, got {status}")
        if not acked and status == 0:
            raise node.fail("expected a non-zero exit status when the live time ends before the ACK, got 0")


def _accept_raw_from(listener: Listener, process: NodeProcess, transcript: Transcript, limit: float) -> socket.socket:
    """Like :func:`_accept_from`, without TLS: the accepted socket as it is."""
    return _accept_from(listener, process, transcript, limit, accept=listener.accept_raw)


def _accept_from(
    listener: Listener,
    process: NodeProcess,
    transcript: Transcript,
    limit: float,
    accept: Optional[Callable[[Transcript, float], Any]] = None,
) -> Any:
    """Accept the node's connection, noticing at once if the node exits instead.

    ``accept`` is how (default: the listener's, TLS included when the kit is in TLS mode).
    """
    accept = listener.accept if accept is None else accept
    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        try:
            return accept(transcript, min(0.1, max(left, 0.0)))
        except NoReply:
            status = process.poll()
            if status is not None:
                transcript.note(f"compute node exited with status {status} before connecting")
                tail = process.output_tail()
                raise NeverConnected(
                    f"expected the compute node to connect, got exit status {status} before it connected"
                    + (f"; it said: {tail}" if tail else ""),
                    clause="CN-1",
                    transcripts=[transcript],
                ) from None
            if left <= 0:
                raise NeverConnected(
                    f"expected the compute node to connect, got no connection within {limit:g} s",
                    clause="CN-1",
                    transcripts=[transcript],
                ) from None


def _ended_at(conn: WireConnection) -> float:
    """When a connection ended (the target's close, or the kit's), as a ``time.monotonic()`` value."""
    transcript = conn.transcript
    ends = [e.at for e in transcript.entries if e.direction == "--" and ("closed" in e.text or "reset" in e.text)]
    return transcript.started + (ends[0] if ends else transcript.elapsed())


class NodeUnderTest:
    """One compute node process under test and its connection to the kit."""

    conn: WireConnection

    def __init__(self, process: NodeProcess, live_time: int, transcript: Transcript, timeout: float) -> None:
        self.process = process
        self.live_time = live_time
        self.transcript = transcript
        self.timeout = timeout
        self._registration: Optional[Frame] = None

    def fail(self, evidence: str, *, clause: Optional[str] = None, kind: type = ClauseFailure) -> ClauseFailure:
        """A failure with the transcript and the node's last words attached."""
        tail = self.process.output_tail()
        if tail:
            self.transcript.note(f"node output: {tail}")
        return kind(evidence, clause=clause, transcripts=[self.transcript])

    def registration(self) -> Frame:
        """The node's first frame, which must be a RegisterCN (CN-1); read once."""
        if self._registration is None:
            frame = self.conn.read_frame(waiting_for="a RegisterCN")
            if frame is None:
                raise self.fail("expected a RegisterCN, got the connection closed before any frame", clause="CN-1")
            if frame.error is not None:
                raise self.fail(f"expected a valid RegisterCN, got {frame.describe()}", clause=frame.error.clause)
            if not isinstance(frame.command, RegisterCN):
                raise self.fail(f"expected a RegisterCN first, got {frame.describe()}", clause="CN-1")
            self._registration = frame
        return self._registration

    def send(self, data: bytes, *, cuts: Sequence[int] = (), delays: Sequence[float] = ()) -> None:
        """Send raw bytes to the node (a node that closed early is noted, not an error here)."""
        try:
            self.conn.send(data, cuts=cuts, delays=delays)
        except ClauseFailure as failure:
            # Whether the node was allowed to close is the test's question;
            # the transcript already holds the failed write.
            self.transcript.note(f"send stopped: {failure.evidence}")

    def send_frames(self, payloads: Sequence[bytes]) -> None:
        """Send each payload behind its length prefix, all in one write."""
        self.send(b"".join(len(p).to_bytes(HEADER_SIZE, "little") + p for p in payloads))

    def sends_nothing_for(self, seconds: float, clause: str = "CN-5") -> None:
        """Fail if the node sends any byte within ``seconds`` (it may close)."""
        extra = self.conn.received_within(seconds)
        if extra:
            raise self.fail(f"expected nothing from the node, got {len(extra)} bytes: {extra[:32].hex()}", clause=clause)

    def closes_within(self, seconds: float, what: str, clause: Optional[str] = None) -> None:
        """Fail unless the node closes the connection within ``seconds``, sending nothing."""
        try:
            frames = self.conn.wait_closed(seconds)
        except NoReply:
            raise self.fail(
                f"expected the node to close the connection {what}, got it still open after {seconds:g} s",
                clause=clause,
                kind=NoReply,
            ) from None
        if frames:
            raise self.fail(f"expected nothing from the node, got {frames[0].describe()}", clause="CN-5")

    def exits_within(self, seconds: float, what: str, clause: Optional[str] = None) -> int:
        """The node's exit status; fail if it still runs after ``seconds``."""
        status = self.process.wait_exit(seconds)
        if status is None:
            raise self.fail(
                f"expected the node to exit {what}, got it still running after {seconds:g} s",
                clause=clause,
                kind=NoReply,
            )
        return status

    def register(self) -> RegisterCN:
        """Read the RegisterCN and return it (the ACK is the test's business)."""
        command = self.registration().command
        assert isinstance(command, RegisterCN)
        return command

    def handled(self, wait: float) -> Optional[str]:
        """Positive evidence that the node handled what was sent: it closed the connection or exited.

        Waits at most ``wait`` seconds; ``None`` when neither happened.
        """
        status = self.process.poll()
        if status is not None:
            return f"exited with status {status}"  # it can run nothing any more
        return self.conn.reaction(wait, replies=False)

    def transcripts(self) -> List[Transcript]:
        """The node's transcript, with its last words noted (for evidence)."""
        tail = self.process.output_tail()
        if tail:
            self.transcript.note(f"node output: {tail}")
        return [self.transcript]

    def readable_now(self) -> bool:
        """Whether the node has sent something (or closed) that is not yet read."""
        return self.conn.buffered_in_tls() or bool(select.select([self.conn.sock], [], [], 0)[0])


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER_SIZE, "little") + payload


def command_frame(command: Command) -> bytes:
    """A whole canonical frame for ``command``."""
    from skyllh_cluster.codec import dumps

    payload = dumps(command)
    return len(payload).to_bytes(HEADER_SIZE, "little") + payload
