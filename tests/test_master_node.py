"""The seed API (skyllh_cluster.master_node) over real sockets on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from master_peers import GOLDEN_ACK, GOLDEN_SHUTDOWN, WAIT, Background, RawNode, msg_frame, open_fds, wait_for

from skyllh_cluster.commands import ACK, MSG, ShutdownCN
from skyllh_cluster.errors import LocalProtocolError
from skyllh_cluster.master import PeerClosedError
from skyllh_cluster.master_node import (
    BroadcastError,
    BroadcastResult,
    CNRegistryEntry,
    MasterNode,
    RegistrationTimeout,
)


def start_registration(master: MasterNode, n_cn: int, **kwargs) -> Background:
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("timeout", WAIT)
    call = Background(lambda: master.register_compute_nodes(n_cn, 0, **kwargs))
    wait_for(lambda: master.master_address, "the master to listen")
    return call


def registered(master: MasterNode, count: int, **kwargs):
    call = start_registration(master, count, **kwargs)
    nodes = [RawNode(master.master_address).register() for _ in range(count)]
    call.result()
    for node in nodes:
        assert node.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
    return nodes


@pytest.fixture
def master():
    with MasterNode() as node:
        yield node


def test_registration_fills_the_registry_by_key(master):
    nodes = registered(master, 3)
    assert list(master.cn_registry) == [n.key for n in nodes]
    entry = master.cn_registry[nodes[0].key]
    assert isinstance(entry, CNRegistryEntry) and repr(entry) == f"<CNRegistryEntry {nodes[0].key}>"
    assert (entry.addr, entry.port) == tuple(nodes[0].sock.getsockname())
    assert entry.key == f"{entry.addr}:{entry.port}"
    assert entry.cn_live_time == 7200 and abs(entry.cn_start_time - time.time()) < 60
    assert entry.sock.getpeername() == nodes[0].sock.getsockname()
    assert master.master_address is None  # listening stopped after n_cn


def test_the_default_host_is_what_the_original_binds(monkeypatch):
    # The original binds getfqdn(gethostname()).  Here it must stay on
    # loopback, so the name resolves to 127.0.0.1 whatever this host is called.
    asked = []
    monkeypatch.setattr(socket, "getfqdn", lambda name="": asked.append(name) or "127.0.0.1")
    with MasterNode() as master:
        call = start_registration(master, 1, host=None)
        assert master.master_address[0] == "127.0.0.1"
        node = RawNode(master.master_address).register()
        call.result()
        assert node.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
    assert asked == [socket.gethostname()]


def test_cn_registry_must_be_a_dict(master):
    with pytest.raises(TypeError, match="must be of type dict"):
        master.cn_registry = []
    master.cn_registry = {}


def test_send_command_refuses_what_is_not_a_command(master):
    nodes = registered(master, 1)
    entry = master.cn_registry[nodes[0].key]
    with pytest.raises(TypeError, match="must be an instance of Command"):
        entry.send_command("MSG")
    entry.send_command(MSG("direct"))
    entry.send_command(ShutdownCN())
    assert nodes[0].read_to_eof() == msg_frame("direct") + GOLDEN_SHUTDOWN
    with pytest.raises(PeerClosedError):
        entry.send_command(MSG("after"))


def test_send_request_reaches_every_live_node_and_reports_the_dead(master, caplog):
    caplog.set_level(logging.WARNING)
    nodes = registered(master, 4)
    dead_key = nodes[2].key
    nodes[2].close()
    time.sleep(0.1)
    with pytest.raises(BroadcastError) as info:
        master.send_request("work")
    error = info.value
    assert isinstance(error, ConnectionError)  # as the original's ConnectionResetError was
    assert set(error.failures) == {dead_key}
    assert error.result.delivered == tuple(n.key for i, n in enumerate(nodes) if i != 2)
    assert dead_key in str(error) and "failed for 1" in str(error)
    for i, node in enumerate(nodes):
        if i != 2:
            assert node.read_exact(len(msg_frame("work"))) == msg_frame("work")
    assert dead_key not in master.cn_registry and len(master.cn_registry) == 3
    result = master.send_request(["next", 2])
    assert result == BroadcastResult("MSG", tuple(master.cn_registry), {}, ())


def test_shutdown_reaches_every_live_node_even_after_a_failure(master):
    nodes = registered(master, 3)
    dead_key = nodes[0].key
    nodes[0].abort()
    time.sleep(0.1)
    with pytest.raises(BroadcastError) as info:
        master.shutdown_compute_nodes()
    assert list(info.value.failures) == [dead_key]
    for node in nodes[1:]:
        assert node.read_to_eof() == GOLDEN_SHUTDOWN
    assert master.cn_registry == {}


def test_expired_nodes_leave_the_registry_and_get_nothing(master):
    call = start_registration(master, 2)
    live = RawNode(master.master_address).register()
    old = RawNode(master.master_address).register(start=int(time.time()) - 3600, live=60)
    call.result()
    result = master.send_request("x")
    assert result.expired == (old.key,) and result.delivered == (live.key,)
    assert list(master.cn_registry) == [live.key]
    assert old.read_to_eof() == GOLDEN_ACK
    assert live.read_exact(len(GOLDEN_ACK) + len(msg_frame("x"))) == GOLDEN_ACK + msg_frame("x")


def test_registration_timeout_keeps_the_registered_nodes(master):
    call = start_registration(master, 3, timeout=0.5)
    node = RawNode(master.master_address).register()
    with pytest.raises(RegistrationTimeout, match="only 1 of 3"):
        call.result()
    assert list(master.cn_registry) == [node.key]


def test_a_message_outside_the_value_subset_sends_nothing(master):
    nodes = registered(master, 1)
    with pytest.raises(LocalProtocolError):
        master.send_request(object())
    with pytest.raises(LocalProtocolError):
        master.send_request("x" * 70000)
    master.shutdown_compute_nodes()
    assert nodes[0].read_to_eof() == GOLDEN_SHUTDOWN


def test_clear_cn_registry_closes_every_connection(master):
    nodes = registered(master, 2)
    master.clear_cn_registry()
    assert master.cn_registry == {}
    for node in nodes:
        assert node.read_to_eof() == b""


def test_an_entry_taken_out_of_the_registry_is_closed_at_the_next_broadcast(master):
    nodes = registered(master, 2)
    del master.cn_registry[nodes[0].key]
    master.send_request("only one")
    assert nodes[0].read_to_eof() == b""
    assert nodes[1].read_exact(len(msg_frame("only one"))) == msg_frame("only one")


def test_a_registry_changed_between_broadcasts_is_what_the_next_one_sends_to(master):
    # A broadcast reuses the checks of the last one while the registry holds
    # the same entries; any change to it must be seen.
    nodes = registered(master, 3)
    master.send_request("all three")
    del master.cn_registry[nodes[0].key]
    master.send_request("two")
    raw, entry = hand_made_entry()
    master.cn_registry[entry.key] = entry
    master.send_request("two and one by hand")
    assert nodes[0].read_to_eof() == msg_frame("all three")
    for node in nodes[1:]:
        expected = msg_frame("all three") + msg_frame("two") + msg_frame("two and one by hand")
        assert node.read_exact(len(expected)) == expected
    assert raw.read_exact(len(msg_frame("two and one by hand"))) == msg_frame("two and one by hand")
    master.shutdown_compute_nodes()
    assert raw.read_to_eof() == GOLDEN_SHUTDOWN


def test_something_other_than_an_entry_in_the_registry_is_refused_before_sending(master):
    nodes = registered(master, 1)
    master.cn_registry["bogus"] = "not an entry"
    with pytest.raises(TypeError, match="not a CNRegistryEntry"):
        master.send_request("x")
    del master.cn_registry["bogus"]
    master.send_request("x")
    assert nodes[0].read_exact(len(msg_frame("x"))) == msg_frame("x")


def hand_made_entry():
    listener = socket.create_server(("127.0.0.1", 0))
    raw = RawNode(listener.getsockname())
    sock, (addr, port) = listener.accept()
    listener.close()
    return raw, CNRegistryEntry(sock, addr, port, time.time(), 600)


def test_a_hand_made_entry_sends_blocking_and_joins_a_broadcast():
    raw, entry = hand_made_entry()
    assert entry.cn_live_time == 600 and entry.key == f"127.0.0.1:{entry.port}"
    entry.send_command(MSG("by hand"))
    with pytest.raises(LocalProtocolError):
        entry.send_command(ACK())  # the state still applies
    with MasterNode() as master:
        master.cn_registry = {entry.key: entry}
        assert master.send_request("together").delivered == (entry.key,)
        master.shutdown_compute_nodes()
    assert raw.read_to_eof() == msg_frame("by hand") + msg_frame("together") + GOLDEN_SHUTDOWN


def test_a_hand_made_entry_closes_after_shutdowncn():
    raw, entry = hand_made_entry()
    entry.send_command(ShutdownCN())
    assert raw.read_to_eof() == GOLDEN_SHUTDOWN
    with MasterNode() as master:
        master.cn_registry = {entry.key: entry}
        with pytest.raises(BroadcastError):
            master.send_request("late")


def test_clear_closes_hand_made_entries_too():
    raw, entry = hand_made_entry()
    master = MasterNode()
    master.cn_registry = {entry.key: entry}
    master.clear_cn_registry()
    assert raw.read_to_eof() == b""


def test_the_port_can_be_reused_at_once(master):
    nodes = registered(master, 1)
    first_port = nodes[0].sock.getpeername()[1]
    master.shutdown_compute_nodes()
    assert nodes[0].read_to_eof() == GOLDEN_SHUTDOWN
    # The master closed first, so its side lingers in TIME_WAIT; SO_REUSEADDR
    # lets a new registration bind the same port (the original could not).
    call = Background(lambda: master.register_compute_nodes(1, first_port, host="127.0.0.1", timeout=WAIT))
    wait_for(lambda: master.master_address, "the master to listen again")
    again = RawNode(("127.0.0.1", first_port)).register()
    call.result()
    assert again.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK


def test_descriptors_are_back_to_their_count_after_close():
    before = open_fds()
    master = MasterNode()
    nodes = registered(master, 3)
    master.shutdown_compute_nodes()
    master.close()
    master.close()
    for node in nodes:
        node.read_to_eof()
        node.close()
    assert open_fds() == before


def test_a_broadcast_with_no_registration_yet_is_empty():
    with MasterNode() as master:
        assert master.send_request("nobody") == BroadcastResult("MSG")
