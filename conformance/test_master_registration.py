"""Master mode: registration (MST-1, MST-2, MST-3, MST-7, MST-9, ENC-8, FRM-4, FRM-5, FRM-6).

Each test opens fresh connections.  Hypothesis draws how the RegisterCN is
written (split points and pauses), what it registers, and which invalid
first frames to try; a failing example is shrunk and reported with the byte
transcript of its last run.
"""

from __future__ import annotations

import time
from typing import List, Optional, Tuple

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from skyllh_cluster.codec import dumps, loads_checked
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN
from skyllh_cluster.errors import ProtocolError

from skyllh_cluster.conformance import payloads
from skyllh_cluster.conformance.failures import ClauseFailure, Inconclusive, NoReply
from skyllh_cluster.conformance.peer import Frame, WireConnection
from skyllh_cluster.conformance.scenario_checks import read_to_shutdown
from skyllh_cluster.conformance.session import Kit, command_frame
from skyllh_cluster.conformance.strategies import invalid_registrations, registration_times, send_plans

REGISTRATION = command_frame(RegisterCN(1732560000, 7200))


def _fresh_registration() -> bytes:
    return command_frame(RegisterCN(int(time.time()), 3600))


def _expect_ack(conn: WireConnection, what: str, *, clause: str = "MST-1") -> Frame:
    """Read the master's first frame and fail unless it is an ACK."""
    try:
        frame = conn.read_frame(waiting_for=f"an ACK to {what}")
    except NoReply as failure:
        raise failure.about(clause) from None
    if frame is None:
        raise conn.fail(f"expected an ACK to {what}, got the connection closed", clause=clause)
    if frame.error is not None:
        raise conn.fail(f"expected an ACK to {what}, got {frame.describe()}", clause=frame.error.clause)
    if not isinstance(frame.command, ACK):
        raise conn.fail(f"expected an ACK to {what}, got {frame.describe()}", clause="MST-2")
    read_to_shutdown(conn)
    return frame


def _expect_refusal(conn: WireConnection, what: str, budget: float) -> None:
    """Fail unless the master closes ``conn`` within ``budget`` without sending anything.

    Callers give the kit's patience: a correct master closes at once, and
    only one that keeps the connection open that long is failed, however
    loaded the machine.
    """
    try:
        frames = conn.wait_closed(budget)
    except NoReply:
        raise conn.fail(
            f"expected the master to close the connection after {what}, got it open after {budget:g} s", kind=NoReply
        ) from None
    if frames:
        raise conn.fail(f"expected no reply to {what}, got {frames[0].describe()}")
    if conn.transcript.bytes_in("<-"):
        raise conn.fail(f"expected no reply to {what}, got {len(conn.transcript.bytes_in('<-'))} bytes")


@pytest.mark.clause("MST-1")
def test_accepts_registrations(kit: Kit) -> None:
    """A valid RegisterCN with any plausible times is answered with an ACK."""

    @kit.settings()
    @given(times=registration_times())
    def accepts(times: "Tuple[int, int]") -> None:
        start, live = int(time.time()) + times[0], times[1]
        what = f"RegisterCN(now{times[0]:+d} s, {live})"  # no clock reading: a rerun reads the same
        with kit.connect(what) as conn:
            conn.send(command_frame(RegisterCN(start, live)))
            _expect_ack(conn, what)

    accepts()


def _encodings() -> List[object]:
    """Every style in the canonical layout, and each other state layout in several styles (all protocols)."""
    rows = [(style, payloads.STATE_LAYOUTS[0]) for style in payloads.ENCODING_STYLES]
    for i, layout in enumerate(payloads.STATE_LAYOUTS[1:]):
        rows += [(style, layout) for style in payloads.ENCODING_STYLES[i::3]]
    return [
        pytest.param(style, layout, id=f"protocol{style[0]}{'-frame' if style[1] else ''}{'-memo' if style[2] else ''}"
                     f"{'-keys-reversed' if layout[0] else ''}{'-setitem' if layout[1] else ''}")
        for style, layout in rows
    ]


@pytest.mark.parametrize("style,layout", _encodings())
@pytest.mark.clause("ENC-8")
def test_accepts_every_valid_encoding(kit: Kit, style: "Tuple[int, bool, bool]", layout: "Tuple[bool, bool]") -> None:
    """A RegisterCN in another valid encoding gets an ACK.

    Protocols 2 to 5, with or without FRAME and memo, and the state's two
    keys in either order (CMD-3) or set one SETITEM at a time (ENC-8).
    """
    protocol, framed, memo = style
    reverse_keys, setitem = layout
    payload = payloads.encode(RegisterCN(int(time.time()), 3600), protocol, frame=framed, memo=memo,
                              reverse_keys=reverse_keys, setitem=setitem)
    what = (f"a protocol {protocol} RegisterCN" + (" with _cn_live_time first" if reverse_keys else "")
            + (" filled by SETITEM" if setitem else ""))
    with kit.connect(f"RegisterCN at protocol {protocol}") as conn:
        conn.send(payloads.frame(payload))
        _expect_ack(conn, what, clause="ENC-8")


