"""Compute-node mode: the kit plays a misbehaving or unusual master.

Each test starts its own node (killed by pid when the test ends, if it
still runs), except the CN-10 checks: their two nodes are started before
the first test and watched in the background (:class:`.session.LiveTimeWatch`).
Hypothesis draws split points, pauses and MSG values; tests that start a
process per example get a fifth of ``--conformance-examples``.

A node that carries on, skips or ignores is judged by what it prints (SCN-3
lines, or the original's): the MSGs around the frame it had to skip or
ignore must be printed exactly, and nothing for the frame itself.  A node
that prints no MSG lines gives no such evidence: those checks are
inconclusive, never passed.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN

from skyllh_cluster.conformance import payloads
from skyllh_cluster.conformance.scenario_checks import scenario_frames
from skyllh_cluster.conformance.session import Kit, NodeUnderTest, command_frame
from skyllh_cluster.conformance.failures import Inconclusive
from skyllh_cluster.conformance.node_output import any_value_line, judge_output, printed_tail
from skyllh_cluster.conformance.strategies import send_plans
from skyllh_cluster.conformance.strategies import values as any_values

#: A node process costs this many plain examples (see Kit.settings).
PROCESS_COST = 5

ACK_FRAME = command_frame(ACK())
SHUTDOWN_FRAME = command_frame(ShutdownCN())


def _largest_msg() -> bytes:
    """A MSG whose payload is exactly 65535 bytes, the largest a frame holds."""
    overhead = len(dumps(MSG("")))
    size = 65535 - overhead
    for n in range(size - 8, size + 1):  # the str's length opcode may grow by a few bytes
        payload = dumps(MSG("y" * n))
        if len(payload) == 65535:
            return payload
    raise AssertionError("no MSG fills a frame exactly")


def _ends_well(kit: Kit, node: NodeUnderTest, what: str, clause: str) -> None:
    """After ShutdownCN: the node closes and exits 0, having carried on until then.

    Waits the whole patience: a correct node closes at once, so only one that
    never does is failed, however loaded the machine (CN-7's 2 s bound is
    judged on the scenario run).
    """
    node.closes_within(kit.patience, f"after ShutdownCN ({what})", clause=clause)
    status = node.exits_within(kit.patience, f"after ShutdownCN ({what})", clause=clause)
    if status != 0:
        raise node.fail(f"expected exit status 0 after ShutdownCN ({what}), got {status}", clause=clause)


def _printed_exactly(kit: Kit, node: NodeUnderTest, values: List[Any], what: str, clause: str) -> None:
    """Pass only on the node's printed lines: one per value of ``values``, exactly, and no other.

    That is the positive evidence that the node served the MSGs around
    the frames it had to ignore or skip (``what``), and acted on nothing
    else.  A node that prints no MSG lines at all (neither SCN-3 nor the
    original's) gives none: inconclusive, never a pass.
    """
    verdict = judge_output(values, node.process.stdout_bytes())
    if verdict.ok:
        return
    if verdict.failure is not None:
        failed_clause, evidence = verdict.failure
        if verdict.form == "none" and not kit.node_prints_lines():
            raise Inconclusive(
                f"the node prints no MSG lines (SCN-3), so whether it served the MSGs {what} cannot be seen",
                transcripts=node.transcripts(),
            )
        if failed_clause == "SCN-3" and verdict.form != "none":
            raise Inconclusive(f"the node's MSG lines could not be read ({evidence}), so whether it served the MSGs "
                               f"{what} cannot be seen", transcripts=node.transcripts())
        raise node.fail(f"expected a line for each of the MSGs {_shown(values)} {what} and no other, got: {evidence}",
                        clause=clause)
    raise Inconclusive(f"the node's lines do not show every MSG {what}: {verdict.inconclusive}", transcripts=node.transcripts())


def _shown(values: List[Any]) -> str:
    return ", ".join(repr(v) for v in values)


#: First replies that are not an ACK (CN-4), by name.
NON_ACK_REPLIES: Dict[str, Callable[[], bytes]] = {
    "MSG": lambda: command_frame(MSG("not an ACK")),
    "RegisterCN": lambda: command_frame(RegisterCN(1732560000, 7200)),
    "ShutdownCN": lambda: SHUTDOWN_FRAME,
    "garbage payload": lambda: payloads.frame(b"\x80\x04garbage."),
    "empty frame": lambda: b"\x00\x00",
}


@pytest.mark.parametrize("reply", list(NON_ACK_REPLIES))
@pytest.mark.clause("CN-4")
def test_non_ack_reply_stops_the_node(kit: Kit, reply: str) -> None:
    """A node whose first reply is not an ACK closes, exits non-zero, and prints no line for the MSG after it."""
    node = kit.start_node()
    node.register()
    node.send(NON_ACK_REPLIES[reply]() + command_frame(MSG("carry on?")))
    node.closes_within(kit.patience, f"after a first reply that is {reply}")
    status = node.exits_within(kit.patience, f"after a first reply that is {reply}")
    if status == 0:
        raise node.fail(f"expected a non-zero exit status after a first reply that is {reply}, got 0")
    out = node.process.stdout_bytes()
    if any_value_line(out):
        raise node.fail(f"expected the node not to act on the MSG after a first reply that is {reply}, "
                        f"got it printed: {printed_tail(out)}")
    if not kit.node_prints_lines():
        raise Inconclusive(f"the node prints no MSG lines (SCN-3), so whether it acted on the MSG after a first reply "
                           f"that is {reply} cannot be seen", transcripts=node.transcripts())


@pytest.mark.clause("CN-8")
def test_unhandled_commands_are_ignored(kit: Kit) -> None:
    """A second ACK and a RegisterCN from the master are ignored: the node prints the MSG after them and serves on to ShutdownCN."""
    node = kit.start_node()
    node.register()
    node.send(ACK_FRAME + command_frame(MSG("before")) + ACK_FRAME + command_frame(RegisterCN(1732560000, 7200))
              + command_frame(MSG("still here")) + SHUTDOWN_FRAME)
    _ends_well(kit, node, "after an extra ACK and a RegisterCN", "CN-8")
    _printed_exactly(kit, node, ["before", "still here"], "around an extra ACK and a RegisterCN", "CN-8")


#: Well-framed payloads a serving node cannot decode (CN-9), by name.
UNDECODABLE: Dict[str, bytes] = {
    "garbage payload": b"\x80\x04garbage.",
    "empty frame": b"",
    "MSG with an extra key": payloads.invalid_state("MSG", {"msg": 1, "extra": 2}),
    # obeying it would end the node before MSG(2)
    "ShutdownCN with a byte after STOP": dumps(ShutdownCN()) + b".",
}


@pytest.mark.parametrize("name", list(UNDECODABLE))
@pytest.mark.clause("CN-9")
def test_undecodable_frame_is_skipped(kit: Kit, name: str) -> None:
    """A well-framed payload that does not decode is skipped: the node prints MSG(1) and MSG(2), nothing for it, and serves on to ShutdownCN."""
    node = kit.start_node()
    node.register()
    node.send(ACK_FRAME + command_frame(MSG(1)) + payloads.frame(UNDECODABLE[name]) + command_frame(MSG(2)) + SHUTDOWN_FRAME)
    _ends_well(kit, node, f"after a {name}", "CN-9")
    _printed_exactly(kit, node, [1, 2], f"around a {name}", "CN-9")


@pytest.mark.parametrize("when", ["same write", "later write"])
@pytest.mark.clause("CN-6")
def test_frames_after_shutdown_are_not_acted_on(kit: Kit, when: str) -> None:
    """A MSG after the ShutdownCN (in the same write, or a later one) is not acted on: the node closes, exits 0, and prints only the MSG before."""
    node = kit.start_node()
    node.register()
    head = ACK_FRAME + command_frame(MSG("before the shutdown")) + SHUTDOWN_FRAME
    # No second ShutdownCN after the MSG: a node that skipped the first must be seen not to close.
    tail = command_frame(MSG("after the shutdown"))
    if when == "same write":
        node.send(head + tail)
    else:
        node.send(head)
        node.send(tail)  # a node that already closed makes this a noted no-op
    what = f"followed by a MSG in the {when}"
    _ends_well(kit, node, what, "CN-6")
    _printed_exactly(kit, node, ["before the shutdown"], f"before a ShutdownCN {what}", "CN-6")


@pytest.mark.clause("CN-11")
def test_master_close_while_serving_exits_non_zero(kit: Kit) -> None:
    """A master that ends the stream between two frames while the node serves makes it close and exit non-zero."""
    node = kit.start_node()
    node.register()
    node.send(ACK_FRAME + command_frame(MSG("served before the close")))
    node.conn.shutdown_write()
    what = "after the master ended the stream between frames"
    node.closes_within(kit.patience, what)
    status = node.exits_within(kit.patience, what)
    # Only a node seen serving (the MSG printed) was closed on between frames while it served.
    verdict = judge_output(["served before the close"], node.process.stdout_bytes())
    if not verdict.ok:
        raise Inconclusive(f"the node's lines do not show that it served the MSG before the close "
                           f"({verdict.inconclusive or (verdict.failure or ('', ''))[1]}); exit status {status}",
                           transcripts=node.transcripts())
    if status == 0:
        raise node.fail(f"expected a non-zero exit status {what} (it was neither shut down nor out of live time), "
                        f"got 0 after printing: {printed_tail(node.process.stdout_bytes())}")


@pytest.mark.clause("FRM-4")
def test_frames_split_and_coalesced(kit: Kit) -> None:
    """The scenario's frames cut at any bytes, with pauses, or one byte per write, are all taken."""
    small = b"".join(scenario_frames()[:-2]) + SHUTDOWN_FRAME  # all but the 60000-char MSG
    node = kit.start_node()
    node.register()
    node.send(small, cuts=range(1, len(small)), delays=[0.0005] * len(small))
    _ends_well(kit, node, "frames written one byte per write", "FRM-4")

    stream = b"".join(scenario_frames())

    @kit.settings(cost=PROCESS_COST)
    @given(plan=send_plans(len(stream), max_pieces=24))
    def reassembles(plan: "Tuple[List[int], List[float]]") -> None:
        cuts, pauses = plan
        node = kit.start_node()
        try:
            node.register()
            node.send(stream, cuts=cuts, delays=pauses)
            _ends_well(kit, node, f"the scenario cut at {cuts}", "FRM-4")
        finally:
            node.process.stop()
            node.conn.close()

    reassembles()


@pytest.mark.clause("FRM-4")
def test_largest_frame_is_taken(kit: Kit) -> None:
    """A MSG whose payload is 65535 bytes, the largest frame, is taken."""
    node = kit.start_node()
    node.register()
    node.send(ACK_FRAME + payloads.frame(_largest_msg()) + SHUTDOWN_FRAME)
    _ends_well(kit, node, "a 65535-byte MSG", "FRM-4")


@pytest.mark.clause("FRM-5")
def test_frame_cut_short_ends_the_connection(kit: Kit) -> None:
    """A MSG frame cut short by the master's end of stream is not acted on, and the node closes."""
    node = kit.start_node()
    node.register()
    msg = command_frame(MSG("cut short"))
    node.send(ACK_FRAME + msg[: len(msg) // 2])
    node.conn.shutdown_write()
    node.closes_within(kit.patience, "after end of stream inside a frame")


@pytest.mark.parametrize("position", ["reply to RegisterCN", "MSG"])
@pytest.mark.clause("SEC-1")
def test_malicious_frame_is_not_run(kit: Kit, position: str) -> None:
    """A pickle that would connect back to the kit if unpickled makes no connection before the node closes or exits."""
    node = kit.start_node()
    node.register()
    canary = kit.canary_at_listener()
    bait = payloads.frame(payloads.canary(canary.host, canary.port))
    node.send((bait if position != "MSG" else ACK_FRAME + bait) + SHUTDOWN_FRAME)
    kit.judge_canary(canary, node.handled, f"a canary pickle as {position}, then ShutdownCN", node.transcripts)


@pytest.mark.clause("ENC-5")
def test_call_hidden_in_a_message_is_not_run(kit: Kit) -> None:
    """A MSG whose value hides a call (REDUCE) is not run, whatever else the node does with it."""
    node = kit.start_node()
    node.register()
    canary = kit.canary_at_listener()
    node.send(ACK_FRAME + payloads.frame(payloads.canary_inside("MSG", canary.host, canary.port)) + SHUTDOWN_FRAME)
    kit.judge_canary(canary, node.handled, "a MSG hiding a call, then ShutdownCN", node.transcripts)


@pytest.mark.parametrize("protocol", [2, 3, 5])
@pytest.mark.clause("ENC-8")
def test_every_valid_encoding_is_taken(kit: Kit, protocol: int) -> None:
    """ACK, MSGs and ShutdownCN in another valid encoding (protocol 2, 3 or 5) are all taken."""
    node = kit.start_node()
    node.register()
    frames = [payloads.encode(ACK(), protocol, frame=protocol >= 4, memo=False)]
    frames += [payloads.encode(MSG(p), protocol, frame=protocol >= 4) for p in ("text", b"\x00\xff", 2**70, [1.5, None], {"k": (1, 2)})]
    frames += [payloads.encode(ShutdownCN(), protocol, frame=False)]
    node.send(b"".join(payloads.frame(f) for f in frames))
    _ends_well(kit, node, f"commands encoded at pickle protocol {protocol}", "ENC-8")


@pytest.mark.clause("CN-11")
def test_any_values_are_taken(kit: Kit) -> None:
    """MSGs of any values of the subset, in any number, are printed exactly and in order (SCN-3 lines), up to ShutdownCN."""
    outcomes: List[str] = []

    @kit.settings(cost=PROCESS_COST)
    @given(values=st.lists(any_values(), min_size=1, max_size=20))
    def takes(values: List[Any]) -> None:
        node = kit.start_node()
        try:
            node.register()
            node.send(ACK_FRAME + b"".join(command_frame(MSG(v)) for v in values) + SHUTDOWN_FRAME)
            _ends_well(kit, node, f"{len(values)} MSGs of drawn values", "CN-11")
            verdict = judge_output(values, node.process.stdout_bytes())
        finally:
            node.process.stop()
            node.conn.close()
        if verdict.failure is not None:
            clause, evidence = verdict.failure
            if verdict.form == "none":
                outcomes.append(evidence)
                return
            raise node.fail(f"{evidence} (values sent: {len(values)})", clause=None if clause == "CN-11" else clause)
        if verdict.inconclusive is not None:
            outcomes.append(verdict.inconclusive)

    takes()
    if outcomes:
        raise Inconclusive(f"the node's output did not show every value: {outcomes[0]}")


# The CN-10 nodes were started before the first test (see Kit.live_time_watch);
# judged last, their live time has run out meanwhile.
@pytest.mark.clause("CN-10")
def test_idle_node_stops_at_its_live_time(kit: Kit) -> None:
    """A node ACKed late, whose master then says nothing, stops at cn_start_time + cn_live_time, closing and exiting 0."""
    kit.live_time_watch().judge("idle")


@pytest.mark.clause("CN-10")
def test_unacknowledged_node_stops_at_its_live_time(kit: Kit) -> None:
    """A node still waiting for its ACK stops at cn_start_time + cn_live_time, closing and exiting non-zero."""
    kit.live_time_watch().judge("unacknowledged")
