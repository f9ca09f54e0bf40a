"""The pre-flight check: does the target speak the protocol at all?

Before any test runs, the kit plays the scenario once as a well-behaved peer:

* master mode: it connects to ``--target``, sends a valid RegisterCN and
  reads the scenario; the master must answer with an ACK;
* compute-node mode: it starts ``--cn-command``; the node must connect
  within ``--cn-startup-timeout`` and send a RegisterCN.

When it does not, no test can say anything useful, and the run stops at once
with one line: an HTTP server given as ``--target`` gets that line, not a
table of clauses that "passed" because nothing happened.  The outcome is
either a configuration error (nothing listens; the command cannot start or
never connects: exit 4) or a target that does not speak the protocol (MST-1
or CN-1 failed: exit 1).

The runs are kept: they are the ``master_run`` and ``node_run`` that the
scenario tests judge, and the master's reply latency calibrates the kit's
waits (:meth:`.session.Kit.calibrate`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from skyllh_cluster.commands import ACK, RegisterCN

from .failures import ClauseFailure, KitError, NeverConnected, NoReply
from .peer import TLSRefused, connect
from .tls import looks_like_tls
from .scenario_checks import NodeRun, ScenarioRun, run_master_scenario, run_node_scenario
from .session import Kit, command_frame
from .transcript import RECEIVED, SENT, Transcript

__all__ = ["PreflightStop", "preflight_master", "preflight_node"]


@dataclass
class PreflightStop(Exception):
    """The pre-flight check stopped the run.

    Attributes:
        line: The one line that says why.
        clause: The clause the target broke (MST-1, CN-1), or ``None`` for a
            configuration error (exit 4).
        failure: The failure, with its transcript, when the target broke a clause.
    """

    line: str
    clause: Optional[str] = None
    failure: Optional[ClauseFailure] = None

    def __str__(self) -> str:
        return self.line


def preflight_master(kit: Kit) -> ScenarioRun:
    """Register once with the master under test and read its scenario; return the run.

    Raises:
        PreflightStop: nothing accepts connections at the target (no clause),
            or the master does not answer a valid RegisterCN with an ACK (MST-1).
    """
    host, port = kit.target
    where = f"--target {host}:{port}"
    transcript = Transcript("pre-flight node")
    try:
        conn = connect(kit.target, transcript, kit.patience, retry_for=max(kit.options.timeout, 3.0), tls=kit.client_tls)
    except TLSRefused as refused:
        raise _tls_stop(where, refused) from None
    except NoReply as exc:
        raise PreflightStop(f"{where}: nothing accepts connections there ({exc.evidence})") from None
    with conn:
        run = run_master_scenario(conn, command_frame(RegisterCN(int(time.time()), 3600)))
    if conn.tls_error is not None and not run.frames:
        raise PreflightStop(
            f"{where} ended the TLS connection before an ACK ({conn.tls_error}): is it in TLS mode, "
            "and does it accept the kit's client certificate (--tls-cert, --tls-key, from the CA it trusts)?"
        )
    first = run.frames[0] if run.frames else None
    said = transcript.bytes_in(RECEIVED)
    if (first is not None and isinstance(first.command, ACK)) or _speaks_the_protocol(said):
        # An ACK, or a reply that is recognisably a command of the protocol,
        # however broken: the clause tests judge what is wrong with it.
        kit.calibrate(_reply_latency(transcript))
        return run
    if first is not None:
        got = first.describe()
    elif run.failure is not None:
        got = run.failure.evidence.split(", got ", 1)[-1]
    else:  # pragma: no cover - a run ends with a frame or a failure
        got = "nothing"
    if kit.client_tls is None and looks_like_tls(said):
        raise PreflightStop(
            f"{where} answered with a TLS record: it is in the TLS profile; give the kit --tls-ca "
            "(and --tls-cert, --tls-key for mutual TLS)"
        )
    hint = f"; it said {_printable(said)}" if said else ""
    if kit.client_tls is None and not said:
        hint = " (a master in the TLS profile closes plain connections: then give the kit --tls-ca)"
    failure = ClauseFailure(
        f"expected an ACK to a valid RegisterCN, got {got}{hint}", clause="MST-1", transcripts=[transcript]
    )
    raise PreflightStop(
        f"{where} does not speak the SkyLLH cluster protocol: a valid RegisterCN got {got}{hint}",
        clause="MST-1",
        failure=failure,
    )


def _tls_stop(where: str, refused: TLSRefused) -> PreflightStop:
    """The one line for a master whose TLS handshake failed: TLS-2 if its certificate did not verify."""
    if refused.verify:
        return PreflightStop(
            f"{where}: the master's certificate did not verify against --tls-ca for {where.split()[-1].rsplit(':', 1)[0]}: "
            f"{refused.reason}",
            clause="TLS-2",
            failure=refused,
        )
    return PreflightStop(f"{where}: the TLS handshake failed ({refused.reason}): is the master in TLS mode?")


def preflight_node(kit: Kit) -> NodeRun:
    """Start one compute node under test and play the scenario with it; return the run.

    Raises:
        PreflightStop: the command cannot be started, or the node never
            connects (no clause), or it connects and does not register (CN-1).
    """
    try:
        run = run_node_scenario(kit)
    except KitError as exc:
        raise PreflightStop(str(exc)) from None
    finally:
        kit.cleanup()
    if run.registration is not None:
        kit.calibrate_node(max(0.0, run.registered_at - run.launched_at), run.stdout, run.closed_after)
        return run
    failure = run.failure
    assert failure is not None
    if isinstance(failure, NeverConnected):
        raise PreflightStop(f"--cn-command: {failure.evidence}")
    if isinstance(failure, TLSRefused):
        if failure.clause is not None:  # plain bytes to the kit's TLS master
            raise PreflightStop(
                f"--cn-command: {failure.evidence}: the kit serves TLS (--tls-cert); is the node in TLS mode?",
                clause=failure.clause,
                failure=failure,
            )
        raise PreflightStop(
            f"--cn-command: the TLS handshake with the node failed ({failure.reason}): does the node trust the "
            "kit's certificate (--tls-cert: give the node its CA), and, with --tls-ca, present a client certificate?"
        )
    if _speaks_the_protocol(run.transcript.bytes_in(RECEIVED)):
        return run  # a broken RegisterCN, but a RegisterCN: the clause tests judge it
    if kit.server_tls is None and looks_like_tls(run.transcript.bytes_in(RECEIVED)):
        raise PreflightStop(
            "--cn-command: the node started a TLS handshake: it is in the TLS profile; give the kit --tls-cert and "
            "--tls-key (a certificate the node trusts, for the --listen address)"
        )
    raise PreflightStop(
        f"--cn-command does not start a SkyLLH cluster compute node: {failure.evidence}",
        clause="CN-1",
        failure=failure.about("CN-1"),
    )


#: Every command of the protocol names its class in ``skyllh.cluster.commands``:
#: bytes that name the package are an attempt at the protocol, however broken.
_PACKAGE = b"skyllh.cluster"
_PROTO = 0x80  # the first opcode of a pickle of protocol 2 or later


def _speaks_the_protocol(received: bytes) -> bool:
    """Whether what the target sent is recognisably an attempt at the protocol's commands.

    A frame of a broken implementation (a big-endian prefix, a payload the
    grammar refuses) still starts a pickle right after a two-byte prefix; an
    HTTP server's answer does not (even when its error page echoes the
    RegisterCN it got, package name and all).
    """
    head = received[:4096]
    while head[:2] == b"\x00\x00":  # empty frames (FRM-3's business) say nothing either way
        head = head[2:]
    payload = head[2:66]  # the first frame's payload starts after its two-byte prefix
    if payload[:1] == bytes([_PROTO]):
        return True
    # a protocol 0 or 1 pickle: GLOBAL (or MARK, GLOBAL) naming the package at once
    return payload[:1] in (b"c", b"(") and _PACKAGE in payload[:20]


def _reply_latency(transcript: Transcript) -> float:
    """Seconds from the kit's last byte of the RegisterCN to the first byte of the reply."""
    sent = [e.at for e in transcript.entries if e.direction == SENT]
    received = [e.at for e in transcript.entries if e.direction == RECEIVED]
    if not sent or not received:
        return 0.0
    return max(0.0, received[0] - sent[-1])


def _printable(data: bytes, limit: int = 40) -> str:
    """The first bytes the target sent, readable and bounded (never the whole of attacker data)."""
    more = f"... ({len(data)} bytes)" if len(data) > limit else ""
    return f"{data[:limit]!r}{more}"
