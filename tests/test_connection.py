"""The sans-I/O Connection of both roles, driven by bytes only.

In the h11 way, every reader is fed the whole input at once, byte by byte,
and with trailing data; every error says whose fault it is.
"""

from __future__ import annotations

from typing import List

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from skyllh_cluster.clauses import Role
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN
from skyllh_cluster.errors import LocalProtocolError, RemoteProtocolError
from skyllh_cluster.protocol import NEED_DATA, Connection, ConnectionClosed, State, UndecodableFrame, encode_command_frame
from skyllh_cluster.scenario import SCENARIO_PAYLOADS

# Golden frames, as the original sends them (shared/original-skyllh-cluster.md).
ACK_FRAME = bytes.fromhex(
    "310080049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e"
)
REGISTER_FRAME = bytes.fromhex(
    "66008004955b000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a5265676973746572434e9493"
    "942981947d94288c0e5f636e5f73746172745f74696d65944a80c444678c0d5f636e5f6c6976655f74696d65944d201c75622e"
)
SHUTDOWN_FRAME = bytes.fromhex(
    "38008004952d000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a53687574646f776e434e9493942981942e"
)
GARBAGE_FRAME = b"\x05\x00hello"


def events(conn: Connection) -> List[object]:
    out = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return out


def feed_in_pieces(conn: Connection, data: bytes, piece: int) -> List[object]:
    out: List[object] = []
    for i in range(0, len(data), piece):
        conn.receive_data(data[i : i + piece])
        out.extend(events(conn))
    return out


def test_golden_frames_both_ways() -> None:
    node, master = Connection(Role.COMPUTE_NODE), Connection(Role.MASTER)
    assert node.send(RegisterCN(1732560000, 7200)) == REGISTER_FRAME
    master.receive_data(REGISTER_FRAME)
    assert events(master) == [RegisterCN(1732560000, 7200)]
    assert master.state is State.REGISTERED
    assert master.send(ACK()) == ACK_FRAME
    node.receive_data(ACK_FRAME)
    assert events(node) == [ACK()] and node.state is State.SERVING
    assert master.send(ShutdownCN()) == SHUTDOWN_FRAME


@pytest.mark.parametrize("piece", [1, 2, 5, 100_000])
def test_whole_scenario_whole_and_in_pieces(piece: int) -> None:
    master = Connection(Role.MASTER)
    master.receive_data(REGISTER_FRAME)
    assert events(master) == [RegisterCN(1732560000, 7200)]
    stream = master.send(ACK())
    stream += b"".join(master.send(MSG(p)) for p in SCENARIO_PAYLOADS)
    stream += master.send(ShutdownCN())
    assert master.state is State.SHUT_DOWN

    node = Connection(Role.COMPUTE_NODE, start_time=1732560000, live_time=7200)
    node.send(RegisterCN(1732560000, 7200))
    got = feed_in_pieces(node, stream, piece)
    assert got == [ACK(), *(MSG(p) for p in SCENARIO_PAYLOADS), ShutdownCN()]
    assert node.state is State.SHUT_DOWN
    node.receive_data(b"")
    assert events(node) == [ConnectionClosed()] and node.state is State.CLOSED
    assert node.next_event() == ConnectionClosed()  # and it stays closed


def test_trailing_data_stays_for_the_next_call() -> None:
    node = Connection(Role.COMPUTE_NODE)
    node.send(RegisterCN(1732560000, 7200))
    node.receive_data(ACK_FRAME + ACK_FRAME[:3])
    assert node.next_event() == ACK()
    assert node.next_event() is NEED_DATA
    assert node.in_frame


def test_master_refuses_a_wrong_first_command_and_stays_failed() -> None:
    master = Connection(Role.MASTER)
    master.receive_data(encode_command_frame(MSG("hi")))
    with pytest.raises(RemoteProtocolError) as info:
        master.next_event()
    assert (info.value.clause, info.value.offset) == ("MST-3", 0)
    assert master.state is State.ERROR
    with pytest.raises(RemoteProtocolError) as again:
        master.next_event()
    assert again.value is info.value
    with pytest.raises(LocalProtocolError):
        master.send(ACK())
    master.close()
    assert master.state is State.CLOSED


def test_master_refuses_an_undecodable_first_frame_with_the_decoder_s_reason() -> None:
    master = Connection(Role.MASTER)
    master.receive_data(GARBAGE_FRAME)
    with pytest.raises(RemoteProtocolError) as info:
        master.next_event()
    assert info.value.clause.startswith("ENC-")
    assert info.value.offset is not None and info.value.offset >= 2  # an offset in the stream
    assert "MST-3" in info.value.reason


