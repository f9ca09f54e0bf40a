"""The ``skyllh-cluster`` command (also ``python -m skyllh_cluster``).

Two subcommands: ``compute-node`` runs one compute node with the original's
arguments; ``master`` registers compute nodes and broadcasts standard input
to them, or serves the conformance scenario.  This is the only module of
the package that prints; the library logs through :mod:`logging`, which the
``--log-level`` option sends to standard error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import ssl
import sys
from typing import IO, Any, List, Optional, Sequence

from . import __version__
from . import compute_node
from .commands import MSG
from .errors import ProtocolError
from .master.node import Node
from .master.reports import BroadcastResult, RegistrationTimeout
from .master.server import MasterServer
from .scenario import SCENARIO_PAYLOADS
from .tls import AllowList, server_context

__all__ = [
    "main",
    "build_parser",
    "EXIT_OK",
    "EXIT_NODES_FAILED",
    "EXIT_USAGE",
    "EXIT_REGISTRATION_TIMEOUT",
    "EXIT_CANNOT_LISTEN",
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
]

#: Every node registered and was sent every message and the ShutdownCN.
EXIT_OK = 0
#: Some node failed (reported on stderr); every other node was served.
EXIT_NODES_FAILED = 1
#: The command line was wrong (argparse's status).
EXIT_USAGE = 2
#: ``--timeout`` passed before ``--n-cn`` nodes registered.
EXIT_REGISTRATION_TIMEOUT = 3
#: The master could not listen: the port is in use, the address is not
#: this host's, or the host name does not resolve.  Not a verdict on nodes.
EXIT_CANNOT_LISTEN = 4
#: An unexpected error inside the master (a defect; ``--log-level debug``
#: shows its traceback).  Not a verdict on nodes.
EXIT_INTERNAL_ERROR = 5
#: Interrupted with Ctrl-C while registering or broadcasting.
EXIT_INTERRUPTED = 130

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

_DESCRIPTION = """\
Run a node of the SkyLLH cluster protocol: a compute node, or a master that
compute nodes register with.  Speaks the same bytes as skyllh.cluster
(skyllh<=24.1.0), but never unpickles what it receives."""

_EPILOG = """\
examples:
  # a master for 3 compute nodes; every line typed becomes a MSG, Ctrl-D shuts them down
  skyllh-cluster master --host 0.0.0.0 --port 9999 --n-cn 3

  # on each compute node host (the original's arguments)
  skyllh-cluster compute-node master.example.org 9999 --live-time 3600

  # the TLS profile with mutual TLS, and only nodes from 10.1.0.0/16 (see the README)
  skyllh-cluster master --host master.example.org --n-cn 3 --allow 10.1.0.0/16 \
      --tls-cert master.pem --tls-key master.key --tls-ca ca.pem --tls-require-client-cert
  skyllh-cluster compute-node master.example.org 9999 --tls-ca ca.pem --tls-cert node.pem --tls-key node.key

  # the conformance scenario, on a free port printed on stderr, until Ctrl-C
  skyllh-cluster master --scenario conformance --host 127.0.0.1 --port 0

