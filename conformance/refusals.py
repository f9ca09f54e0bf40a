"""Receivers tested as hard as senders: invalid and hostile frames sent to each role.

Every invalid frame of ``spec/vectors/invalid.json`` (the kit carries a copy,
``invalid_vectors.json``, kept identical by ``scripts/regenerate_vectors.py``),
the kit's own role-specific cases and hostile-but-small frames are sent to the
target, and the reaction the spec requires is checked with positive evidence:

* **master, first frame** (:func:`sweep_master`): no ACK and nothing else, and
  the connection closed.  Many frames go out at once, each on its own
  connection, in bounded batches; an honest node must still be served after
  them (MST-4).
* **compute node, after its ACK** (:func:`run_gauntlet`): each bad frame is
  followed by a valid marker MSG.  The node skipped the bad frame and carried
  on when it prints the marker's SCN-3 line (and no line for the bad frame),
  and it then shuts down on the final valid ShutdownCN.  One node process
  serves many frames; a node that stops is restarted, a bounded number of
  times, for the frames after the one that stopped it.
* **compute node, registration reply** (:func:`run_first_replies`): the node
  does not carry on (CN-4): it closes, exits non-zero and prints no MSG line.
  The nodes run side by side; each is told apart by the live time it was
  started with (CN-3).

Each case carries the clause the normative grammar reports for it
(:func:`skyllh_cluster.codec.loads_checked`), so that the kit's rows say which
clause a target failed to enforce.
"""

from __future__ import annotations

import itertools
import json
import select
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence, Tuple

from skyllh_cluster.codec import dumps, loads_checked
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.wire import opcodes as op
from skyllh_cluster.wire.framing import encode_frame

from .failures import ClauseFailure, Inconclusive, KitError, NoReply
from .launcher import NodeProcess, command_line
from .node_output import LEGACY_PREFIX, printed_lines
from .payloads import COMMANDS_MODULE, Assembler, foreign_value_ops, frame
from .peer import WireConnection, describe
from .transcript import Transcript

__all__ = [
    "RECEIVER_CLAUSES",
    "BadFrame",
    "invalid_vectors",
    "role_cases",
    "ack_cases",
    "hostile_cases",
    "extreme_values",
    "grammar_clause",
    "sweep_master",
    "MasterSweep",
    "run_gauntlet",
    "Gauntlet",
    "run_first_replies",
    "FirstReply",
    "judge_gauntlet",
    "first_frame_text",
]

#: The clauses a receiver must enforce (issue: receivers tested as hard as senders).
RECEIVER_CLAUSES = ("ENC-1", "ENC-2", "ENC-3", "ENC-4", "ENC-6", "CMD-1", "CMD-2", "CMD-3", "CMD-4", "VAL-2", "VAL-3")
#: Connections the master sweep keeps open at once.
BATCH = 24
#: Frames whose connection was reset are sent again one at a time, at most this many.
MAX_RESENT = 64
#: How often a frame whose connection was reset is sent again on its own.
RESEND_ATTEMPTS = 3
#: Nodes a gauntlet may start for one list of frames (the first and restarts).
MAX_NODES = 12
#: Marker MSGs carry this text and their index.
MARKER = "kit marker"


@dataclass(frozen=True)
class BadFrame:
    """One frame a receiver must refuse, and where it came from."""

    label: str
    clause: str  # the clause the normative grammar reports
    data: bytes  # the whole frame, prefix included
    #: Obeying it would end a node (its class is ShutdownCN): a node that
    #: closes with status 0 right after it acted on it.
    shutdown_like: bool = False


def grammar_clause(payload: bytes) -> str:
    """The clause the normative grammar refuses ``payload`` under; KitError if it is valid."""
    try:
        loads_checked(payload)
    except ProtocolError as error:
        return error.clause
    raise KitError(f"the kit meant {payload[:40].hex()} to be invalid, but it decodes")


def _case(label: str, payload: bytes) -> BadFrame:
    shutdown_like = b"ShutdownCN" in payload
    return BadFrame(label, grammar_clause(payload), frame(payload), shutdown_like)


def invalid_vectors() -> List[BadFrame]:
    """Every invalid vector with a whole frame (truncated frames are FRM-5's business)."""
    text = resources.files("skyllh_cluster.conformance").joinpath("invalid_vectors.json").read_text("ascii")
    cases: List[BadFrame] = []
    for group in json.loads(text)["testGroups"]:
        for test in group["tests"]:
            if "frame" not in test or "TruncatedFrame" in test["flags"]:
                continue
            data = bytes.fromhex(test["frame"])
            payload = data[2:]
            label = f"invalid.json #{test['tcId']}: {test['comment']}"
            cases.append(BadFrame(label, test["clause"], data, b"ShutdownCN" in payload))
    return cases


# -- the kit's own cases, role by role ---------------------------------------------------
def _command(name: str, state: Optional[bytes] = None, *, args: bytes = b")", protocol: int = 4) -> Assembler:
    asm = Assembler(protocol)
    asm.global_(COMMANDS_MODULE, name).op(args).op(bytes([op.NEWOBJ])).memoize()
    if state is not None:
        asm.op(state).op(bytes([op.BUILD]))
    return asm