def test_bytes_that_come_with_the_registration_get_no_ack() -> None:
    master = Connection(Role.MASTER)
    master.receive_data(REGISTER_FRAME + REGISTER_FRAME)
    with pytest.raises(RemoteProtocolError) as info:
        master.next_event()
    assert (info.value.clause, info.value.offset) == ("MST-11", 0)
    assert master.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        master.send(ACK())


@pytest.mark.parametrize("extra", [b"\x00", REGISTER_FRAME[:1], GARBAGE_FRAME])
def test_even_one_byte_after_the_registration_is_refused(extra: bytes) -> None:
    master = Connection(Role.MASTER)
    master.receive_data(REGISTER_FRAME + extra)
    with pytest.raises(RemoteProtocolError) as info:
        master.next_event()
    assert info.value.clause == "MST-11"


def test_compute_node_sends_nothing_after_registering() -> None:
    master = Connection(Role.MASTER)
    master.receive_data(REGISTER_FRAME)
    assert master.next_event() == RegisterCN(1732560000, 7200)
    master.send(ACK())
    master.receive_data(REGISTER_FRAME)
    with pytest.raises(RemoteProtocolError) as info:
        master.next_event()
    assert (info.value.clause, info.value.offset) == ("MST-11", len(REGISTER_FRAME))


def test_serving_node_skips_undecodable_frames_and_ignores_unhandled_commands() -> None:
    node = Connection(Role.COMPUTE_NODE)
    node.send(RegisterCN(1, 100))
    node.receive_data(ACK_FRAME + GARBAGE_FRAME + ACK_FRAME + REGISTER_FRAME + encode_command_frame(MSG(1)))
    got = events(node)
    assert got[0] == ACK()
    assert isinstance(got[1], UndecodableFrame) and got[1].payload == b"hello"
    assert got[1].error.offset >= len(ACK_FRAME) + 2
    assert got[2:] == [ACK(), RegisterCN(1732560000, 7200), MSG(1)]
    assert node.state is State.SERVING


@pytest.mark.parametrize("reply", [encode_command_frame(MSG("no")), SHUTDOWN_FRAME, REGISTER_FRAME, GARBAGE_FRAME])
def test_node_does_not_carry_on_without_an_ack(reply: bytes) -> None:
    node = Connection(Role.COMPUTE_NODE)
    node.send(RegisterCN(1, 100))
    node.receive_data(reply)
    with pytest.raises(RemoteProtocolError) as info:
        node.next_event()
    # A command names CN-4 itself; an undecodable reply names the decoder's
    # clause and says that CN-4 ended the connection.
    assert info.value.clause == "CN-4" or info.value.reason.endswith("(CN-4)")
    assert node.state is State.ERROR


def test_master_speaks_only_after_registration_and_not_after_shutdown() -> None:
    node = Connection(Role.COMPUTE_NODE)
    node.receive_data(ACK_FRAME)
    with pytest.raises(RemoteProtocolError) as info:
        node.next_event()
    assert info.value.clause == "MST-2"

    node = Connection(Role.COMPUTE_NODE)
    node.send(RegisterCN(1, 100))
    node.receive_data(ACK_FRAME + SHUTDOWN_FRAME + encode_command_frame(MSG(1)))
    assert events_until_error(node) == [ACK(), ShutdownCN()]


def events_until_error(conn: Connection) -> List[object]:
    got: List[object] = []
    with pytest.raises(RemoteProtocolError) as info:
        while True:
            got.append(conn.next_event())
    assert info.value.clause == "MST-5"
    return got


@pytest.mark.parametrize(
    "role, setup, command, clause",
    [
        (Role.MASTER, [], ACK(), "MST-2"),
        (Role.MASTER, [REGISTER_FRAME], MSG(1), "MST-2"),
        (Role.MASTER, [REGISTER_FRAME, ACK()], ACK(), "MST-5"),
        (Role.MASTER, [REGISTER_FRAME, ACK(), ShutdownCN()], MSG(1), "MST-5"),
        (Role.COMPUTE_NODE, [], ACK(), "CN-1"),
        (Role.COMPUTE_NODE, [RegisterCN(1, 2)], RegisterCN(1, 2), "CN-5"),
        (Role.COMPUTE_NODE, [RegisterCN(1, 2), ACK_FRAME], MSG(1), "CN-5"),
    ],
)
def test_sending_out_of_turn_is_a_local_error_that_changes_nothing(role, setup, command, clause) -> None:
    conn = Connection(role)
    for step in setup:
        if isinstance(step, bytes):
            conn.receive_data(step)
            events(conn)
        else:
            conn.send(step)
    before = conn.state
    with pytest.raises(LocalProtocolError) as info:
        conn.send(command)
    assert info.value.clause == clause
    assert conn.state is before


