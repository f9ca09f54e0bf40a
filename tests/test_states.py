"""Invariants of the transition table in skyllh_cluster.protocol.states."""

from __future__ import annotations

import pytest

from skyllh_cluster.clauses import CLAUSES, Role
from skyllh_cluster.protocol import states
from skyllh_cluster.protocol.states import COMMAND_NAMES, INITIAL_STATE, TRANSITIONS, State, Transition

ROLES = (Role.MASTER, Role.COMPUTE_NODE)


def reachable(role: Role) -> set:
    seen, todo = set(), [INITIAL_STATE[role]]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        todo.extend(t.next_state for t in TRANSITIONS if t.role is role and t.state is state)
    return seen


@pytest.mark.parametrize("role", ROLES)
def test_every_state_a_role_uses_is_reachable_and_can_close(role: Role) -> None:
    used = {t.state for t in TRANSITIONS if t.role is role} | {t.next_state for t in TRANSITIONS if t.role is role}
    assert reachable(role) == used
    for state in used - states.FINAL_STATES:
        assert states.lookup(role, state, states.CLOSE).next_state is State.CLOSED


@pytest.mark.parametrize("role", ROLES)
def test_every_live_state_decides_every_received_command(role: Role) -> None:
    # A missing row would leave behaviour to the I/O layer; the table must decide.
    for state in reachable(role) - {State.CLOSED, State.ERROR}:
        for trigger in [*map(states.recv, COMMAND_NAMES), states.UNDECODABLE]:
            assert states.lookup(role, state, trigger) is not None, (role, state, trigger)


def test_only_the_master_sends_after_registration() -> None:
    sends = {(t.role, t.trigger) for t in TRANSITIONS if t.trigger.startswith("send ")}
    assert sends == {
        (Role.COMPUTE_NODE, "send RegisterCN"),
        (Role.MASTER, "send ACK"),
        (Role.MASTER, "send MSG"),
        (Role.MASTER, "send ShutdownCN"),
    }


def test_a_serving_node_skips_undecodable_frames_and_a_master_does_not() -> None:
    assert states.lookup(Role.COMPUTE_NODE, State.SERVING, states.UNDECODABLE).next_state is State.SERVING
    assert states.lookup(Role.MASTER, State.AWAIT_REGISTRATION, states.UNDECODABLE).next_state is State.ERROR


def test_rows_name_real_clauses_and_refuse_bad_roles() -> None:
    assert all(t.clause in CLAUSES for t in TRANSITIONS)
    with pytest.raises(ValueError, match="unknown clause"):
        Transition(Role.MASTER, State.SERVING, "x", State.SERVING, "NOPE-9")
    with pytest.raises(ValueError, match="MASTER or COMPUTE_NODE"):
        Transition(Role.ANY, State.SERVING, "x", State.SERVING, "ERR-1")


def test_refusal_clauses() -> None:
    assert states.refusal_clause(Role.MASTER, State.REGISTERED) == "MST-2"
    assert states.refusal_clause(Role.COMPUTE_NODE, State.SERVING) == "CN-5"
    assert states.refusal_clause(Role.MASTER, State.CLOSED) == "ERR-1"


def test_rows_for_a_role_are_read_only_and_match_lookup() -> None:
    rows = states.rows_for(Role.MASTER)
    assert rows[(State.REGISTERED, "send ACK")] is states.lookup(Role.MASTER, State.REGISTERED, "send ACK")
    with pytest.raises(TypeError):
        rows[(State.SERVING, "x")] = None  # type: ignore[index]
    assert states.send("Other") == "send Other" and states.recv("ACK") == "recv ACK"