def _registration_state(start: bytes = b"J\x80\xc4Dg", live: bytes = b"M\x20\x1c", extra: bytes = b"") -> bytes:
    return b"}(\x8c\x0e_cn_start_time" + start + b"\x8c\r_cn_live_time" + live + extra + b"u"


def role_cases(role: str) -> List[BadFrame]:
    """Invalid frames built for ``role`` ("master": RegisterCN-like; "cn": ShutdownCN-, ACK- and MSG-like).

    They add, for each receiver clause, violations in the command the role
    actually receives, so that a receiver that checks only some commands is
    caught.
    """
    if role == "master":
        good = dumps(RegisterCN(1732560000, 7200))
        built = [
            ("RegisterCN with a byte after STOP", good + b"\x00"),
            ("RegisterCN followed by a second RegisterCN in one payload", good + good),
            ("RegisterCN at protocol 1", b"\x80\x01" + good[2:]),
            ("RegisterCN with its STOP cut off", good[:-1]),
            ("RegisterCN with times written with INT", _command("RegisterCN", _registration_state(b"I1732560000\n", b"I7200\n")).finish(frame=True)),
            ("RegisterCN with an EMPTY_SET as live time", _command("RegisterCN", _registration_state(live=b"\x8f")).finish(frame=True)),
            ("RegisterCN of skyllh.cluster.evil", _command_of("skyllh.cluster.evil", "RegisterCN", _registration_state())),
            ("RegisterCN whose start time is os.getpid()", _command("RegisterCN", _registration_state(start=_stack_global("os", "getpid") + b")R")).finish(frame=True)),
            ("RegisterCN whose start time is BINGET of an index never stored", _command("RegisterCN", _registration_state(start=b"h\x63")).finish(frame=True)),
            ("RegisterCN storing BINPUT over an index in use", _command("RegisterCN", _registration_state(start=b"J\x80\xc4Dgq\x01")).finish(frame=True)),
            ("RegisterCN whose start time is nested 300 lists deep", _command("RegisterCN", _registration_state(start=b"]" * 300 + b"J\x80\xc4Dg" + b"a" * 300)).finish(frame=True)),
            ("RegisterCN made with NEWOBJ and (1,)", _command("RegisterCN", _registration_state(), args=b"K\x01\x85").finish(frame=True)),
            ("RegisterCN inside a list", _registration_in_list()),
            ("RegisterCN with a negative-length LONG4 time", _command("RegisterCN", _registration_state(start=b"\x8b\xff\xff\xff\xff")).finish(frame=True)),
            ("RegisterCN with a float start time", _command("RegisterCN", _registration_state(start=b"G" + b"\x41\xd9\xd1\x31\x20\x00\x00\x00")).finish(frame=True)),
            ("RegisterCN with the keys swapped for bytes", _command("RegisterCN", b"}(C\x0e_cn_start_timeJ\x80\xc4DgC\r_cn_live_timeM\x20\x1cu").finish(frame=True)),
            ("RegisterCN with a list key in its state", _command("RegisterCN", _registration_state(extra=b"]K\x01")).finish(frame=True)),
            ("RegisterCN whose start time is a list changed after a reference to it", _command("RegisterCN", _registration_state(start=b"]\x94h\x04K\x01a")).finish(frame=True)),
        ]
    elif role == "cn":
        shutdown = dumps(ShutdownCN())
        hello = dumps(MSG("hello"))
        built = [
            ("ShutdownCN with a byte after STOP", shutdown + b"\x00"),
            ("ShutdownCN followed by a second ShutdownCN in one payload", shutdown + shutdown),
            ("ShutdownCN at protocol 1", b"\x80\x01" + shutdown[2:]),
            ("ShutdownCN with an open MARK", shutdown[:-1] + b"(."),
            ("ShutdownCN made with the INST opcode", b"\x80\x02(iskyllh.cluster.commands\nShutdownCN\n."),
            ("ShutdownCN with a DUP", shutdown[:-1] + b"2" + b"0."),
            ("ShutdownCN of skyllh.cluster.evil", _command_of("skyllh.cluster.evil", "ShutdownCN", None)),
            ("ShutdownCN made by REDUCE", _stack_global(COMMANDS_MODULE, "ShutdownCN", wrap=True) ),
            ("ShutdownCN whose class is BINGET of an index never stored", b"\x80\x04h\x09)\x81."),
            ("ShutdownCN with BINPUT over an index in use", b"\x80\x02cskyllh.cluster.commands\nShutdownCN\nq\x00)q\x00\x81."),
            ("ShutdownCN made with NEWOBJ and (1,)", _command("ShutdownCN", args=b"K\x01\x85").finish(frame=True)),
            ("ShutdownCN inside a tuple", b"\x80\x04" + dumps(ShutdownCN())[11:-1] + b"\x85."),
            ("ShutdownCN with a state", _command("ShutdownCN", b"}(\x8c\x01xK\x01u").finish(frame=True)),
            ("ShutdownCN with a None state", _command("ShutdownCN", b"N").finish(frame=True)),
            ("ACK with a byte after STOP", dumps(ACK()) + b"."),
            ("MSG with a byte after STOP", hello + b"\x00"),
            ("MSG with its value written with INT", _msg(b"I5\n")),
            ("MSG whose value names builtins.print", _msg(_stack_global("builtins", "print") + b"\x8c\x01x\x85R")),
            ("MSG whose value is BINGET of an index never stored", _msg(b"h\x80")),
            ("MSG whose value is nested 201 tuples deep", _msg(b")" + b"\x85" * 201)),
            ("MSG with the keys msg and Msg", _command("MSG", b"}(\x8c\x03msgK\x01\x8c\x03MsgK\x02u").finish(frame=True)),
            ("MSG with a state that is a tuple", _command("MSG", b"\x8c\x03msgK\x01\x86").finish(frame=True)),
            ("MSG holding a dict with a dict key", _msg(b"}\x94}\x94K\x01s")),
            ("MSG holding a dict with a bytes-list tuple key", _msg(b"}\x94(C\x01a]t\x94K\x01s")),
            ("MSG holding a dict changed after a reference to it", _msg(b"}\x94(K\x01h\x06u")),
        ]
        # A lenient decoder maps some foreign opcodes to a value: the MSG around them must still be refused (ENC-2).
        built += [(f"MSG whose value is written with {name}", _msg(ops))
                  for name, ops in foreign_value_ops().items() if name != "INT"]
    else:
        raise KitError(f"unknown role {role!r}")
    return [_case(label, payload) for label, payload in built]


