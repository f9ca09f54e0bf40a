"""Running the conformance scenario against a target, and judging the result.

Master mode: :func:`run_master_scenario` plays one compute node through the
whole scenario (spec section 9) and keeps every frame the master sent in a
:class:`ScenarioRun`.  The clause tests then ask the run their one question
each (:meth:`ScenarioRun.frames_with_error`, :meth:`ScenarioRun.messages`, ...).

Compute-node mode: :func:`feed_scenario` sends the scenario's frames to a
node, the way a conforming master would.

Nothing here decides a clause by itself: functions return what was seen or
raise :class:`~.failures.ClauseFailure` with the clause that the observation
breaks, and the tests decide which of those they are about.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import ACK, MSG, Command, ShutdownCN
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire.framing import encode_frame

from .failures import ClauseFailure, NoReply
from .peer import Frame, WireConnection, describe
from .transcript import Transcript

__all__ = [
    "ScenarioRun",
    "run_master_scenario",
    "read_to_shutdown",
    "order_mismatch",
    "scenario_frames",
    "expected_commands",
    "NodeRun",
    "run_node_scenario",
]

#: A master that keeps sending is cut off after this many frames (the
#: scenario has 22), so that reading is bounded in count as well as time.
MAX_FRAMES = 64


def expected_commands() -> List[Command]:
    """What a scenario master sends to each node, in order."""
    return [ACK(), *(MSG(p) for p in SCENARIO_PAYLOADS), ShutdownCN()]


def scenario_frames() -> List[bytes]:
    """The scenario's frames, canonically encoded, as a master sends them."""
    return [encode_frame(dumps(c)) for c in expected_commands()]


@dataclass
class ScenarioRun:
    """What one fake compute node saw while the master ran the scenario for it."""

    transcript: Transcript
    frames: List[Frame] = field(default_factory=list)
    #: How the run ended: "closed" (the master closed after ShutdownCN or
    #: earlier), "open" (still open after the timeout), or "failed".
    ending: str = "closed"
    #: The failure that cut the run short (a timeout or a framing error).
    failure: Optional[ClauseFailure] = None
    #: Frames that arrived after ShutdownCN.
    after_shutdown: List[Frame] = field(default_factory=list)
    shutdown_seen: bool = False

    def fail(self, evidence: str, clause: Optional[str] = None, kind: type = ClauseFailure) -> ClauseFailure:
        """A failure carrying this run's transcript."""
        return kind(evidence, clause=clause, transcripts=[self.transcript])

    def frames_with_error(self, clause: str) -> List[Frame]:
        """The frames whose payload broke ``clause`` under the grammar."""
        return [f for f in self.frames if f.error is not None and f.error.clause == clause]

    def require_frames(self, what: str) -> None:
        """Raise the failure that ended the run if it ended before any frame."""
        if not self.frames:
            if self.failure is not None:
                raise self.failure
            raise self.fail(f"expected frames to check {what}, got none", clause="MST-2")

    def first_undecodable(self) -> Optional[Frame]:
        """The first frame the grammar refused, if any."""
        return next((f for f in self.frames if f.error is not None), None)

    def require_decodable(self) -> None:
        """Raise (with the frame's clause) if any frame did not decode."""
        bad = self.first_undecodable()
        if bad is not None:
            assert bad.error is not None
            raise self.fail(f"expected a decodable frame, got {bad.describe()}", clause=bad.error.clause)

    def commands(self) -> List[Command]:
        """The decoded commands, in order (undecodable frames left out)."""
        return [f.command for f in self.frames if f.command is not None]

    def require_complete(self) -> None:
        """Raise the failure that cut the run short, if any (a timeout, a framing error)."""
        if self.failure is not None:
            raise self.failure


def run_master_scenario(
    conn: WireConnection,
    registration: bytes,
    *,
    cuts: Sequence[int] = (),
    delays: Sequence[float] = (),
    close_wait: Optional[float] = None,
    stall_clause: Optional[str] = None,
) -> ScenarioRun:
    """Register with ``registration`` (a whole frame) and read the scenario to its end.

    Reading stops when the master closes, when a read times out, after
    :data:`MAX_FRAMES` frames, or ``close_wait`` seconds (default: the
    timeout) after ShutdownCN if the master leaves the connection open.
    Target failures are recorded in the run, not raised; the kit's own
    errors propagate.  A failure that names no clause (a timeout, a reset) is
    blamed on ``stall_clause`` if given, else on MST-1 before the first frame
    (a valid RegisterCN was not answered) and SCN-1 after it.
    """
    run = ScenarioRun(conn.transcript)
    try:
        conn.send(registration, cuts=cuts, delays=delays)
        waiting = "an ACK"
        expected = expected_commands()
        while len(run.frames) + len(run.after_shutdown) < MAX_FRAMES:
            if run.shutdown_seen:
                try:
                    run.after_shutdown.extend(conn.wait_closed(close_wait))
                except NoReply:
                    run.ending = "open"
                return run
            frame = conn.read_frame(waiting_for=waiting)
            if frame is None:
                how = "reset" if conn.was_reset else "closed"
                raise run.fail(f"expected {waiting}, got the connection {how} by the master")
            run.frames.append(frame)
            if isinstance(frame.command, ShutdownCN):
                run.shutdown_seen = True
            waiting = describe(expected[len(run.frames)]) if len(run.frames) < len(expected) else "the close"
        run.failure = run.fail(f"expected the scenario's 22 frames, got more than {MAX_FRAMES}", clause="SCN-1")
        run.ending = "failed"
    except ClauseFailure as failure:
        run.failure = failure.about(stall_clause or ("SCN-1" if run.frames else "MST-1"))
        run.ending = "failed"
    return run


