"""Compute-node mode, the TLS profile (spec/tls-profile.md): the node trusts only its master, and never falls back.

These tests run only when the kit's master serves TLS (``--tls-cert`` and
``--tls-key`` with ``--cn-command``); in plain mode they are reported as not
run, never as passed.  Each starts a node against a master of the kit's that
the node must not accept: a self-signed certificate, one from another CA, the
kit's own certificate under an address it does not name, and a master that
speaks plain TCP.  The node passes by ending the handshake (an alert or a
close) without a byte of application data, and by never sending a frame in
plain.  Every other compute-node test runs unchanged inside TLS.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from typing import List, Optional, Tuple

import pytest

from skyllh_cluster.codec import dumps, loads_checked
from skyllh_cluster.commands import ACK, RegisterCN
from skyllh_cluster.errors import ProtocolError

from skyllh_cluster.conformance.failures import ClauseFailure, Inconclusive, KitError, NoReply
from skyllh_cluster.conformance.launcher import NodeProcess
from skyllh_cluster.conformance.peer import Listener, WireConnection, first_bytes
from skyllh_cluster.conformance.session import Kit
from skyllh_cluster.conformance.tls import (
    HandshakeFailed,
    legacy,
    legacy_works,
    looks_like_tls,
    server_context,
    server_handshake,
)
from skyllh_cluster.conformance.transcript import Transcript

PLAIN_MODE = "not run: the compute node is tested in plain mode (give --tls-cert and --tls-key to test it in TLS mode)"


def _tls(kit: Kit) -> None:
    if kit.server_tls is None:
        pytest.skip(PLAIN_MODE)


def _listen_host(kit: Kit) -> str:
    return kit.options.listen[0]


def _judge_exit(kit: Kit, process: NodeProcess, transcript: Transcript, what: str) -> str:
    """A node that refused the master exits non-zero (TLS-3); one still running is noted, not failed."""
    status = process.wait_exit(kit.patience)
    if status is None:
        transcript.note(f"the node still runs {kit.patience:g} s after refusing {what}")
        return "still running"
    if status == 0:
        tail = process.output_tail()
        raise ClauseFailure(
            f"expected a non-zero exit status after the node refused {what}, got 0" + (f"; it said: {tail}" if tail else ""),
            transcripts=[transcript],
        )
    return f"exited with status {status}"


def _refuses(kit: Kit, context: ssl.SSLContext, what: str, *, host: Optional[str] = None, bind: Optional[str] = None) -> None:
    """Start a node against a kit master presenting ``context``'s certificate; pass only if the node refuses it."""
    listener = kit.track(Listener(bind or _listen_host(kit), 0, kit.timeout))
    process, sock, transcript = kit.start_node_raw(listener, f"master presenting {what}", host=host)
    try:
        tls = server_handshake(sock, context, kit.timeout)
    except HandshakeFailed as failed:
        transcript.note(f"TLS handshake failed: {failed.reason}")
        if failed.timed_out:
            raise Inconclusive(
                f"no evidence either way: the node neither completed nor refused the handshake with {what} "
                f"within {kit.timeout:g} s",
                transcripts=[transcript],
            ) from None
        exited = _judge_exit(kit, process, transcript, what)
        transcript.note(f"refused: {failed.reason}; {exited}")
        return
    kit.track(tls)
    conn = WireConnection(tls, transcript, kit.timeout)
    transcript.note(f"TLS handshake done with {what}: the node accepted it")
    extra = ""
    try:
        frame = conn.read_frame(kit.timeout, waiting_for="a RegisterCN")
        if frame is not None:
            extra = f", and then sent {frame.describe()} into it"
    except ClauseFailure:
        pass
    version = tls.version()
    raise conn.fail(f"expected the node to refuse {what}, got the TLS handshake completed ({version}){extra}")


@pytest.mark.clause("TLS-1")
def test_node_refuses_tls_below_1_2(kit: Kit) -> None:
    """The node aborts the handshake with a master (its trusted certificate) that offers at most TLS 1.1."""
    _tls(kit)
    tls = kit.options.tls
    assert tls.cert is not None
    why_not = legacy_works(tls.cert, tls.key)
    if why_not is not None:
        pytest.skip(f"not run: {why_not}")
    context = legacy(server_context(tls.cert, tls.key))
    _refuses(kit, context, "a master that offers at most TLS 1.1")


@pytest.mark.clause("TLS-3")
@pytest.mark.parametrize("certificate", ["self-signed", "other-ca"])
def test_node_refuses_an_untrusted_master_certificate(kit: Kit, certificate: str) -> None:
    """The node aborts the handshake with a master whose certificate is self-signed, or from another CA, for the right name."""
    _tls(kit)
    files = kit.untrusted_files()
    name = "self-signed" if certificate == "self-signed" else "other-master"
    what = "a self-signed certificate" if certificate == "self-signed" else "a certificate from another CA"
    _refuses(kit, server_context(files[f"{name}.pem"], files[f"{name}.key"]), what + " for the right address")