def ack_cases() -> List[BadFrame]:
    """Invalid frames that a lax compute node could take for its ACK, one or more per clause (CN-4)."""
    ack = dumps(ACK())
    built = [
        ("ACK with a byte after STOP", ack + b"\x00"),
        ("ACK made with the INST opcode", b"\x80\x02(iskyllh.cluster.commands\nACK\n."),
        ("ACK of skyllh.cluster.evil", _command_of("skyllh.cluster.evil", "ACK", None)),
        ("ACK with BINPUT over an index in use", b"\x80\x02cskyllh.cluster.commands\nACK\nq\x00)q\x00\x81."),
        ("ACK made with NEWOBJ and (1,)", _command("ACK", args=b"K\x01\x85").finish(frame=True)),
        ("ACK with a state", _command("ACK", b"}(\x8c\x01xK\x01u").finish(frame=True)),
    ]
    return [_case(label, payload) for label, payload in built]


def _stack_global(module: str, name: str, *, wrap: bool = False) -> bytes:
    asm = Assembler(4, memo=False)
    asm.text(module).text(name).op(bytes([op.STACK_GLOBAL]))
    if wrap:
        return asm.op(b")").op(bytes([op.REDUCE])).finish(frame=True)
    return bytes(asm.out)


def _command_of(module: str, name: str, state: Optional[bytes]) -> bytes:
    asm = Assembler(4)
    asm.global_(module, name).op(b")").op(bytes([op.NEWOBJ])).memoize()
    if state is not None:
        asm.op(state).op(bytes([op.BUILD]))
    return asm.finish(frame=True)


def _registration_in_list() -> bytes:
    body = dumps(RegisterCN(1732560000, 7200))[11:-1]  # the command without PROTO, FRAME and STOP
    return b"\x80\x04]" + body + b"a."


def _msg(value_ops: bytes) -> bytes:
    """A MSG payload whose value is the opcodes ``value_ops`` (the state dict is memo 4 and 5; values from 6)."""
    return _command("MSG", b"}\x94\x8c\x03msg\x94" + value_ops + b"s").finish(frame=True)


# -- hostile but small -----------------------------------------------------------------
def _shared_tuple_key() -> bytes:
    """A tuple of 1000 references to a tuple of 1000 references to a 300-char str (10^6 references)."""
    inner = b"\x8c" + b"\xff" + b"s" * 255 + b"q\xc8"  # BINPUT 200, clear of the low memo indices
    inner += b"(" + b"h\xc8" * 1000 + b"tq\xc9"  # BINPUT 201
    return inner + b"(" + b"h\xc9" * 1000 + b"t"


def _colliding_keys(room: int) -> bytes:
    """As many int keys k * (2**61 - 1) (all of hash 0) with None values as fit in ``room`` bytes."""
    out = bytearray()
    k = 1
    while True:
        n = k * (2**61 - 1)
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        entry = b"\x8a" + bytes([len(raw)]) + raw + b"N"
        if len(out) + len(entry) > room:
            return bytes(out)
        out += entry
        k += 1


def _deep_tuple(depth: int) -> bytes:
    return b")" + b"\x85" * depth


