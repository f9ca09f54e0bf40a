"""The TLS profile across hosts: a mutual-TLS master with an allow-list in one network namespace, nodes in another.

Uses the namespaces and veth pair of ``tests/test_netns.py`` (root and
``ip netns`` needed, else skipped).  The master's certificate names its
address on the veth link, 10.213.0.1; the nodes run the CLI with their TLS
options.  A node with a certificate from another CA and a plain node are
refused and exit 1 with one line, taking no slot; the good node then
registers, gets the line sent, and shuts down.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from master_peers import expected_node_output, finish, start_master_cli, subprocess_env, wait_exit
from test_netns import MASTER_ADDRESS, NODE_ADDRESS, linked_namespaces  # noqa: F401 - the fixture

tls_certs = pytest.importorskip("tls_certs")
if tls_certs.OPENSSL is None:  # pragma: no cover
    pytest.skip("the openssl command is not installed", allow_module_level=True)

pytestmark = pytest.mark.netns


def run_node(node_ns, port, *tls_args):
    return subprocess.Popen(
        ["ip", "netns", "exec", node_ns, sys.executable, "-m", "skyllh_cluster", "compute-node",
         MASTER_ADDRESS, str(port), "--live-time", "60", *tls_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", env=subprocess_env(),
    )


def test_mutual_tls_and_the_allow_list_across_a_veth_pair(linked_namespaces, tmp_path):  # noqa: F811
    master_ns, node_ns = linked_namespaces
    tls_certs.make_pki(tmp_path)
    tls_certs.issue(tmp_path, "veth-master", "ca", "serverAuth", f"IP:{MASTER_ADDRESS}")
    pki = {path.name: str(path) for path in tmp_path.iterdir()}
    master, stderr = start_master_cli(
        "--host", MASTER_ADDRESS, "--port", "0", "--n-cn", "1", "--timeout", "60",
        "--allow", f"{NODE_ADDRESS}/32",
        "--tls-cert", pki["veth-master.pem"], "--tls-key", pki["veth-master.key"],
        "--tls-ca", pki["ca.pem"], "--tls-require-client-cert",
        prefix=("ip", "netns", "exec", master_ns),
    )
    nodes = []
    try:
        port = int(stderr.wait_for(rf"^listening on {MASTER_ADDRESS}:(\d+)$").group(1))
        refused = [
            run_node(node_ns, port, "--tls-ca", pki["ca.pem"], "--tls-cert", pki["other-node.pem"],
                     "--tls-key", pki["other-node.key"]),
            run_node(node_ns, port),
        ]
        nodes += refused
        outcomes = [finish(node) for node in refused]
        good = run_node(node_ns, port, "--tls-ca", pki["ca.pem"], "--tls-cert", pki["node.pem"],
                        "--tls-key", pki["node.key"])
        nodes.append(good)
        stderr.wait_for(rf"^registered 1/1 \({NODE_ADDRESS}:\d+\)$")
        master.stdin.write("across the veth, inside TLS\n")
        master.stdin.close()
        good_outcome = finish(good)
        returncode = wait_exit(master)
    finally:
        for process in (master, *nodes):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert returncode == 0, stderr.rest()
    for node_returncode, out, err in outcomes:
        assert node_returncode == 1 and out == ""
        assert len(err.splitlines()) == 1 and "TLS" in err, err
    good_returncode, out, err = good_outcome
    assert good_returncode == 0, err
    assert out.splitlines() == expected_node_output(MASTER_ADDRESS, port, 60, ["across the veth, inside TLS"], "cli")
