"""The master's allow-list (spec/tls-profile.md, TLS-8), with real sources on loopback.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a client that
binds 127.0.0.2 before connecting to a master on 127.0.0.1 is a second host
for the master's purposes, without any namespace.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

import pytest
from master_peers import GOLDEN_ACK, WAIT, Background, RawNode, msg_frame, register_frame, wait_for

from skyllh_cluster.commands import MSG
from skyllh_cluster.master import MasterServer
from skyllh_cluster.master_node import MasterNode
from skyllh_cluster.tls import AllowList
from tls_peers import received_from

HOST = "127.0.0.1"
OUTSIDER = "127.0.0.2"


# -- the list itself ------------------------------------------------------------------------------


def test_allow_list_parses_networks_and_single_addresses():
    allow = AllowList.parse(" 10.0.0.0/8, 192.0.2.5 ,2001:db8::/32")
    assert "10.200.3.4" in allow
    assert "192.0.2.5" in allow
    assert "192.0.2.6" not in allow
    assert "2001:db8::1" in allow
    assert "::ffff:10.1.2.3" in allow  # an IPv4 peer on a dual-stack socket
    assert "fe80::1%eth0" not in allow
    assert "not an address" not in allow
    assert str(allow) == "10.0.0.0/8,192.0.2.5/32,2001:db8::/32"
    assert AllowList([ipaddress.ip_network("127.0.0.1/32")]).networks == (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.mark.parametrize("text", ["", " , ", "10.0.0.0/33", "example.org", "10.0.0.1/8/2"])
def test_allow_list_refuses_what_is_not_a_network(text):
    with pytest.raises(ValueError):
        AllowList.parse(text)


def test_the_error_does_not_echo_a_long_input():
    with pytest.raises(ValueError) as info:
        AllowList.parse("x" * 10000)
    assert len(str(info.value)) < 200


# -- the master --------------------------------------------------------------------------------------


def test_a_connection_from_outside_gets_nothing_and_costs_no_slot(caplog):
    caplog.set_level(logging.INFO, logger="skyllh_cluster.master.server")
    with MasterServer(allow=f"{HOST}/32") as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT))
        received = [received_from(address, OUTSIDER, register_frame()) for _ in range(3)]
        wait_for(lambda: master.refused == 3, "the master to refuse the three connections")
        assert master.connections == [] and master.nodes == []
        insider = RawNode(address)
        try:
            insider.register()
            assert insider.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
            assert [node.addr for node in registering.result()] == [HOST]
            assert master.broadcast(MSG("inside")).ok
            assert insider.read_exact(len(msg_frame("inside"))) == msg_frame("inside")
        finally:
            insider.close()
    assert received == [b"", b"", b""]
    refusals = [r for r in caplog.records if "outside the allow-list" in r.getMessage()]
    assert len(refusals) == 1, "logged once per source"
    assert OUTSIDER in refusals[0].getMessage()
    # Nothing else was logged about them: no "closed ... without ACK", no decoding.
    assert not [r for r in caplog.records if "without ACK" in r.getMessage()]


def test_the_refusal_log_is_bounded_over_many_sources(caplog, monkeypatch):
    import skyllh_cluster.master.server as server_module

    monkeypatch.setattr(server_module, "REFUSED_SOURCES_LOGGED", 2)
    caplog.set_level(logging.WARNING, logger="skyllh_cluster.master.server")
    with MasterServer(allow="127.0.0.1/32") as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT))
        sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.2"]
        for index, source in enumerate(sources, 1):
            assert received_from(address, source) == b""
            wait_for(lambda: master.refused == index, "the refusal")
        insider = RawNode(address)
        try:
            insider.register()
            assert insider.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
            registering.result()
        finally:
            insider.close()
    lines = [r.getMessage() for r in caplog.records if "allow-list" in r.getMessage()]
    assert len(lines) == 3, lines
    assert "no longer logging each" in lines[-1]


def test_master_node_takes_the_allow_list_as_a_parameter():
    with MasterNode(allow=[f"{HOST}/32"]) as master:
        registering = Background(lambda: master.register_compute_nodes(1, master_port=0, host=HOST, timeout=WAIT))
        address = wait_for(lambda: master.master_address, "the master to listen")
        assert received_from(address, OUTSIDER) == b""
        insider = RawNode(address)
        try:
            insider.register()
            assert insider.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
            registering.result()
            assert list(master.cn_registry) == [insider.key]
        finally:
            insider.close()


def test_master_node_refuses_a_bad_allow_list_at_once():
    with pytest.raises(ValueError, match="is not an IP address or network"):
        MasterNode(allow="10.0.0.0/99")