def read_to_shutdown(conn: WireConnection) -> None:
    """Read (and ignore) frames until ShutdownCN, the master's close, or a timeout.

    Tests about registration use it after their ACK: a node that leaves
    before its scenario is done would test the master's handling of dead
    nodes instead, and a master that stops listening while it serves one
    node would meet the next test's connection at a random moment.
    """
    try:
        for frame in conn.frames(waiting_for="the rest of the scenario"):
            if isinstance(frame.command, ShutdownCN):
                return
    except ClauseFailure:
        return  # judged by the scenario's own tests


def order_mismatch(received: List[Command], *, complete: bool = True) -> Optional[str]:
    """Evidence if ``received`` is not the scenario's commands, compared loosely.

    Loose comparison (``==``, so ``1 == 1.0 == True``) finds missing, extra and
    reordered commands; exactness of each value is VAL-4's question.  With
    ``complete=False`` a prefix of the scenario is fine (the rest may still
    be on its way).
    """
    expected = expected_commands()
    for i, (want, got) in enumerate(zip(expected, received)):
        if type(want) is not type(got) or (isinstance(want, MSG) and not _loosely_equal(want.msg, got.msg)):
            return f"expected command {i} to be {describe(want)}, got {describe(got)}"
    if complete and len(received) < len(expected):
        return f"expected {describe(expected[len(received)])} as command {len(received)}, got nothing more"
    if len(received) > len(expected):
        return f"expected nothing after ShutdownCN, got {describe(received[len(expected)])}"
    return None


def _loosely_equal(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - comparing decoded values must never break the kit
        return False


# -- compute-node mode ------------------------------------------------------------------
@dataclass
class NodeRun:
    """What one compute node under test did while the kit played a well-behaved master.

    The kit starts the node, reads its RegisterCN, stays quiet for a moment
    (anything the node sends then breaks CN-5), sends ACK, the scenario's
    MSGs and ShutdownCN in one write, and watches the node close and exit.
    """

    transcript: Transcript
    live_time: int
    launched_at: float = 0.0  # Unix time at which the kit started the node
    registered_at: float = 0.0  # Unix time at which its RegisterCN had arrived
    registration: Optional[Frame] = None
    failure: Optional[ClauseFailure] = None
    early_bytes: bytes = b""  # sent by the node before the kit's ACK
    later_frames: List[Frame] = field(default_factory=list)  # sent by the node after the ACK
    closed_after: Optional[float] = None  # seconds from the ShutdownCN's last byte to the close
    exit_status: Optional[int] = None
    stdout: bytes = b""  # what the node printed (SCN-3 lines among it), read after it exited

    def fail(self, evidence: str, clause: Optional[str] = None, kind: type = ClauseFailure) -> ClauseFailure:
        """A failure carrying this run's transcript."""
        return kind(evidence, clause=clause, transcripts=[self.transcript])

    def require_registration(self) -> Frame:
        """The RegisterCN frame, or the failure that prevented it."""
        if self.registration is None:
            assert self.failure is not None
            raise self.failure
        return self.registration


#: How long the kit watches for bytes a node must not send before its ACK.
QUIET_WINDOW = 0.2
#: How long the kit waits for a node to close after ShutdownCN before
#: giving up (CN-6); CN-7 asks for 2 s of it.
CLOSE_WAIT = 5.0


def run_node_scenario(kit: Any) -> NodeRun:
    """Start a node, play the scenario as its master, and record what it did."""
    live_time = kit.options.cn_live_time
    launched = time.time()
    try:
        node = kit.start_node(live_time, label="scenario node")
    except ClauseFailure as failure:
        return NodeRun(failure.transcripts[0] if failure.transcripts else Transcript(), live_time, launched, failure=failure)
    run = NodeRun(node.transcript, live_time, launched)
    try:
        run.registration = node.registration()
        run.registered_at = time.time()
        run.early_bytes = node.conn.received_within(QUIET_WINDOW)
        node.send(b"".join(scenario_frames()))
        sent = time.monotonic()
        try:
            run.later_frames = node.conn.wait_closed(max(CLOSE_WAIT, kit.timeout))
            run.closed_after = time.monotonic() - sent
        except NoReply:
            run.closed_after = None
        run.exit_status = node.process.wait_exit(kit.timeout)
    except ClauseFailure as failure:
        run.failure = failure
    run.stdout = node.process.stdout_bytes()
    return run
