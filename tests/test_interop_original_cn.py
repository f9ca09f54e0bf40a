"""ORIGINAL compute nodes (skyllh==24.1.0) registering with our master.

``python -m skyllh.cluster.compute_node 127.0.0.1 PORT --live-time N`` runs
as a subprocess; our master is the library (MasterNode) or the CLI.  Every
scenario payload type is sent, and the original's printed lines are
compared exactly.  A mixed cluster adds our own compute nodes.  (Our compute
node with the original MasterNode is tested in
test_interop_original_master.py.)
"""

from __future__ import annotations

import pytest
from master_peers import (
    Background,
    expected_node_output,
    finish,
    wait_exit,
    start_compute_node,
    start_master_cli,
    wait_for,
)

from skyllh_cluster.master_node import MasterNode
from skyllh_cluster.scenario import SCENARIO_PAYLOADS

pytestmark = pytest.mark.interop

LIVE_TIME = 120


def serve_with_library(kinds):
    """Register one node of each kind with MasterNode, send every payload, shut down."""
    with MasterNode() as master:
        call = Background(lambda: master.register_compute_nodes(len(kinds), 0, host="127.0.0.1", timeout=60))
        host, port = wait_for(lambda: master.master_address, "the master to listen")
        processes = [start_compute_node(kind, host, port, LIVE_TIME) for kind in kinds]
        try:
            call.result(timeout=60)
            for payload in SCENARIO_PAYLOADS:
                assert master.send_request(payload).ok
            result = master.shutdown_compute_nodes()
            assert len(result.delivered) == len(kinds)
        finally:
            outcomes = [finish(process) for process in processes]
    return host, port, outcomes


def test_original_compute_nodes_get_every_payload_from_our_master_node():
    host, port, outcomes = serve_with_library(["original", "original"])
    for returncode, out, err in outcomes:
        assert returncode == 0, err
        assert out.splitlines() == expected_node_output(host, port, LIVE_TIME, SCENARIO_PAYLOADS)


def test_a_mixed_cluster_of_original_and_our_compute_nodes():
    kinds = ["original", "ours", "cli", "original"]
    host, port, outcomes = serve_with_library(kinds)
    for kind, (returncode, out, err) in zip(kinds, outcomes):
        assert returncode == 0, err
        assert out.splitlines() == expected_node_output(host, port, LIVE_TIME, SCENARIO_PAYLOADS, kind)


def test_original_compute_nodes_with_our_cli_master():
    lines = ["first job", "ünïcødé ✓", "", "{'trial': 3}"]
    kinds = ("original", "ours")
    master, stderr = start_master_cli("--host", "127.0.0.1", "--port", "0", "--n-cn", "2")
    try:
        port = int(stderr.wait_for(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))
        nodes = [start_compute_node(kind, "127.0.0.1", port, LIVE_TIME) for kind in kinds]
        stderr.wait_for(r"^all 2 compute nodes registered$")
        master.stdin.write("".join(f"{line}\n" for line in lines))
        master.stdin.close()
        outcomes = [finish(node) for node in nodes]
    finally:
        returncode = wait_exit(master)
    assert returncode == 0, stderr.rest()
    for kind, (node_returncode, out, err) in zip(kinds, outcomes):
        assert node_returncode == 0, err
        assert out.splitlines() == expected_node_output("127.0.0.1", port, LIVE_TIME, lines, kind)
    assert "sent ShutdownCN to 2 of 2 compute nodes" in stderr.rest()