def test_a_message_too_large_for_a_frame_changes_nothing() -> None:
    master = Connection(Role.MASTER)
    master.receive_data(REGISTER_FRAME)
    events(master)
    master.send(ACK())
    with pytest.raises(LocalProtocolError) as info:
        master.send(MSG("x" * 70000))
    assert info.value.clause == "FRM-2"
    assert master.state is State.SERVING
    assert master.send(MSG("fits")) == encode_command_frame(MSG("fits"))


def test_broadcast_frames_are_encoded_once_by_the_caller() -> None:
    frame = encode_command_frame(MSG("all"))
    masters = [Connection(Role.MASTER) for _ in range(3)]
    for master in masters:
        master.receive_data(REGISTER_FRAME)
        events(master)
        master.send(ACK())
        assert master.send(MSG("all"), frame=frame) is frame


def test_only_commands_can_be_sent() -> None:
    class Impostor(MSG):
        pass

    with pytest.raises(TypeError):
        Connection(Role.COMPUTE_NODE).send("RegisterCN")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Connection(Role.MASTER).send(Impostor(1))


def test_role_must_be_a_connection_role() -> None:
    with pytest.raises(ValueError):
        Connection(Role.ANY)


def test_live_time_from_the_registration_or_the_constructor() -> None:
    master = Connection(Role.MASTER)
    assert master.deadline is None and not master.expire_if_due(10**12)
    master.receive_data(REGISTER_FRAME)
    events(master)
    assert master.registration == RegisterCN(1732560000, 7200)
    assert master.deadline == 1732560000 + 7200
    master.send(ACK())
    assert not master.expire_if_due(1732560000 + 7199)
    assert master.expire_if_due(1732560000 + 7200)
    assert master.state is State.EXPIRED
    with pytest.raises(LocalProtocolError):
        master.send(MSG("too late"))
    assert not master.expire_if_due(1732560000 + 9999)  # no second transition

    node = Connection(Role.COMPUTE_NODE, start_time=100.5, live_time=10)
    node.send(RegisterCN(100, 10))
    assert node.deadline == 110.5
    assert node.expire_if_due(111)
    node.receive_data(ACK_FRAME)
    with pytest.raises(RemoteProtocolError) as info:
        node.next_event()
    assert info.value.clause == "MST-9"


def test_registration_without_a_constructor_deadline() -> None:
    node = Connection(Role.COMPUTE_NODE)
    node.send(RegisterCN(50, 5))
    assert node.registration == RegisterCN(50, 5) and node.deadline == 55


def test_peer_closing_mid_frame_is_an_error_between_frames_is_not() -> None:
    master = Connection(Role.MASTER)
    master.receive_data(REGISTER_FRAME[:10])
    master.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        master.next_event()
    assert (info.value.clause, info.value.offset) == ("FRM-5", 0)

    master = Connection(Role.MASTER)
    master.receive_data(b"")
    assert master.next_event() == ConnectionClosed()
    assert master.state is State.CLOSED


def test_repr() -> None:
    assert repr(Connection(Role.MASTER)) == "<Connection MASTER AWAIT_REGISTRATION>"