def _long4(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8b" + len(raw).to_bytes(4, "little") + raw


def hostile_cases(role: str) -> List[BadFrame]:
    """Small invalid frames that cost a careless receiver dearly (the hardening issue's attacks).

    Master: in a RegisterCN's state; compute node: in a MSG's state or value.
    Their clauses are declared, not computed: the normative grammar is slow
    on exactly these frames, and the kit builds them at collection time.
    The shared-reference key is ENC-6, not CMD-3/CMD-4: its outer TUPLE passes
    MAX_VALUE_COST before the SETITEMS that would make it a key (ERR-2: the
    violation met first in stream order).
    """
    big_int = _long4(10**5000)  # 5001 digits: str() of it fails under Python's default limit
    if role == "master":
        built = [
            ("RegisterCN whose state has a 5001-digit int key", "CMD-3", _command("RegisterCN", _registration_state(extra=big_int + b"N")).finish(frame=True)),
            ("RegisterCN whose extra key is a tuple of 10^6 shared references", "ENC-6", _command("RegisterCN", _registration_state(extra=_shared_tuple_key() + b"N")).finish(frame=True)),
            ("RegisterCN whose state has thousands of hash-colliding int keys", "CMD-3", _command("RegisterCN", _registration_state(extra=_colliding_keys(60000))).finish(frame=True)),
            ("RegisterCN whose state has a 65000-deep tuple key", "ENC-6", _command("RegisterCN", _registration_state(extra=_deep_tuple(65000) + b"N")).finish(frame=True)),
        ]
    else:
        built = [
            ("MSG whose state has a 5001-digit int key", "CMD-4", _command("MSG", b"}(\x8c\x03msgN" + big_int + b"Nu").finish(frame=True)),
            ("MSG whose state's extra key is a tuple of 10^6 shared references", "ENC-6", _command("MSG", b"}(\x8c\x03msgN" + _shared_tuple_key() + b"Nu").finish(frame=True)),
            # ENC-6 bounds the keys of one hash at the SETITEMS, before BUILD finds the state wrong (CMD-4).
            ("MSG whose state has thousands of hash-colliding int keys", "ENC-6", _command("MSG", b"}(\x8c\x03msgN" + _colliding_keys(60000) + b"u").finish(frame=True)),
            ("MSG holding a dict with a 65000-deep tuple key", "ENC-6", _msg(b"}" + _deep_tuple(65000) + b"Ns")),
        ]
    return [BadFrame(label, clause, encode_frame(payload)) for label, clause, payload in built]


def extreme_values() -> List[Tuple[str, Any]]:
    """Valid MSG values that a careless node cannot print: each must be printed (SCN-3), and the node carry on."""
    # ENC-6 counts a shared object at every place it appears (1 + its length for a
    # str), so 340 references to a row of 1000 references to "zz" is close to the
    # largest such value that is still valid: 340,000 strs, about 10 MB as SCN-3 text.
    row = ["zz"] * 1000
    return [
        ("10**5000", 10**5000),
        ("a lone surrogate", "\ud800"),
        ("a 2 KB value of 340,000 shared references", [row] * 340),
        ("-(2**70000)", -(2**70000)),
    ]


def first_frame_text(data: bytes) -> str:
    """What a target sent back, for an evidence line: its first frame decoded (bounded), or its bytes."""
    if len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "little"):
        return f"{len(data)} bytes: {data[:16].hex()}"
    try:
        return describe(loads_checked(data[2 : 2 + int.from_bytes(data[:2], "little")]))
    except ProtocolError as error:
        return f"an undecodable frame ({error.clause})"


# -- master: invalid first frames ----------------------------------------------------------
@dataclass
class MasterSweep:
    """What the master did with each bad first frame."""

    refused: List[BadFrame] = field(default_factory=list)  # closed, nothing sent
    answered: List[Tuple[BadFrame, WireConnection, bytes]] = field(default_factory=list)  # sent bytes
    left_open: List[Tuple[BadFrame, WireConnection]] = field(default_factory=list)
    unsent: List[Tuple[BadFrame, str]] = field(default_factory=list)  # the kit could not even send it
    honest: Optional[ClauseFailure] = None  # an honest node was not served after the sweep
    reset: List[BadFrame] = field(default_factory=list)  # closed by a reset, not an orderly close

    def for_clause(self, clause: str) -> "MasterSweep":
        """The part of the sweep about frames of ``clause``."""
        return MasterSweep(
            [c for c in self.refused if c.clause == clause],
            [a for a in self.answered if a[0].clause == clause],
            [o for o in self.left_open if o[0].clause == clause],
            [u for u in self.unsent if u[0].clause == clause],
            self.honest,
        )


