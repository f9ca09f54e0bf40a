"""Master mode, the TLS profile (spec/tls-profile.md): who gets in, and no plain fallback.

These tests run only when the kit tests a master in TLS mode (``--tls-ca``;
the TLS-4 tests also need the kit's client certificate, ``--tls-cert``, which
says that the master is in mutual TLS).  In plain mode they are reported as
not run, never as passed.  Every other master test runs unchanged inside TLS.
"""

from __future__ import annotations

import ssl
import time

import pytest

from skyllh_cluster.commands import ACK, RegisterCN

from skyllh_cluster.conformance.failures import ClauseFailure, Inconclusive, NoReply
from skyllh_cluster.conformance.peer import TLSRefused, WireConnection
from skyllh_cluster.conformance.scenario_checks import run_master_scenario
from skyllh_cluster.conformance.session import Kit, command_frame
from skyllh_cluster.conformance.tls import client_context, legacy, legacy_works, looks_like_tls

PLAIN_MODE = "not run: the master is tested in plain mode (give --tls-ca to test it in TLS mode)"
NOT_MUTUAL = (
    "not run: the kit presents no client certificate, so the master is not tested in mutual TLS "
    "(give --tls-cert and --tls-key)"
)


def _tls(kit: Kit, *, mutual: bool = False) -> None:
    if kit.client_tls is None:
        pytest.skip(PLAIN_MODE)
    if mutual and not kit.options.tls.mutual:
        pytest.skip(NOT_MUTUAL)


def _registration() -> bytes:
    return command_frame(RegisterCN(int(time.time()), 3600))


def _honest_node_registers(kit: Kit, after: str) -> None:
    """The failure of another connection cost only that connection (TLS-5): a node with the right certificate is served."""
    conn = kit.connect(f"node with the kit's certificate, after {after}")
    run = run_master_scenario(conn, _registration())
    if not run.frames or not isinstance(run.frames[0].command, ACK):
        got = run.frames[0].describe() if run.frames else (run.failure.evidence if run.failure else "nothing")
        raise ClauseFailure(
            f"expected a node with a valid certificate to be ACKed after {after}, got {got}",
            clause="TLS-5",
            transcripts=[run.transcript],
        )


def _refused_without_data(kit: Kit, conn: WireConnection, what: str) -> str:
    """Pass only when the master ends ``conn`` having sent no application data; return the evidence."""
    try:
        conn.send(_registration())
    except ClauseFailure:
        pass  # refused before the RegisterCN was out: what arrived is judged below
    try:
        frames = conn.wait_closed(kit.patience)
    except NoReply:
        raise Inconclusive(
            f"no evidence either way: the master neither ended the TLS connection of {what} nor sent anything "
            f"within {kit.patience:g} s",
            transcripts=[conn.transcript],
        ) from None
    except ClauseFailure as broken:
        raise conn.fail(f"expected no application data on the connection of {what}, got {broken.evidence}") from None
    got = conn.transcript.bytes_in("<-")
    if frames or got:
        shown = frames[0].describe() if frames else f"{len(got)} bytes: {got[:16].hex()}"
        raise conn.fail(f"expected the master to refuse {what} without a byte of application data, got {shown}")
    return conn.tls_error or "closed"


@pytest.mark.clause("TLS-1")
def test_master_refuses_tls_below_1_2(kit: Kit) -> None:
    """A node that offers at most TLS 1.1 gets no handshake, no ACK and no byte of application data."""
    _tls(kit)
    files = kit.untrusted_files()
    why_not = legacy_works(files["self-signed.pem"], files["self-signed.key"])
    if why_not is not None:
        pytest.skip(f"not run: {why_not}")
    tls = kit.options.tls
    # No verification: a handshake that gets as far as the master's certificate has already agreed on TLS 1.1.
    context = legacy(client_context(None, tls.cert, tls.key))
    what = "a node that offers at most TLS 1.1"
    try:
        conn = kit.connect_with(what, context)
    except TLSRefused:
        return  # the master ended the handshake with an alert
    except NoReply as silent:
        raise Inconclusive(f"no evidence either way: the master did not answer {what}", transcripts=silent.transcripts) from None
    if conn.tls_error is None:
        version = conn.sock.version()  # type: ignore[attr-defined]
        raise conn.fail(f"expected the master to refuse {what}, got a handshake at {version}")
    _refused_without_data(kit, conn, what)


@pytest.mark.clause("TLS-2")
def test_master_certificate_verifies_for_the_target_address(kit: Kit) -> None:
    """The master's certificate chain verified against --tls-ca for the target's address (serverAuth)."""
    _tls(kit)
    conn = kit.connect("TLS handshake with the master")  # raises TLSRefused (TLS-2) when it does not verify
    if conn.tls_error is not None:
        raise Inconclusive(f"the master ended the handshake before the kit could check it: {conn.tls_error}")
    version = conn.sock.version()  # type: ignore[attr-defined]
    if version not in ("TLSv1.2", "TLSv1.3"):
        raise conn.fail(f"expected TLS 1.2 or later, got {version}", clause="TLS-1")


