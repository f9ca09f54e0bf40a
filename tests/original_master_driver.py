"""Run the ORIGINAL master (``skyllh.cluster`` of skyllh==24.1.0) for the interop tests.

Usage::

    python tests/original_master_driver.py N_CN {scenario,exit}

The original ``MasterNode`` registers ``N_CN`` compute nodes on an ephemeral
port and then, with ``scenario``, sends ``MSG(p)`` for every ``p`` of
:data:`skyllh_cluster.scenario.SCENARIO_PAYLOADS` followed by ShutdownCN;
with ``exit`` it exits at once, so that its nodes see their master go away.

Lines on stdout tell the test where it stands:
``listening ADDRESS PORT``, ``registered N``, ``done``.

Only the original's own code runs the protocol here.  This script adds two
things around it: it learns the listening address (the original does not say
which port it got), and it keeps the master on loopback (see
:func:`keep_on_loopback`).
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from skyllh.cluster.master_node import MasterNode

from skyllh_cluster.scenario import SCENARIO_PAYLOADS

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def keep_on_loopback() -> None:
    """Make the original bind a loopback address.

    The original binds ``socket.getfqdn(socket.gethostname())``.  The tests
    may use only 127.0.0.0/8, so when that name does not resolve into it (or
    does not resolve at all), ``socket.getfqdn`` is replaced, in this process
    only, by one that answers ``127.0.0.1``.  Where the name already resolves
    to a loopback address it is left alone, so the original binds exactly
    what it would bind.
    """
    try:
        address = socket.gethostbyname(socket.getfqdn(socket.gethostname()))
    except OSError:
        address = None
    if address is None or ipaddress.ip_address(address) not in LOOPBACK:
        socket.getfqdn = lambda name="": "127.0.0.1"


class AnnouncingSocket(socket.socket):
    """A socket that prints its address once it listens, so the test knows where to connect."""

    def listen(self, *args: int) -> None:
        super().listen(*args)
        address, port = self.getsockname()[:2]
        print(f"listening {address} {port}", flush=True)


def main(argv: list) -> int:
    n_cn, then = int(argv[0]), argv[1]
    keep_on_loopback()
    socket.socket = AnnouncingSocket  # type: ignore[misc]  # this process only
    master = MasterNode()
    master.register_compute_nodes(n_cn=n_cn, master_port=0)
    print(f"registered {len(master.cn_registry)}", flush=True)
    if then == "scenario":
        for payload in SCENARIO_PAYLOADS:
            master.send_request(payload)
        master.shutdown_compute_nodes()
    master.clear_cn_registry()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