def sweep_master(kit: Any, cases: Sequence[BadFrame]) -> MasterSweep:
    """Send each case as a first frame on its own connection, ``BATCH`` at a time; see the module docstring."""
    sweep = MasterSweep()
    for start in range(0, len(cases), BATCH):
        batch = cases[start : start + BATCH]
        open_: List[Tuple[BadFrame, WireConnection]] = []
        for case in batch:
            try:
                conn = kit.connect(f"first frame: {case.label}")
            except ClauseFailure as failure:
                sweep.unsent.append((case, failure.evidence))
                continue
            try:
                conn.send(case.data)
            except ClauseFailure:
                pass  # closed or reset before it took the whole frame: judged by what came back
            open_.append((case, conn))
        # A correct master closes at once; a loaded machine may delay it: only a master
        # that keeps the connection open for the whole patience fails.
        _await_closes(open_, kit.patience, sweep)
    # A reset is not evidence that the master read the frame: a master that
    # serves one connection at a time and drops its queue on a bad frame (the
    # original) resets frames it never read.  Those are sent again, one at a
    # time, so that each verdict is about its own frame and does not depend on
    # what the batch held.
    reset = _resend_order([case for case in sweep.refused if case in sweep.reset], cases, sweep)
    sweep.refused = [case for case in sweep.refused if case not in sweep.reset]
    for case in reset[:MAX_RESENT]:
        _resend(kit, case, sweep)
    sweep.unsent.extend((case, f"reset unread, and past the {MAX_RESENT} frames the kit sends again") for case in reset[MAX_RESENT:])
    sweep.honest = _honest_node_served(kit)
    return sweep


def _resend_order(reset: List[BadFrame], cases: Sequence[BadFrame], sweep: MasterSweep) -> List[BadFrame]:
    """The reset frames in the order they are sent again: clauses taking turns, undecided clauses first.

    Which frames a master resets unread depends on timing; with more of them
    than :data:`MAX_RESENT`, the ones sent again must not: each clause's
    frames take turns (in the order of ``cases``), and clauses with no frame
    answered yet go first.  So every clause gets its frames sent alone before
    any clause gets a second one, and the verdicts do not depend on the order
    in which the resets arrived.
    """
    position = {id(case): index for index, case in enumerate(cases)}
    answered = {case.clause for case, _, _ in sweep.answered}
    by_clause: Dict[str, List[BadFrame]] = {}
    for case in sorted(reset, key=lambda c: position[id(c)]):
        by_clause.setdefault(case.clause, []).append(case)
    clauses = sorted(by_clause, key=lambda clause: (clause in answered, position[id(by_clause[clause][0])]))
    turns = itertools.zip_longest(*(by_clause[clause] for clause in clauses))
    return [case for turn in turns for case in turn if case is not None]


def _resend(kit: Any, case: BadFrame, sweep: MasterSweep, attempts: int = RESEND_ATTEMPTS) -> None:
    """Send ``case`` again on its own connection until the master shows what it does with it.

    A reset again is still no evidence (the master may be between two
    listening sockets): after ``attempts`` resets the frame counts as not
    sent, which leaves its clause inconclusive, never passed.
    """
    for attempt in range(1, attempts + 1):
        try:
            conn = kit.connect(f"first frame, again on its own ({attempt}): {case.label}", patience=kit.timeout)
        except ClauseFailure as failure:
            sweep.unsent.append((case, failure.evidence))
            return
        try:
            conn.send(case.data)
        except ClauseFailure:
            pass
        alone = MasterSweep()
        _await_closes([(case, conn)], kit.patience, alone)
        if alone.refused and alone.reset:
            continue
        sweep.refused += alone.refused
        sweep.answered += alone.answered
        sweep.left_open += alone.left_open
        return
    sweep.unsent.append((case, f"the master reset the connection before reading the frame, {attempts} times"))


def _await_closes(conns: List[Tuple[BadFrame, WireConnection]], limit: float, sweep: MasterSweep) -> None:
    deadline = time.monotonic() + limit
    waiting = list(conns)
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([c.sock for _, c in waiting], [], [], left)
        for case, conn in [w for w in waiting if w[1].sock in ready]:
            conn.received_within(0.001)
            if conn.peer_closed:
                waiting.remove((case, conn))
                got = conn.transcript.bytes_in("<-")
                if got:
                    sweep.answered.append((case, conn, got))
                else:
                    sweep.refused.append(case)
                    if conn.was_reset:
                        sweep.reset.append(case)
            elif conn.transcript.bytes_in("<-"):
                waiting.remove((case, conn))
                sweep.answered.append((case, conn, conn.transcript.bytes_in("<-")))
    sweep.left_open.extend(waiting)
    for _, conn in conns:
        conn.close()


def _honest_node_served(kit: Any) -> Optional[ClauseFailure]:
    """Whether a valid RegisterCN still gets its ACK after the sweep (MST-4)."""
    from .scenario_checks import read_to_shutdown

    conn = kit.connect("honest node after the bad first frames")
    try:
        conn.send(encode_frame(dumps(RegisterCN(int(time.time()), 3600))))
        frame_ = conn.read_frame(waiting_for="an ACK to an honest RegisterCN after the bad first frames")
    except ClauseFailure as failure:
        return failure.about("MST-4")
    if frame_ is None or not isinstance(frame_.command, ACK):
        got = "the connection closed" if frame_ is None else frame_.describe()
        return conn.fail(f"expected an ACK to an honest RegisterCN after the bad first frames, got {got}", clause="MST-4")
    read_to_shutdown(conn)
    conn.close()
    return None


