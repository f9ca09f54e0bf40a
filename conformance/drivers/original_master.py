"""Run the ORIGINAL master (``skyllh.cluster`` of skyllh==24.1.0) as a scenario master.

Usage::

    python -m skyllh_cluster.conformance.drivers.original_master --port 0

prints ``listening on HOST:PORT`` on stderr and then serves the conformance
scenario for as long as it runs, with nothing but the original's own API: a
loop of ``register_compute_nodes(n_cn=1, master_port=P)``, then
``send_request(p)`` for each scenario payload, then
``shutdown_compute_nodes()`` and ``clear_cn_registry()``, which closes the
node's socket.

The driver changes nothing in how the original speaks the protocol.  Around
it, it does three things, each for the harness and not the protocol:

* it keeps the original on loopback: the original binds
  ``socket.getfqdn(socket.gethostname())``; where that name does not resolve
  into 127.0.0.0/8, ``socket.getfqdn`` is replaced (in this process only) by
  one that answers ``127.0.0.1``;
* it sets ``SO_REUSEADDR`` on the original's listening socket, so that it can
  bind the same port again for the next node although the previous node's
  connection is still in TIME_WAIT (the original does not; a user of the
  original picks a new port or waits);
* an exception from one round (the original raises on a bad first frame, a
  closed connection or a broken pipe) is logged and the loop goes on with the
  next round: the original's users would otherwise restart it.

``--port 0`` picks a free port once; the driver binds that same port for
every round.  The driver requires ``skyllh==24.1.0`` (the ``test`` extra).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import sys
import types
from typing import Any, List, Optional

from skyllh_cluster.scenario import SCENARIO_PAYLOADS

from .process import MasterProcess, address_pattern

__all__ = ["main", "original_master", "command"]

logger = logging.getLogger(__name__)

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def _loopback_host() -> str:
    """What the original will bind: its FQDN if that is loopback, else 127.0.0.1."""
    name = socket.getfqdn(socket.gethostname())
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = None
    if address is not None and ipaddress.ip_address(address) in LOOPBACK:
        return name
    return "127.0.0.1"


def _socket_module_for_original(host: str) -> types.ModuleType:
    """A stand-in for ``socket`` inside the original's master module.

    It is the real module in everything except: ``getfqdn`` answers ``host``
    (loopback, see :func:`_loopback_host`), and new sockets get
    ``SO_REUSEADDR`` before the original binds them.
    """
    shim = types.ModuleType("socket")
    shim.__dict__.update(socket.__dict__)

    class ReusableSocket(socket.socket):
        def bind(self, address: Any) -> None:
            self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            super().bind(address)

    shim.socket = ReusableSocket  # type: ignore[attr-defined]
    shim.getfqdn = lambda name="": host  # type: ignore[attr-defined]
    return shim


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def serve(port: int, rounds: Optional[int] = None) -> None:
    """Serve the scenario with the original ``MasterNode`` (forever by default)."""
    from skyllh.cluster import master_node  # the original, from skyllh==24.1.0

    host = _loopback_host()
    master_node.socket = _socket_module_for_original(host)  # type: ignore[attr-defined]
    if port == 0:
        port = _free_port(host)
    print(f"listening on {socket.gethostbyname(host)}:{port}", file=sys.stderr, flush=True)
    master = master_node.MasterNode()
    served = 0
    while rounds is None or served < rounds:
        served += 1
        try:
            master.register_compute_nodes(n_cn=1, master_port=port)
            for payload in SCENARIO_PAYLOADS:
                master.send_request(payload)
            master.shutdown_compute_nodes()
            master.clear_cn_registry()
        except Exception as exc:  # noqa: BLE001 - the original raises anything; log it and go on
            logger.warning("round %d ended with %s: %s", served, type(exc).__name__, exc)
            master.clear_cn_registry()


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: ``--port P`` (0: pick one), ``--rounds N`` (default: forever)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: 0, pick a free one)")
    parser.add_argument("--rounds", type=int, default=None, help="stop after this many nodes (default: never)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="original master driver: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(args.port, args.rounds)
    except KeyboardInterrupt:
        pass
    return 0


def command(port: int = 0) -> List[str]:
    """The driver's command line with this interpreter."""
    return [sys.executable, "-m", "skyllh_cluster.conformance.drivers.original_master", "--port", str(port)]


def original_master(port: int = 0) -> MasterProcess:
    """A context manager running the driver; ``.target`` is its ``HOST:PORT``."""
    return MasterProcess(command(port), address_pattern("listening on"))


if __name__ == "__main__":
    sys.exit(main())