exit status of master: 0 all nodes served, 1 some node failed (see stderr),
2 bad arguments, 3 registration timed out, 4 cannot listen (port in use,
address not this host's, unknown host), 5 internal error, 130 interrupted.
Each error is one line on stderr; --log-level debug adds the traceback."""

_MASTER_DESCRIPTION = """\
Register --n-cn compute nodes (progress on stderr), then send each line of
standard input to every node as a MSG carrying the line (a str, without its
newline), and ShutdownCN at end of input.  A node that fails is reported on
stderr and dropped; the others are served.  With --scenario conformance,
serve the conformance scenario instead to every node that registers,
concurrently, until SIGINT or SIGTERM (exit status 0 then)."""


def _default_host() -> str:
    return socket.getfqdn(socket.gethostname())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``skyllh-cluster``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        type=str.lower,
        default=argparse.SUPPRESS,
        help="how much the library logs to stderr (default: warning)",
    )
    parser = argparse.ArgumentParser(
        prog="skyllh-cluster",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    node = commands.add_parser(
        "compute-node",
        parents=[common],
        help="run a compute node that registers with a master",
        description="Register with the master at MASTER_ADDR:MASTER_PORT and serve its commands, "
        "printing one line 'MSG <json>' per message (spec clause SCN-3). "
        "Exits 0 on ShutdownCN or when the live time ends, 1 when it cannot register or loses the master "
        "(one line on stderr), 2 for bad arguments, 130 when interrupted.",
    )
    compute_node.add_arguments(node)

    master = commands.add_parser(
        "master",
        parents=[common],
        help="register compute nodes and broadcast stdin to them, or serve the conformance scenario",
        description=_MASTER_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_master_arguments(master)
    return parser


def _add_master_arguments(master: argparse.ArgumentParser) -> None:
    """The options of ``skyllh-cluster master``."""
    master.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: this host's FQDN, as the original binds)",
    )
    master.add_argument("--port", type=int, default=9999, help="port to listen on; 0 picks a free one (default: 9999)")
    mode = master.add_mutually_exclusive_group(required=True)
    mode.add_argument("--n-cn", type=int, metavar="N", help="how many compute nodes to register")
    mode.add_argument("--scenario", choices=["conformance"], help="serve a scenario of the spec to every node")
    master.add_argument(
        "--timeout", type=float, metavar="S", help="give up registering after S seconds (exit status 3)"
    )
    master.add_argument(
        "--registration-timeout",
        type=float,
        default=3.0,
        metavar="S",
        help="close a connection that has not sent its whole RegisterCN after S seconds (default: 3, "
        "below the conformance kit's 5 s registration budget)",
    )
    master.add_argument(
        "--unregistered-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="cap the connections that have not registered at F of the open-file limit and of memory; "
        "at the cap the oldest is closed (default: 0.5)",
    )
    master.add_argument(
        "--send-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="a node that leaves bytes untaken for S seconds fails; a slow node holds a line's broadcast "
        "to the others for at most 1 s (default: 60)",
    )
    master.add_argument(
        "--allow",
        metavar="NETS",
        help="accept connections only from these comma-separated networks and addresses, e.g. "
        "10.0.0.0/8,192.0.2.5; others are closed at accept and logged once per source (default: anyone)",
    )
    tls = master.add_argument_group(
        "TLS profile (spec/tls-profile.md)",
        "With --tls-cert every connection is TLS (1.2 at least); a plain one is closed, never served.",
    )
    tls.add_argument("--tls-cert", metavar="FILE", help="PEM file with the master's certificate chain")
    tls.add_argument("--tls-key", metavar="FILE", help="PEM file with its private key (default: in --tls-cert)")
    tls.add_argument("--tls-ca", metavar="FILE", help="PEM file with the CA that signs the compute nodes' certificates")
    tls.add_argument(
        "--tls-require-client-cert",
        action="store_true",
        help="mutual TLS: admit only nodes whose client certificate verifies against --tls-ca",
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``skyllh-cluster`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "warning")
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "compute-node":
        return compute_node.run_from_arguments(args)
    return _run_master(args, debug=level == "debug")


class _CannotListen(Exception):
    """The master's listening socket could not be made (exit status EXIT_CANNOT_LISTEN)."""


def _master_usage_error(args: Any) -> Optional[str]:
    """What is wrong with the master's options that argparse does not check, if anything."""
    if args.n_cn is not None and args.n_cn < 0:
        return "--n-cn must not be negative"
    if not 0 <= args.port <= 65535:
        return f"--port must be 0 to 65535, not {args.port}"
    if args.timeout is not None and not args.timeout >= 0:
        return f"--timeout must not be negative, not {args.timeout:g}"
    if not args.registration_timeout > 0:
        return f"--registration-timeout must be positive, not {args.registration_timeout:g}"
    if not args.send_timeout >= 0:
        return f"--send-timeout must not be negative, not {args.send_timeout:g}"
    if not 0 < args.unregistered_fraction <= 1:
        return f"--unregistered-fraction must be above 0 and at most 1, not {args.unregistered_fraction:g}"
    if args.tls_cert is None and (args.tls_key or args.tls_ca or args.tls_require_client_cert):
        return "--tls-key, --tls-ca and --tls-require-client-cert need --tls-cert (the master's certificate)"
    if args.tls_require_client_cert and args.tls_ca is None:
        return "--tls-require-client-cert needs --tls-ca (the CA that signs the nodes' certificates)"
    return None


def _access_options(args: Any) -> "tuple[Optional[ssl.SSLContext], Optional[AllowList]]":
    """The TLS context and allow-list of the master's options; raises ValueError or OSError when they are bad."""
    allow = None if args.allow is None else AllowList.parse(args.allow)
    if args.tls_cert is None:
        return None, allow
    try:
        context = server_context(
            args.tls_cert, args.tls_key, cafile=args.tls_ca, require_client_cert=args.tls_require_client_cert
        )
    except ssl.SSLError as exc:
        raise ValueError(f"cannot load the TLS files: {exc.reason or exc}") from exc
    except OSError as exc:
        raise ValueError(f"cannot load the TLS files: {exc.filename or ''}: {exc.strerror or exc}") from exc
    return context, allow


def _run_master(args: Any, debug: bool) -> int:
    """The ``master`` subcommand: every error is one line on stderr and an exit status (see the epilog)."""
    problem = _master_usage_error(args)
    if problem is not None:
        print(f"skyllh-cluster master: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        context, allow = _access_options(args)
    except ValueError as exc:
        print(f"skyllh-cluster master: {exc}", file=sys.stderr)
        return EXIT_USAGE
    host = args.host if args.host is not None else _default_host()
    try:
        with MasterServer(
            registration_timeout=args.registration_timeout,
            unregistered_fraction=args.unregistered_fraction,
            ssl_context=context,
            allow=allow,
        ) as server:
            if args.scenario is not None:
                return _serve_scenario(server, host, args.port)
            return _register_and_broadcast(server, host, args, sys.stdin)
    except KeyboardInterrupt:
        print("skyllh-cluster master: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _CannotListen as exc:
        _print_error(str(exc), exc.__cause__, debug)
        return EXIT_CANNOT_LISTEN
    except Exception as exc:  # a defect: one line, the traceback only when asked for
        _print_error(f"internal error: {type(exc).__name__}: {exc}", exc, debug)
        return EXIT_INTERNAL_ERROR


def _print_error(message: str, cause: Optional[BaseException], debug: bool) -> None:
    if debug and cause is not None:
        logging.getLogger(__name__).debug("traceback", exc_info=cause)
    print(f"skyllh-cluster master: {message}", file=sys.stderr)


def _listen(server: MasterServer, host: str, port: int, backlog: int) -> None:
    try:
        bound_host, bound_port = server.listen(host, port, backlog=backlog)
    except socket.gaierror as exc:
        raise _CannotListen(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from exc
    except OSError as exc:
        raise _CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    print(f"listening on {bound_host}:{bound_port}", file=sys.stderr, flush=True)


class _Progress:
    """Registration progress on stderr: one updating line on a terminal, else lines."""

    def __init__(self, wanted: int, stream: IO[str]) -> None:
        self.wanted = wanted
        self.stream = stream
        self.tty = stream.isatty()
        # Thousands of lines would drown the log: report about every 1 %.
        self.every = max(1, wanted // 100)

    def __call__(self, node: Node, registered: int) -> None:
        if registered % self.every and registered != self.wanted:
            return
        if self.tty:
            end = "\n" if registered == self.wanted else ""
            print(f"\rregistered {registered}/{self.wanted}", end=end, file=self.stream, flush=True)
        else:
            print(f"registered {registered}/{self.wanted} ({node.key})", file=self.stream, flush=True)


def _report(result: BroadcastResult) -> bool:
    """Print a broadcast's failures on stderr; return whether there were none."""
    for key in result.expired:
        print(f"{result.command}: compute node {key} dropped, its live time has passed", file=sys.stderr)
    for key, cause in result.failed.items():
        print(f"{result.command}: compute node {key} failed: {cause}", file=sys.stderr)
    return result.ok


def _register_and_broadcast(server: MasterServer, host: str, args: Any, lines: IO[str]) -> int:
    wanted: int = args.n_cn
    _listen(server, host, args.port, backlog=max(wanted, 128))
    status = EXIT_OK
    try:
        server.register(wanted, timeout=args.timeout, progress=_Progress(wanted, sys.stderr))
    except RegistrationTimeout as exc:
        print(f"skyllh-cluster master: {exc}; shutting them down", file=sys.stderr)
        _report(server.shutdown(timeout=args.send_timeout))
        return EXIT_REGISTRATION_TIMEOUT
    print(f"all {wanted} compute nodes registered", file=sys.stderr, flush=True)
    for line in lines:
        text = line[:-1] if line.endswith("\n") else line
        try:
            result = server.broadcast(MSG(text), timeout=args.send_timeout)
        except ProtocolError as exc:  # too long for one frame; nothing was sent
            print(f"skyllh-cluster master: line not sent: {exc}", file=sys.stderr)
            status = EXIT_NODES_FAILED
            continue
        if not _report(result):
            status = EXIT_NODES_FAILED
    final = server.shutdown(timeout=args.send_timeout)
    if not _report(final):
        status = EXIT_NODES_FAILED
    print(f"sent ShutdownCN to {len(final.delivered)} of {wanted} compute nodes", file=sys.stderr)
    return status


def _serve_scenario(server: MasterServer, host: str, port: int) -> int:
    script: List[MSG] = [MSG(payload) for payload in SCENARIO_PAYLOADS]
    _listen(server, host, port, backlog=128)

    def stop(signum: int, frame: Any) -> None:
        server.stop()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        served = server.serve_script(script)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"stopped after serving {served} compute node(s)", file=sys.stderr)
    return EXIT_OK