# -- compute node: bad frames after the ACK ----------------------------------------------
@dataclass
class Gauntlet:
    """What compute nodes did with bad frames after their ACK, each followed by a marker MSG."""

    skipped: List[BadFrame] = field(default_factory=list)
    acted: List[Tuple[BadFrame, str]] = field(default_factory=list)  # (case, evidence)
    stopped: List[Tuple[BadFrame, str]] = field(default_factory=list)
    unknown: List[Tuple[BadFrame, str]] = field(default_factory=list)
    transcripts: List[Transcript] = field(default_factory=list)
    #: The final valid ShutdownCN was not obeyed (evidence), or None.
    no_shutdown: Optional[str] = None

    def for_clause(self, clause: str) -> "Gauntlet":
        return Gauntlet(
            [c for c in self.skipped if c.clause == clause],
            [a for a in self.acted if a[0].clause == clause],
            [s for s in self.stopped if s[0].clause == clause],
            [u for u in self.unknown if u[0].clause == clause],
            self.transcripts,
            self.no_shutdown,
        )


def _marker(index: int) -> str:
    return f"{MARKER} {index}"


def _marker_printed(stdout: bytes, index: int) -> bool:
    """Whether ``stdout`` holds the line of marker ``index``, in the SCN-3 or the legacy form."""
    text = _marker(index)
    hex_ = text.encode().hex().encode()
    return any(h + b'"' in stdout for h in (hex_, hex_.upper())) or LEGACY_PREFIX + text.encode() + b"\n" in stdout


def _await_lines(node: Any, count: int, limit: float) -> bytes:
    """The node's stdout once it shows the last of ``count`` markers, or when the node closes or exits, or at ``limit``."""
    deadline = time.monotonic() + limit
    while True:
        out = _whole_lines(node.process.stdout_bytes())
        if _marker_printed(out, count - 1) or node.process.poll() is not None:
            return out
        if node.conn.peer_closed or time.monotonic() >= deadline:
            time.sleep(0.05)  # let a line written just before the close reach the file
            return _whole_lines(node.process.stdout_bytes())
        node.conn.received_within(0.01)


def _whole_lines(stdout: bytes) -> bytes:
    """``stdout`` up to its last line feed: a line the node is still writing is not judged yet."""
    return stdout[: stdout.rfind(b"\n") + 1]


def run_gauntlet(
    kit: Any, cases: Sequence[BadFrame], *, label: str = "gauntlet", patience: float = 0.0, max_nodes: int = MAX_NODES
) -> Gauntlet:
    """Send ``cases`` to compute nodes after their ACK, each followed by a marker MSG; see the module docstring.

    A node is given ``patience`` seconds (at least the timeout) to print the
    last marker before a frame is reported as not judged.
    """
    result = Gauntlet()
    todo = _evidence_first(cases)
    nodes = 0
    while todo and nodes < max_nodes:
        nodes += 1
        todo = _one_node(kit, todo, result, f"{label} node {nodes}", patience)
    for case in todo:
        result.unknown.append((case, f"not sent: {max_nodes} nodes stopped before it"))
    return result


def _evidence_first(cases: Sequence[BadFrame]) -> List[BadFrame]:
    """One frame per clause first (a ShutdownCN-like one where there is one), then the other
    ShutdownCN-like frames, then the rest, each group in the given order.

    A node that obeys an invalid ShutdownCN, or that dies on any bad frame,
    needs a restart per frame; taking one frame of every clause first, and
    the clearest evidence first, makes the few restarts tell the most.
    """
    first: List[BadFrame] = []
    for clause in dict.fromkeys(c.clause for c in cases):
        mine = [c for c in cases if c.clause == clause]
        first.append(next((c for c in mine if c.shutdown_like), mine[0]))
    chosen = {id(c) for c in first}
    rest = [c for c in cases if id(c) not in chosen]
    return first + [c for c in rest if c.shutdown_like] + [c for c in rest if not c.shutdown_like]