def _names_of(certfile: str) -> Optional[Tuple[List[str], List[str]]]:
    """The DNS and IP entries of a certificate's subjectAltName, or None if this Python cannot read them."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        cert = decode(certfile)
    except (OSError, ssl.SSLError, ValueError):
        return None
    entries = cert.get("subjectAltName", ())
    return [v for k, v in entries if k == "DNS"], [v.strip() for k, v in entries if k == "IP Address"]


@pytest.mark.clause("TLS-3")
def test_node_refuses_a_certificate_for_another_address(kit: Kit) -> None:
    """The node aborts the handshake when the master's (trusted) certificate does not name the address it was given."""
    _tls(kit)
    assert kit.options.tls.cert is not None
    host = _listen_host(kit)
    names = _names_of(kit.options.tls.cert)
    if names is None or not host.startswith("127."):
        pytest.skip("not run: needs a loopback --listen address and a Python that reads the certificate's names")
    _, ips = names
    named = {ipaddress.ip_address(ip) for ip in ips if _is_ip(ip)}
    other = next((str(a) for a in (ipaddress.ip_address("127.0.0.2") + n for n in range(20)) if a not in named), None)
    if other is None:
        pytest.skip("not run: the kit's certificate names every loopback address it would try")
    assert kit.server_tls is not None
    try:
        kit.track(Listener(other, 0, kit.timeout)).close()
    except KitError:
        pytest.skip(f"not run: the kit cannot listen on {other} here")
    _refuses(kit, kit.server_tls, f"its trusted certificate, which does not name {other}", host=other, bind=other)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _plain_part(data: bytes) -> bytes:
    """What is left of ``data`` after its whole TLS records (a record still arriving counts as TLS)."""
    while len(data) >= 5 and looks_like_tls(data):
        end = 5 + int.from_bytes(data[3:5], "big")
        if len(data) < end:
            return b""
        data = data[end:]
    if data and len(data) < 5 and looks_like_tls(data + b"\x00" * 5):
        return b""
    return data


def _plain_evidence(data: bytes) -> str:
    """Plain bytes a TLS node sent, described (a RegisterCN by name)."""
    if len(data) >= 2:
        size = int.from_bytes(data[:2], "little")
        if 0 < size <= len(data) - 2:
            try:
                command = loads_checked(data[2 : 2 + size])
            except ProtocolError:
                command = None
            if isinstance(command, RegisterCN):
                return f"a plain RegisterCN ({data[: 2 + size].hex()[:64]})"
    return f"{len(data)} plain bytes: {data[:16].hex()}"


@pytest.mark.clause("TLS-6")
def test_node_never_falls_back_to_plain(kit: Kit) -> None:
    """Against a master that answers in plain TCP, the node's handshake fails and it never sends a frame in plain."""
    _tls(kit)
    listener = kit.track(Listener(_listen_host(kit), 0, kit.timeout))
    process, sock, transcript = kit.start_node_raw(listener, "node against a plain master")
    conn = kit.track(WireConnection(sock, transcript, kit.timeout))
    head = first_bytes(sock, kit.timeout)
    if not head:
        raise Inconclusive(f"no evidence: the node sent nothing within {kit.timeout:g} s", transcripts=[transcript])
    if not looks_like_tls(head):
        data = conn.received_within(min(kit.timeout, 0.5))
        raise conn.fail(f"expected a TLS ClientHello, got {_plain_evidence(data)}")
    # A plain master's answer: an ACK, which is no TLS record; the node's handshake must fail.
    try:
        conn.send(len(dumps(ACK())).to_bytes(2, "little") + dumps(ACK()))
    except ClauseFailure:
        pass
    data = conn.received_within(kit.grace)
    plain = _plain_part(data)
    if plain:
        raise conn.fail(f"expected only TLS records after the handshake failed, got {_plain_evidence(plain)}")
    conn.close()
    _no_plain_reconnection(kit, listener, process, transcript)


def _no_plain_reconnection(kit: Kit, listener: Listener, process: NodeProcess, transcript: Transcript) -> None:
    """Until the node exits (at most the patience), every new connection it opens must start TLS."""
    deadline = time.monotonic() + kit.patience
    attempts = 0
    while True:
        exited = process.poll() is not None
        try:
            sock = listener.accept_raw(transcript, 0.0 if exited else min(0.1, max(0.0, deadline - time.monotonic())),
                                       who="the node, again")
        except NoReply:
            if exited or time.monotonic() >= deadline:
                break
            continue
        attempts += 1
        again = Transcript(f"the node's connection {attempts + 1}, after the failed handshake")
        conn = kit.track(WireConnection(sock, again, kit.timeout))
        head = first_bytes(sock, kit.timeout)
        if head and not looks_like_tls(head):
            data = conn.received_within(min(kit.timeout, 0.5))
            raise ClauseFailure(
                f"expected no plain connection after the failed handshake, got {_plain_evidence(data)} "
                f"on connection {attempts + 1}",
                transcripts=[transcript, again],
            )
        conn.close()
        if attempts >= 20:
            break
    status = process.poll()
    transcript.note(
        f"after the failed handshake: {attempts} more connections, all TLS; "
        + (f"the node exited with status {status}" if status is not None else f"the node still runs after {kit.patience:g} s")
    )
