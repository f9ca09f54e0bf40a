"""Across hosts: master and compute nodes in two network namespaces joined by a veth pair.

The test creates two namespaces of its own, links them with a veth pair and
gives the two ends addresses of 10.213.0.0/30, which exist only inside
those namespaces.  The CLI master listens in one; our compute node and the
original one run in the other, so every registration crosses the virtual
link.  The namespaces (and with them the veth pair) are always deleted.
It needs root and a working ``ip netns``; otherwise it is skipped, saying
which of the two is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
from master_peers import expected_node_output, finish, start_compute_node, start_master_cli, wait_exit

pytestmark = pytest.mark.netns

MASTER_ADDRESS = "10.213.0.1"
NODE_ADDRESS = "10.213.0.2"
PREFIX = 30


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def namespaces_unavailable() -> str:
    """Why namespaces cannot be made here, or "" when they can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"skc-probe-{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"ip netns add failed: {exc.stderr.decode(errors='replace').strip()}"
    ip("netns", "delete", probe)
    return ""


@pytest.fixture
def linked_namespaces():
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    master_ns, node_ns = f"skc-m-{tag}", f"skc-n-{tag}"
    created = []
    try:
        for ns in (master_ns, node_ns):
            ip("netns", "add", ns)
            created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", master_ns, "link", "add", f"vm{tag}", "type", "veth", "peer", "name", f"vn{tag}", "netns", node_ns)
        for ns, device, address in ((master_ns, f"vm{tag}", MASTER_ADDRESS), (node_ns, f"vn{tag}", NODE_ADDRESS)):
            ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", device)
            ip("-n", ns, "link", "set", device, "up")
        yield master_ns, node_ns
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)


def test_registration_and_broadcast_cross_a_veth_pair(linked_namespaces):
    master_ns, node_ns = linked_namespaces
    lines = ["across the veth", "ünïcødé"]
    master, stderr = start_master_cli(
        "--host", MASTER_ADDRESS, "--port", "0", "--n-cn", "2", prefix=("ip", "netns", "exec", master_ns)
    )
    nodes = []
    try:
        port = int(stderr.wait_for(rf"^listening on {MASTER_ADDRESS}:(\d+)$").group(1))
        prefix = ("ip", "netns", "exec", node_ns)
        nodes = [start_compute_node(kind, MASTER_ADDRESS, port, 60, prefix=prefix) for kind in ("cli", "original")]
        stderr.wait_for(rf"^registered 1/2 \({NODE_ADDRESS}:\d+\)$")
        stderr.wait_for(rf"^registered 2/2 \({NODE_ADDRESS}:\d+\)$")
        master.stdin.write("".join(f"{line}\n" for line in lines))
        master.stdin.close()
        outcomes = [finish(node) for node in nodes]
        returncode = wait_exit(master)
    finally:
        for process in (master, *nodes):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert returncode == 0, stderr.rest()
    for kind, (node_returncode, out, err) in zip(("cli", "original"), outcomes):
        assert node_returncode == 0, err
        assert out.splitlines() == expected_node_output(MASTER_ADDRESS, port, 60, lines, kind)