def _one_node(kit: Any, cases: List[BadFrame], result: Gauntlet, label: str, patience: float) -> List[BadFrame]:
    """Run ``cases`` through one node; return those left for the next node."""
    node = kit.start_node(label=label)
    result.transcripts.append(node.transcript)
    node.register()
    stream = bytearray(encode_frame(dumps(ACK())))
    for i, case in enumerate(cases):
        stream += case.data + encode_frame(dumps(MSG(_marker(i))))
    node.send(bytes(stream))
    out = _await_lines(node, len(cases), max(kit.timeout, 0.5 + 0.02 * len(cases), patience))
    if node.conn.peer_closed or node.process.poll() is not None:
        # A node whose stdout is block-buffered writes its lines out only as it exits.
        node.process.wait_exit(kit.patience)
        out = _whole_lines(node.process.stdout_bytes())
    verdict_lines, legacy = _value_lines(out)
    shut_down = False
    if not verdict_lines and (node.conn.peer_closed or node.process.poll() is not None):
        status = node.process.wait_exit(kit.patience)  # it closed: its exit follows, however loaded the machine
        first_shutdown = cases[0] if cases[0].shutdown_like else None
        if status == 0 and first_shutdown is not None:
            result.acted.append((first_shutdown, "the node printed no MSG line and exited with status 0 before the "
                                                 "kit's valid ShutdownCN: it obeyed this invalid ShutdownCN"))
            return [c for c in cases if c is not first_shutdown]
        # No marker at all: the node never got past the first frame.
        result.stopped.append((cases[0], f"the node closed (exit status {status}) before printing the marker MSG "
                                         "after it"))
        return cases[1:]
    if not verdict_lines and not node.conn.peer_closed and node.process.poll() is None:
        # No line while it runs: its stdout may be block-buffered (SCN-3 asks for a flush per line, as a SHOULD).
        # The valid ShutdownCN ends it; its lines are judged as it left them, and a line missing then is missing.
        _final_shutdown(kit, node, result)
        shut_down = True
        if node.process.poll() is not None:
            verdict_lines, legacy = _value_lines(_whole_lines(node.process.stdout_bytes()))
        if not verdict_lines:
            # The node prints no MSG lines (SCN-3), so whether it skipped the frames cannot be seen.
            for case in cases:
                result.unknown.append((case, "the node printed no MSG lines, so whether it skipped the frame cannot be seen"))
            return []
    skipped, acted, seen = _match_markers(verdict_lines, legacy, cases)
    if seen < len(cases) and not shut_down and not node.conn.peer_closed and node.process.poll() is None:
        # The marker's line may still sit in a block-buffered stdout: end the node with the valid
        # ShutdownCN and judge the lines it left at exit.  One that does not close then is still at work.
        before = result.no_shutdown
        _final_shutdown(kit, node, result)
        if node.process.poll() is None:
            result.no_shutdown = before
            result.skipped += skipped
            result.acted += acted
            result.unknown.append((cases[seen], "the node printed no line for the marker MSG after it within the wait "
                                                "(it may still be working on the frame)"))
            node.process.stop()
            return cases[seen + 1 :]
        shut_down = True
        verdict_lines, legacy = _value_lines(_whole_lines(node.process.stdout_bytes()))
        skipped, acted, seen = _match_markers(verdict_lines, legacy, cases)
    result.skipped += skipped
    result.acted += acted
    if seen == len(cases):
        if not shut_down:
            _final_shutdown(kit, node, result)
        return []
    case = cases[seen]
    status = node.process.wait_exit(kit.patience) if node.conn.peer_closed or shut_down else node.process.poll()
    if shut_down and status == 0 and not case.shutdown_like:
        # It ended as the kit's valid ShutdownCN asks, yet left no line for the marker after this frame.
        result.acted.append((case, "the node exited with status 0 after the final ShutdownCN but had printed no line "
                                   "for the marker MSG after it"))
        return cases[seen + 1 :]
    if case.shutdown_like and status == 0:
        result.acted.append((case, "the node shut down with status 0 on it"))
    else:
        result.stopped.append((case, f"the node closed the connection (exit status {status}) after it, "
                                     "before the marker MSG that followed"))
    return cases[seen + 1 :]


def _match_markers(
    lines: List[bytes], legacy: bool, cases: List[BadFrame]
) -> Tuple[List[BadFrame], List[Tuple[BadFrame, str]], int]:
    """The frames whose marker line came in order, those the node printed a value for, and the markers seen."""
    skipped: List[BadFrame] = []
    acted: List[Tuple[BadFrame, str]] = []
    seen = 0
    for line in lines:
        text = _line_value(line, legacy)
        if text is not None and text == _marker(seen):
            skipped.append(cases[seen])
            seen += 1
            if seen == len(cases):
                break
        else:
            shown = line[:60].decode("ascii", "backslashreplace")
            acted.append((cases[seen], f"the node printed a value for it: {shown}"))
            # it acted on that frame; the marker after it should still come
    return skipped, acted, seen


def _value_lines(out: bytes) -> Tuple[List[bytes], bool]:
    """The node's MSG value lines: the SCN-3 ones, or else the original's (then ``True``)."""
    lines = printed_lines(out)
    if lines:
        return lines, False
    return printed_lines(out, LEGACY_PREFIX), True


def _line_value(line: bytes, legacy: bool) -> Optional[str]:
    if legacy:
        return line.decode("utf-8", "replace").rstrip("\r")
    try:
        node = json.loads(line)
        if node.get("type") == "str":
            return bytes.fromhex(node["utf8"]).decode("utf-8", "surrogatepass")
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
    return None


def _final_shutdown(kit: Any, node: Any, result: Gauntlet) -> None:
    node.send(encode_frame(dumps(ShutdownCN())))
    try:
        # A node may still be working through the frames before it.
        node.conn.wait_closed(kit.patience)
    except NoReply:
        result.no_shutdown = f"the node did not close within {kit.patience:g} s of the final valid ShutdownCN"
        return
    status = node.process.wait_exit(kit.timeout)
    if status != 0:
        result.no_shutdown = f"after the final valid ShutdownCN the node exited with status {status}, not 0"