@pytest.mark.clause("MST-2")
def test_ack_only_after_the_whole_frame(kit: Kit) -> None:
    """Nothing arrives before the last byte of the RegisterCN; then exactly one ACK comes first."""

    registration = _fresh_registration()

    @kit.settings()
    @given(plan=send_plans(len(registration)))
    @example(plan=([1], [0.02]))  # only the first prefix byte, then a pause
    @example(plan=([2], [0.02]))  # the whole prefix, then a pause
    @example(plan=([len(registration) - 1], [0.02]))  # all but the last byte
    def answers_after_last_byte(plan: "Tuple[List[int], List[float]]") -> None:
        cuts, pauses = plan
        with kit.connect("RegisterCN in pieces") as conn:
            pieces = payloads.split(registration, cuts)
            for i, piece in enumerate(pieces):
                conn.send(piece)
                if i < len(pieces) - 1:
                    early = conn.received_within(max(pauses[i], 0.002))
                    if early:
                        raise conn.fail(
                            f"expected nothing before the last byte of the RegisterCN, got {len(early)} bytes "
                            f"after {sum(map(len, pieces[: i + 1]))} of {len(registration)}: {early[:16].hex()}"
                        )
                    if conn.peer_closed:
                        raise conn.fail(
                            f"expected the master to wait for the rest of the RegisterCN, got the connection closed "
                            f"after {sum(map(len, pieces[: i + 1]))} of {len(registration)} bytes",
                            clause="FRM-4",
                        )
            first = conn.read_frame(waiting_for="an ACK to a RegisterCN sent in pieces")
            if first is None or not isinstance(first.command, ACK):
                got = "the connection closed" if first is None else first.describe()
                raise conn.fail(f"expected an ACK to a RegisterCN sent in pieces, got {got}")
            second = conn.read_frame(waiting_for="the first MSG")
            if second is not None and isinstance(second.command, ACK):
                raise conn.fail("expected exactly one ACK, got a second one as frame 1")
            read_to_shutdown(conn)

    answers_after_last_byte()


@pytest.mark.clause("FRM-4")
def test_registration_split_at_any_byte(kit: Kit) -> None:
    """A RegisterCN written one byte per write, or cut anywhere, is reassembled and answered."""
    registration = _fresh_registration()
    with kit.connect("RegisterCN byte by byte") as conn:
        conn.send(registration, cuts=range(1, len(registration)), delays=[0.001] * len(registration))
        _expect_ack(conn, "a RegisterCN written byte by byte", clause="FRM-4")

    @kit.settings()
    @given(cuts=st.lists(st.integers(1, len(registration) - 1), min_size=1, max_size=12))
    def reassembles(cuts: List[int]) -> None:
        with kit.connect("RegisterCN cut") as conn:
            conn.send(registration, cuts=cuts)
            _expect_ack(conn, f"a RegisterCN cut at {sorted(set(cuts))}", clause="FRM-4")

    reassembles()


@pytest.mark.parametrize("name", list(payloads.INVALID_FIRST_FRAMES))
@pytest.mark.clause("MST-3")
def test_invalid_first_frame_is_refused(kit: Kit, name: str) -> None:
    """An invalid first frame gets no ACK, nor anything else, and its connection is closed."""
    payload = payloads.INVALID_FIRST_FRAMES[name]()
    with kit.connect(f"first frame: {name}") as conn:
        conn.send(payloads.frame(payload))
        _expect_refusal(conn, f"a first frame that is {name}", kit.patience)


@pytest.mark.clause("MST-3")
def test_mutated_registration_is_refused(kit: Kit) -> None:
    """A RegisterCN with random edits that the grammar refuses gets no ACK, and its connection is closed."""
    valid = dumps(RegisterCN(1732560000, 7200))

    @kit.settings()
    @given(payload=invalid_registrations(valid))
    def refuses(payload: bytes) -> None:
        try:
            loads_checked(payload)
        except ProtocolError as error:
            reason = f"a mutated RegisterCN ({error.clause}: {error.reason})"
        else:
            return  # the edits left a valid command: not this test's case
        if not payload:
            return  # the empty frame has its own case
        with kit.connect("mutated RegisterCN") as conn:
            conn.send(payloads.frame(payload))
            _expect_refusal(conn, reason, kit.patience)

    refuses()