@pytest.mark.clause("TLS-4")
@pytest.mark.parametrize("certificate", ["none", "other-ca"])
def test_mutual_tls_refuses_nodes_without_a_valid_certificate(kit: Kit, certificate: str) -> None:
    """A node with no client certificate, or one from another CA, gets no ACK and no byte of application data."""
    _tls(kit, mutual=True)
    ca = kit.options.tls.ca
    if certificate == "none":
        context, what = client_context(ca), "a node without a client certificate"
    else:
        files = kit.untrusted_files()
        context = client_context(ca, files["other-node.pem"], files["other-node.key"])
        what = "a node whose client certificate is from another CA"
    try:
        conn = kit.connect_with(what, context)
    except TLSRefused as refused:
        if refused.verify:
            raise
        # TLS 1.2: the master refuses in the handshake itself.
        _honest_node_registers(kit, what)
        return
    _refused_without_data(kit, conn, what)
    _honest_node_registers(kit, what)


@pytest.mark.clause("TLS-5")
def test_bytes_that_are_not_tls_cost_only_their_connection(kit: Kit) -> None:
    """Bytes that are no TLS handshake get no frame and a closed connection; a node with a certificate is served meanwhile."""
    _tls(kit)
    waiting = kit.connect("node with the kit's certificate, connected before the garbage")
    garbage = kit.connect_with("plain text instead of a ClientHello", None)
    try:
        garbage.send(b"GET / HTTP/1.0\r\n\r\n")
    except ClauseFailure:
        pass
    _no_plain_answer(kit, garbage, "plain text instead of a TLS handshake")
    run = run_master_scenario(waiting, _registration())
    if not run.frames or not isinstance(run.frames[0].command, ACK):
        got = run.frames[0].describe() if run.frames else (run.failure.evidence if run.failure else "nothing")
        raise ClauseFailure(
            f"expected the node connected before the garbage to be ACKed, got {got}", transcripts=[run.transcript, garbage.transcript]
        )


def _no_plain_answer(kit: Kit, conn: WireConnection, what: str) -> None:
    """The master answers ``what`` with at most a TLS alert, and closes the connection."""
    try:
        conn.wait_closed(kit.patience)
    except NoReply:
        raise conn.fail(
            f"expected the master to close the connection of {what}, got it open after {kit.patience:g} s", kind=NoReply
        ) from None
    except ClauseFailure:
        pass  # bytes that are no whole frame: judged below
    got = conn.transcript.bytes_in("<-")
    if got and not looks_like_tls(got):
        raise conn.fail(f"expected no plain bytes in answer to {what} (at most a TLS alert), got {len(got)} bytes: {got[:16].hex()}")


@pytest.mark.clause("TLS-6")
def test_plain_registration_gets_no_ack(kit: Kit) -> None:
    """A plain RegisterCN on the TLS port gets no ACK, only a closed connection (no fallback to plain)."""
    _tls(kit)
    conn = kit.connect_with("plain RegisterCN to the TLS port", None)
    try:
        conn.send(_registration())
    except ClauseFailure:
        pass
    _no_plain_answer(kit, conn, "a plain RegisterCN")
    _honest_node_registers(kit, "a plain RegisterCN")


def _client_hello(kit: Kit) -> bytes:
    """The ClientHello the kit's context would send, as bytes (a handshake run in memory, never finished)."""
    assert kit.client_tls is not None
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    engine = kit.client_tls.wrap_bio(incoming, outgoing, server_hostname=kit.target[0])
    try:
        engine.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


@pytest.mark.clause("TLS-7")
def test_a_stalled_handshake_blocks_nobody_and_is_closed_in_time(kit: Kit) -> None:
    """A connection that stops half-way through its ClientHello delays no other node, and is closed within the budget."""
    _tls(kit)
    hello = _client_hello(kit)
    stalled = kit.connect_with("half a ClientHello, then silence", None)
    started = time.monotonic()
    try:
        stalled.send(hello[: len(hello) // 2])
    except ClauseFailure:
        pass
    try:
        conn = kit.connect("node with the kit's certificate, while another handshake stalls")
    except NoReply as slow:
        raise ClauseFailure(
            f"expected a TLS handshake while another connection stalls in its handshake, got {slow.evidence}",
            transcripts=[*slow.transcripts, stalled.transcript],
        ) from None
    run = run_master_scenario(conn, _registration())
    if not run.frames or not isinstance(run.frames[0].command, ACK):
        got = run.frames[0].describe() if run.frames else (run.failure.evidence if run.failure else "nothing")
        raise ClauseFailure(
            f"expected an ACK while another connection stalls in its handshake, got {got}",
            transcripts=[run.transcript, stalled.transcript],
        )
    budget = kit.options.registration_budget
    try:
        stalled.wait_closed(max(0.0, started + budget - time.monotonic()))
    except NoReply:
        raise stalled.fail(
            f"expected the master to close a connection stalled in its TLS handshake within the registration bound, "
            f"got it open after {budget:g} s" + kit.budget_hint(),
            kind=NoReply,
        ) from None
    except ClauseFailure:
        pass  # a TLS alert is no frame: judged below
    got = stalled.transcript.bytes_in("<-")
    if got and not looks_like_tls(got):
        raise stalled.fail(f"expected nothing but a TLS alert on the stalled handshake, got {len(got)} bytes: {got[:16].hex()}")