def judge_gauntlet(result: Gauntlet, what: str, own_clause: str) -> None:
    """Raise what a gauntlet's result shows: acting on a bad frame breaks its clause, stopping CN-9.

    ``own_clause`` is the clause of the calling test; an ERR-1 test blames a
    node that stops on ERR-1 itself rather than on CN-9.
    """
    if result.acted:
        case, evidence = result.acted[0]
        raise ClauseFailure(
            f"expected the node to skip {case.label} (it breaks {case.clause}) and not act on it, got: {evidence}",
            clause=case.clause if case.clause != own_clause else None,
            transcripts=result.transcripts[-1:],
        )
    if result.stopped:
        case, evidence = result.stopped[0]
        raise ClauseFailure(
            f"expected the node to skip {case.label} and serve on, got: {evidence}",
            clause="CN-9" if own_clause != "ERR-1" else None,
            transcripts=result.transcripts[-1:],
        )
    if result.no_shutdown is not None:
        raise ClauseFailure(f"expected the node to serve on after {what}, got: {result.no_shutdown}",
                            clause="CN-9" if own_clause != "ERR-1" else None, transcripts=result.transcripts[-1:])
    if result.unknown:
        case, evidence = result.unknown[0]
        raise Inconclusive(f"{len(result.unknown)} of the frames ({case.label} first) were not judged: {evidence}")
    if not result.skipped:
        raise Inconclusive(f"no frame was judged for {what}")


# -- compute node: bad registration replies (CN-4) ----------------------------------------------
@dataclass
class FirstReply:
    """What one node did after a bad reply to its RegisterCN."""

    case: BadFrame
    transcript: Transcript
    problem: Optional[str] = None  # evidence that it carried on
    unknown: Optional[str] = None


def run_first_replies(kit: Any, cases: Sequence[BadFrame]) -> List[FirstReply]:
    """Start one node per case, side by side; reply ``case`` to each RegisterCN, then a MSG; see the module docstring."""
    if kit.options.cn_command is None:
        raise KitError("this test needs --cn-command")
    listener = kit.listener
    listener.drain()
    host, port = listener.address
    base = kit.options.cn_live_time
    pending: Dict[int, Tuple[BadFrame, NodeProcess, Transcript]] = {}
    for i, case in enumerate(cases):
        transcript = Transcript(f"reply to RegisterCN: {case.label}")
        live = base + 1 + i  # tells the nodes apart (CN-3)
        process = kit.track(NodeProcess(command_line(kit.options.cn_command, host, port, live), transcript))
        pending[live] = (case, process, transcript)
    results: List[FirstReply] = []
    connections: List[Tuple[FirstReply, NodeProcess, WireConnection]] = []
    deadline = time.monotonic() + kit.options.cn_startup_timeout
    strays = 0
    while pending and time.monotonic() < deadline and strays < 4 * len(cases):
        try:
            conn = listener.accept(Transcript("unidentified node"), min(0.5, max(0.0, deadline - time.monotonic())))
        except NoReply:
            if all(p.poll() is not None for _, p, _ in pending.values()):
                break
            continue
        kit.track(conn)
        try:
            first = conn.read_frame(waiting_for="a RegisterCN")
        except ClauseFailure:
            first = None
        command = first.command if first is not None else None
        if not isinstance(command, RegisterCN) or command.cn_live_time not in pending:
            strays += 1
            conn.close()
            continue
        case, process, transcript = pending.pop(command.cn_live_time)
        conn.transcript = transcript
        transcript.received(first.raw)
        conn.send(case.data + encode_frame(dumps(MSG("carry on?"))))
        connections.append((FirstReply(case, transcript), process, conn))
    for case, process, transcript in pending.values():
        results.append(FirstReply(case, transcript, unknown="the node's RegisterCN never arrived, so the reply was not sent"))
    # Nodes started side by side share the machine: give them all the patience (a node that closes ends its wait).
    deadline = time.monotonic() + kit.patience
    for reply, process, conn in connections:
        try:
            frames = conn.wait_closed(max(0.0, deadline - time.monotonic()))
            if frames:
                reply.problem = f"the node sent {frames[0].describe()} after the bad reply"
        except ClauseFailure:
            reply.problem = "the node kept the connection open after the bad reply"
        status = process.wait_exit(max(0.1, deadline - time.monotonic()))
        if reply.problem is None:
            if status is None:
                reply.problem = "the node still ran after the bad reply"
            elif status == 0:
                reply.problem = "the node exited with status 0 after a reply that is not an ACK"
        out = process.stdout_bytes()
        if reply.problem is None and (printed_lines(out) or LEGACY_PREFIX in out):
            reply.problem = "the node printed the MSG that followed the bad reply"
        results.append(reply)
    order = {id(case): i for i, case in enumerate(cases)}
    return sorted(results, key=lambda reply: order[id(reply.case)])