@pytest.mark.clause("FRM-5")
def test_registration_cut_short_by_close(kit: Kit) -> None:
    """A RegisterCN cut short by end of stream is discarded: no ACK, and the connection is closed."""
    for keep in (1, 2, len(REGISTRATION) // 2, len(REGISTRATION) - 1):
        with kit.connect(f"{keep} bytes of a RegisterCN, then end of stream") as conn:
            conn.send(REGISTRATION[:keep])
            conn.shutdown_write()
            _expect_refusal(conn, f"{keep} of {len(REGISTRATION)} bytes of a RegisterCN and end of stream", kit.patience)


@pytest.mark.clause("MST-7")
def test_silent_connection_is_closed_in_time(kit: Kit) -> None:
    """A connection that sends nothing, or trickles a RegisterCN a byte at a time, is closed within --registration-budget."""
    kit.judge_stall("silent", REGISTRATION[: len(REGISTRATION) // 2])


@pytest.mark.clause("FRM-6")
def test_half_frame_is_not_waited_for_forever(kit: Kit) -> None:
    """A connection that stops in the middle of its first frame is closed within the registration budget."""
    kit.judge_stall("half-frame", REGISTRATION[: len(REGISTRATION) // 2])


#: The honest node's receive buffer in the MST-9 check: far below the scenario's 61 kB, so that a master cannot
#: hand it all to the kernel and is still serving the honest node when the expired one registers.
SMALL_RECEIVE_BUFFER = 4096


@pytest.mark.clause("MST-9")
def test_expired_node_is_sent_nothing(kit: Kit) -> None:
    """A node whose live time has already passed is sent no MSG or ShutdownCN, and is dropped.

    An honest node registers first, with a small receive window, and is left
    unread while the expired node registers: a master serving several nodes
    at once then has another live connection open at that moment, and one
    whose expiry check holds only for a lone connection is caught.  A master
    serving one node at a time comes to the expired node once the honest one
    has been read.  Silence alone proves nothing, so the check passes only
    once the honest node has had the scenario's MSGs and ShutdownCN -- the
    master did broadcast -- and the expired node's connection was closed
    having carried nothing but the ACK (MST-2).
    """
    start = int(time.time()) - 7200
    what = "a node whose live time ended 2 h ago"
    honest = kit.connect("honest node, registered first and read last", receive_buffer=SMALL_RECEIVE_BUFFER)
    honest.send(_fresh_registration())
    try:
        first = honest.read_frame(waiting_for="an ACK to the honest node's RegisterCN")
    except NoReply:
        first = None
    if first is None or not isinstance(first.command, ACK):
        raise Inconclusive(f"the honest node registered before {what} got no ACK ({'nothing' if first is None else first.describe()})",
                           transcripts=[honest.transcript])
    expired = _register_expired(kit, start)
    served = _read_scenario(honest)
    if expired is None:  # the master stopped listening while it served the honest node: register now, alone
        expired = _register_expired(kit, start)
        if expired is None:
            raise Inconclusive(f"the master accepted no connection for {what}", transcripts=[honest.transcript])
    frames, closed = _frames_until_close(expired, kit.patience)
    sent = [f for f in frames if not isinstance(f.command, ACK)]
    if sent:
        raise expired.fail(f"expected nothing after the ACK to {what}, got {sent[0].describe()}")
    if served is not None:
        raise Inconclusive(f"no evidence that the master broadcast while {what} was registered: an honest node "
                           f"registered alongside got {served}", transcripts=[expired.transcript, honest.transcript])
    if not closed:
        raise expired.fail(f"expected the master to drop {what} and close its connection, got it still open "
                           f"{kit.patience:g} s after an honest node had the whole scenario", kind=NoReply)


def _register_expired(kit: Kit, start: int) -> Optional[WireConnection]:
    """A connection that has sent a RegisterCN whose live time has passed; ``None`` if the master took none."""
    try:
        conn = kit.connect("expired registration")
        conn.send(command_frame(RegisterCN(start, 60)))
    except (NoReply, ClauseFailure):
        return None
    return conn


def _read_scenario(conn: WireConnection) -> Optional[str]:
    """Read a registered node's frames to ShutdownCN; ``None`` when it had MSGs and ShutdownCN, else what it got."""
    commands: list = []
    try:
        for frame in conn.frames(waiting_for="the scenario"):
            commands.append(frame.command)
            if isinstance(frame.command, ShutdownCN):
                break
    except ClauseFailure as failure:
        return failure.evidence
    if commands and isinstance(commands[-1], ShutdownCN) and any(isinstance(c, MSG) for c in commands):
        return None
    return f"{len(commands)} frames after its ACK and then the connection closed"


def _frames_until_close(conn: WireConnection, wait: float) -> "Tuple[List[Frame], bool]":
    """The frames that arrive within ``wait`` seconds, up to the first that is not an ACK; and whether the master closed."""
    frames: List[Frame] = []
    deadline = time.monotonic() + wait
    try:
        while True:
            frame = conn.read_frame(max(0.0, deadline - time.monotonic()), waiting_for="the master to close the connection")
            if frame is None:
                return frames, True
            frames.append(frame)
            if not isinstance(frame.command, ACK):
                return frames, conn.peer_closed
    except NoReply:
        return frames, False