def test_undecodable_frame_event_checks_its_fields() -> None:
    from skyllh_cluster.errors import ProtocolError

    with pytest.raises(TypeError):
        UndecodableFrame("not an error", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        UndecodableFrame(ProtocolError("ENC-1", "x"), "not bytes")  # type: ignore[arg-type]
    assert repr(NEED_DATA) == "NEED_DATA"


def test_need_data_is_one_sentinel_even_through_copying() -> None:
    import copy
    import pickle

    from skyllh_cluster.protocol import NeedData

    assert NeedData() is NEED_DATA
    assert copy.deepcopy(NEED_DATA) is NEED_DATA
    assert pickle.loads(pickle.dumps(NEED_DATA)) is NEED_DATA


def serving_master(start_time: int = 1732560000, live_time: int = 7200) -> Connection:
    master = Connection(Role.MASTER)
    master.receive_data(encode_command_frame(RegisterCN(start_time, live_time)))
    events(master)
    master.send(ACK())
    return master


def test_plan_broadcast_matches_one_send_per_connection() -> None:
    plan_broadcast = Connection.plan_broadcast

    fresh = Connection(Role.MASTER)  # not registered: the ACK comes first
    due = serving_master(live_time=10)  # its live time is over at `now`
    done = serving_master()
    done.send(ShutdownCN())
    ready = [serving_master(), serving_master()]
    conns = [ready[0], fresh, due, done, ready[1]]
    plan = plan_broadcast(conns, MSG("all"), now=1732560000 + 100)
    assert plan.frame == encode_command_frame(MSG("all"))
    assert plan.sendable == [0, 4] and plan.expired == [2]
    assert [(i, e.clause) for i, e in plan.refused] == [(1, "MST-2"), (3, "MST-5")]
    assert [c.state for c in conns] == [State.SERVING, State.AWAIT_REGISTRATION, State.EXPIRED, State.SHUT_DOWN, State.SERVING]
    # Exactly what Connection.send would have refused, and nothing changed there.
    for index, error in plan.refused:
        with pytest.raises(LocalProtocolError) as info:
            conns[index].send(MSG("all"))
        assert str(info.value) == str(error)


def test_plan_broadcast_moves_states_and_records_registrations() -> None:
    plan_broadcast = Connection.plan_broadcast

    masters = [serving_master() for _ in range(3)]
    plan = plan_broadcast(masters, ShutdownCN(), now=0)
    assert plan.sendable == [0, 1, 2] and all(m.state is State.SHUT_DOWN for m in masters)

    nodes = [Connection(Role.COMPUTE_NODE) for _ in range(2)]
    plan = plan_broadcast(nodes, RegisterCN(7, 8), now=0)
    assert plan.sendable == [0, 1]
    assert all(n.registration == RegisterCN(7, 8) and n.deadline == 15 for n in nodes)


# A connection of each kind a master or a compute node may hold when it broadcasts.
COHORT_KINDS = {
    "serving": lambda: serving_master(),
    "serving, live time over": lambda: serving_master(live_time=10),
    "not registered": lambda: Connection(Role.MASTER),
    "shut down": lambda: _shut_down(serving_master()),
    "compute node, fresh": lambda: Connection(Role.COMPUTE_NODE),
    "compute node, timed": lambda: Connection(Role.COMPUTE_NODE, start_time=1732560000, live_time=50),
}
NOW = 1732560000 + 100


def _shut_down(master: Connection) -> Connection:
    master.send(ShutdownCN())
    return master


def _one_by_one(conns: List[Connection], command: object, now: float) -> tuple:
    """What plan_broadcast must amount to: expire_if_due, then send, per connection."""
    sendable, expired, refused = [], [], []
    for index, conn in enumerate(conns):
        if conn.expire_if_due(now):
            expired.append(index)
            continue
        try:
            conn.send(command)  # type: ignore[arg-type]
        except LocalProtocolError as exc:
            refused.append((index, str(exc)))
        else:
            sendable.append(index)
    return sendable, expired, refused


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(sorted(COHORT_KINDS)), max_size=12),
    command=st.sampled_from([MSG("all"), ShutdownCN(), ACK(), RegisterCN(7, 8)]),
)
@example(kinds=["serving"] * 3, command=MSG("all"))  # the fast path: one state, none due
@example(kinds=["serving"] * 2 + ["serving, live time over"], command=MSG("all"))  # one due: the full loop
@example(kinds=["not registered"] * 2, command=MSG("all"))  # one state that refuses
def test_plan_broadcast_equals_expire_then_send_on_each_connection(kinds: List[str], command: object) -> None:
    plan_broadcast = Connection.plan_broadcast

    planned = [COHORT_KINDS[kind]() for kind in kinds]
    alone = [COHORT_KINDS[kind]() for kind in kinds]
    plan = plan_broadcast(planned, command, now=NOW)  # type: ignore[arg-type]
    sendable, expired, refused = _one_by_one(alone, command, NOW)
    assert (plan.sendable, plan.expired) == (sendable, expired)
    assert [(index, str(error)) for index, error in plan.refused] == refused
    assert [c.state for c in planned] == [c.state for c in alone]
    assert [(c.registration, c.deadline) for c in planned] == [(c.registration, c.deadline) for c in alone]


def test_plan_broadcast_refuses_what_is_not_a_command_or_does_not_encode() -> None:
    plan_broadcast = Connection.plan_broadcast

    master = serving_master()
    with pytest.raises(TypeError):
        plan_broadcast([master], "MSG", now=0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError) as info:
        plan_broadcast([master], MSG("x" * 70000), now=0)
    assert info.value.clause == "FRM-2" and master.state is State.SERVING


def test_transitions_are_logged_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.DEBUG, logger="skyllh_cluster.protocol.connection"):
        Connection(Role.COMPUTE_NODE).send(RegisterCN(1, 2))
    assert "COMPUTE_NODE: CONNECTED --send RegisterCN--> AWAIT_ACK" in caplog.text


def test_a_connection_registered_elsewhere_is_serving_with_its_registration() -> None:
    registration = RegisterCN(1732560000, 100)
    master = Connection.registered_elsewhere(registration)
    assert master.role is Role.MASTER and master.state is State.SERVING
    assert master.registration == registration
    assert master.deadline == 1732560100
    assert master.send(MSG("go")) == encode_command_frame(MSG("go"))


def test_registered_elsewhere_takes_only_a_registercn() -> None:
    with pytest.raises(TypeError):
        Connection.registered_elsewhere(MSG(1))  # type: ignore[arg-type]
