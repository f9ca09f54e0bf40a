"""The TLS profile (spec/tls-profile.md) over real TLS on loopback.

Certificates are made for the session with the ``openssl`` command
(:mod:`tls_certs`); nothing is checked in.  The peers are real: the
reference master engine, :class:`~skyllh_cluster.compute_node.ComputeNode`,
the CLI programs, and raw TLS or TCP sockets that write and read exact bytes.
The frames expected inside TLS are the original's (TLS-1: unchanged).
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import subprocess
import sys
from typing import Dict, List, Optional

import pytest
from master_peers import (
    GOLDEN_ACK,
    GOLDEN_SHUTDOWN,
    WAIT,
    Background,
    RawNode,
    expected_node_output,
    msg_frame,
    start_master_cli,
    subprocess_env,
    wait_exit,
    wait_for,
)

import skyllh_cluster.master.node as node_module
from skyllh_cluster.commands import MSG
from skyllh_cluster.compute_node import ComputeNode, MasterClosedConnection, Stop, TLSFailure
from skyllh_cluster.master import MasterServer, TLSHandshakeError
from skyllh_cluster.master_node import MasterNode
from skyllh_cluster.tls import client_context, looks_like_tls_record, server_context
from tls_peers import TLSPeer

tls_certs = pytest.importorskip("tls_certs")
if tls_certs.OPENSSL is None:  # pragma: no cover - Debian and the CI image have it
    pytest.skip("the openssl command is not installed", allow_module_level=True)

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    return tls_certs.make_pki(tmp_path_factory.mktemp("pki"))


def mutual_context(pki: Dict[str, str]) -> ssl.SSLContext:
    return server_context(pki["master.pem"], pki["master.key"], cafile=pki["ca.pem"], require_client_cert=True)


def node_context(pki: Dict[str, str], cert: Optional[str] = "node") -> ssl.SSLContext:
    if cert is None:
        return client_context(pki["ca.pem"])
    return client_context(pki["ca.pem"], pki[f"{cert}.pem"], pki[f"{cert}.key"])


# -- mutual TLS: the happy path ---------------------------------------------------------------


def test_mutual_tls_registration_broadcast_and_shutdown_carry_the_original_frames(pki):
    with MasterServer(ssl_context=mutual_context(pki)) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(3, timeout=WAIT))
        peers = [TLSPeer(address, node_context(pki)) for _ in range(3)]
        try:
            for peer in peers:
                peer.register()
            for peer in peers:
                assert peer.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
                assert peer.sock.version() == "TLSv1.3"
            assert len(registering.result()) == 3
            assert all(node.tls for node in master.nodes)
            for value in ("hello", [1, 2.5, None], "x" * 60000):
                result = master.broadcast(MSG(value), timeout=WAIT)
                assert result.ok and len(result.delivered) == 3
                for peer in peers:
                    expected = msg_frame(value)
                    assert peer.read_exact(len(expected)) == expected
            assert master.shutdown(timeout=WAIT).ok
            for peer in peers:
                assert peer.read_to_end() == (GOLDEN_SHUTDOWN, None)
        finally:
            for peer in peers:
                peer.close()


def test_the_python_send_loop_serves_tls_nodes_even_where_the_c_loop_is_built(pki, monkeypatch):
    # The C loop writes to raw descriptors, which would put plaintext on a TLS connection.
    calls: List[int] = []
    native = node_module.native_send_each
    if native is not None:
        monkeypatch.setattr(node_module, "native_send_each", lambda fds, frame: calls.append(len(fds)) or native(fds, frame))
    with MasterServer(ssl_context=mutual_context(pki)) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT))
        peer = TLSPeer(address, node_context(pki))
        try:
            peer.register()
            assert peer.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
            registering.result()
            assert master.broadcast(MSG(7)).ok
            assert peer.read_exact(len(msg_frame(7))) == msg_frame(7)
        finally:
            peer.close()
    assert calls == []


def test_a_broadcast_spread_over_threads_writes_each_tls_connection_from_one_thread(pki, monkeypatch):
    # The fan-out threads each take whole chunks of nodes; with TLS every
    # chunk takes the Python loop, and each SSL object is written by one thread.
    import skyllh_cluster.master.fanout as fanout

    monkeypatch.setattr(fanout, "PARALLEL_MINIMUM", 2)
    monkeypatch.setattr(fanout, "CHUNK", 1)
    with MasterServer(ssl_context=mutual_context(pki), send_threads=3) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(6, timeout=WAIT))
        peers = [TLSPeer(address, node_context(pki)) for _ in range(6)]
        try:
            for peer in peers:
                peer.register()
                assert peer.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
            registering.result()
            for index in range(3):
                assert master.broadcast(MSG(index)).ok
            assert master._fanout.started
            for peer in peers:
                expected = b"".join(msg_frame(index) for index in range(3))
                assert peer.read_exact(len(expected)) == expected
        finally:
            for peer in peers:
                peer.close()


def test_a_tls_context_must_be_an_ssl_context():
    with pytest.raises(TypeError, match="ssl_context must be an ssl.SSLContext"):
        MasterServer(ssl_context="master.pem")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ssl_context must be an ssl.SSLContext"):
        ComputeNode(20, HOST, 1, ssl_context=True)  # type: ignore[arg-type]


def test_contexts_refuse_incomplete_configurations(pki):
    with pytest.raises(ValueError, match="cafile"):
        server_context(pki["master.pem"], pki["master.key"], require_client_cert=True)
    with pytest.raises(ValueError, match="certfile"):
        client_context(pki["ca.pem"], keyfile=pki["node.key"])
    server = server_context(pki["master.pem"], pki["master.key"], cafile=pki["ca.pem"], require_client_cert=True)
    assert server.verify_mode == ssl.CERT_REQUIRED and server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = client_context(pki["ca.pem"])
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_tls_node_that_reads_slowly_gets_every_byte_in_order(pki):
    # 6 MB of frames against a peer that reads nothing at first: the TLS
    # socket refuses writes (SSLWantWriteError), the engine queues the same
    # bytes and offers them again once the peer reads.
    values = [f"{index:04d}" + "y" * 59990 for index in range(100)]
    with MasterServer(ssl_context=mutual_context(pki), slow_node_wait=0.01, max_queued=1 << 24) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT))
        peer = TLSPeer(address, node_context(pki), rcvbuf=4096)
        try:
            peer.register()
            assert peer.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
            registering.result()
            queued = 0
            for value in values:
                result = master.broadcast(MSG(value), timeout=WAIT * 3)
                assert not result.failed
                queued += bool(result.queued)
            assert queued, "the peer was never behind: the test did not reach the TLS retry path"
            reading = Background(peer.read_to_end)
            assert master.shutdown(timeout=WAIT * 3).ok
            data, error = reading.result(WAIT * 3)
            assert error is None
            assert data == b"".join(msg_frame(value) for value in values) + GOLDEN_SHUTDOWN
        finally:
            peer.close()


def test_master_node_and_compute_node_speak_mutual_tls(pki):
    received: List[object] = []
    with MasterNode(ssl_context=mutual_context(pki)) as master:
        registering = Background(lambda: master.register_compute_nodes(1, master_port=0, host=HOST, timeout=WAIT))
        port = wait_for(lambda: master.master_address, "the master to listen")[1]
        node = ComputeNode(60, HOST, port, echo=False, on_message=received.append, ssl_context=node_context(pki))
        try:
            registering.result()
            assert node.sock.version() == "TLSv1.3"  # type: ignore[union-attr]
            serving = Background(node.handle_requests)
            master.send_request({"a": 1})
            master.shutdown_compute_nodes()
            assert serving.result() is Stop.SHUTDOWN
        finally:
            node.close()
    assert received == [{"a": 1}]


@pytest.mark.parametrize("cert", ["node", "other-node", None], ids=["valid", "another CA", "none"])
def test_tls_1_2_is_the_floor_and_checks_client_certificates_in_the_handshake(pki, cert):
    # With TLS 1.2 the master checks the client certificate before the
    # node's handshake ends: a refused node fails in its handshake.
    context = node_context(pki, cert)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with MasterServer(ssl_context=mutual_context(pki)) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT))
        if cert == "node":
            node = ComputeNode(20, HOST, address[1], echo=False, ssl_context=context)
            try:
                assert node.sock.version() == "TLSv1.2"  # type: ignore[union-attr]
                assert len(registering.result()) == 1
            finally:
                node.close()
            return
        with pytest.raises(TLSFailure, match="TLS handshake with the master at .* failed"):
            ComputeNode(20, HOST, address[1], echo=False, ssl_context=context)
        wait_for(lambda: not master.connections, "the master to close the refused connection")
        assert master.nodes == []
        master.stop_listening()
    with pytest.raises(Exception):
        registering.result()


# -- who never gets a slot or a byte ----------------------------------------------------------


def test_without_a_valid_client_certificate_a_node_never_takes_a_slot_nor_gets_a_byte(pki, caplog):
    caplog.set_level(logging.WARNING, logger="skyllh_cluster.master.server")
    with MasterServer(ssl_context=mutual_context(pki)) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT * 2))
        outcomes = {}
        refused = (("no certificate", None), ("another CA", "other-node"), ("serverAuth usage only", "master"))
        for name, cert in refused:
            # TLS 1.3: the node's side of the handshake ends before the master
            # has checked its certificate, so it gets to send its RegisterCN.
            peer = TLSPeer(address, node_context(pki, cert))
            try:
                try:
                    peer.register()
                except (ssl.SSLError, ConnectionError) as exc:  # the master was quicker to refuse
                    outcomes[name] = (b"", exc)
                else:
                    outcomes[name] = peer.read_to_end()
            finally:
                peer.close()
        plain = RawNode(address)
        try:
            try:
                plain.register()
            except ConnectionError:
                pass
            plain_bytes = plain.read_to_eof()
        finally:
            plain.close()
        wait_for(lambda: not master.connections, "the master to close the refused connections")
        assert master.nodes == []
        good = TLSPeer(address, node_context(pki))
        try:
            good.register()
            assert good.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
            assert len(registering.result()) == 1
            assert master.broadcast(MSG("secret")).ok
            assert good.read_exact(len(msg_frame("secret"))) == msg_frame("secret")
        finally:
            good.close()
    for name, (data, error) in outcomes.items():
        assert data == b"", name
        assert isinstance(error, (ssl.SSLError, ConnectionError)), name
    assert plain_bytes == b"" or looks_like_tls_record(plain_bytes)
    failures = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) == 4, failures


def test_a_handshake_counts_against_the_registration_bound(pki, caplog):
    caplog.set_level(logging.WARNING, logger="skyllh_cluster.master.server")
    with MasterServer(ssl_context=mutual_context(pki), registration_timeout=0.3) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT))
        silent = RawNode(address)
        half = RawNode(address)
        try:
            half.send(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, and no more
            assert silent.read_to_eof() == b""
            answer = half.read_to_eof()
            assert answer == b"" or looks_like_tls_record(answer)
            wait_for(lambda: not master.connections, "the stalled handshakes to be closed")
            good = TLSPeer(address, node_context(pki))
            try:
                good.register()
                assert good.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
                registering.result()
            finally:
                good.close()
        finally:
            silent.close()
            half.close()
    stalled = [r.getMessage() for r in caplog.records if "in its TLS handshake" in r.getMessage()]
    assert len(stalled) == 2, stalled


# -- a compute node that refuses its master ------------------------------------------------------


def run_node_cli(port: int, *tls_args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skyllh_cluster", "compute-node", HOST, str(port), "--live-time", "20", *tls_args],
        capture_output=True,
        encoding="utf-8",
        env=subprocess_env(),
        timeout=60,
    )


@pytest.mark.parametrize(
    "master_cert, why",
    [
        ("self-signed", "self-signed certificate"),
        ("other-master", "unable to get local issuer certificate"),
        ("wrong-name", "IP address mismatch"),
    ],
)
def test_a_compute_node_refuses_a_master_whose_certificate_does_not_verify(pki, master_cert, why):
    context = server_context(pki[f"{master_cert}.pem"], pki[f"{master_cert}.key"])
    with MasterServer(ssl_context=context) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT * 3))
        done = run_node_cli(address[1], "--tls-ca", pki["ca.pem"], "--tls-cert", pki["node.pem"], "--tls-key", pki["node.key"])
        wait_for(lambda: not master.connections, "the master to close the refused connection")
        assert master.nodes == []
        master.stop_listening()
    with pytest.raises(Exception):
        registering.result()
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "failed certificate verification (TLS-3)" in lines[0] and why in lines[0], lines[0]
    assert done.stdout == ""


def test_a_tls_compute_node_and_a_plain_master_refuse_each_other(pki, caplog):
    caplog.set_level(logging.WARNING, logger="skyllh_cluster.master.server")
    with MasterServer() as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT))
        with pytest.raises(TLSFailure, match="TLS handshake with the master at .* failed"):
            ComputeNode(20, HOST, address[1], echo=False, ssl_context=node_context(pki))
        wait_for(lambda: not master.connections, "the master to close the TLS connection")
        assert master.nodes == []
        master.stop_listening()
    with pytest.raises(Exception):
        registering.result()
    messages = [r.getMessage() for r in caplog.records]
    assert any("a TLS handshake on a plain master" in m for m in messages), messages


def test_a_plain_compute_node_and_a_tls_master_refuse_each_other(pki, caplog):
    caplog.set_level(logging.WARNING, logger="skyllh_cluster.master.server")
    with MasterServer(ssl_context=mutual_context(pki)) as master:
        address = master.listen(HOST, 0)
        registering = Background(lambda: master.register(1, timeout=WAIT))
        with pytest.raises((TLSFailure, MasterClosedConnection), match="TLS"):
            ComputeNode(20, HOST, address[1], echo=False)
        wait_for(lambda: not master.connections, "the master to close the plain connection")
        assert master.nodes == []
        master.stop_listening()
    with pytest.raises(Exception):
        registering.result()
    messages = [r.getMessage() for r in caplog.records]
    assert any("TLS handshake failed" in m for m in messages), messages


def test_the_plain_node_names_tls_when_the_master_answers_with_a_tls_alert():
    # A master in the TLS profile may answer a plain ClientHello-less peer
    # with an alert record; the node must say TLS, not "bad frame".
    listener = socket.create_server((HOST, 0))
    alert = b"\x15\x03\x03\x00\x02\x02\x46"

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(alert)

    serving = Background(answer)
    try:
        with pytest.raises(TLSFailure, match="answered with TLS"):
            ComputeNode(20, HOST, listener.getsockname()[1], echo=False)
        serving.result()
    finally:
        listener.close()


@pytest.mark.parametrize("linger", [False, True], ids=["close", "reset"])
def test_a_tls_node_whose_master_closes_after_the_handshake_names_tls(pki, linger):
    # What a TLS 1.3 master that refuses the client certificate looks like
    # from the node: its own handshake succeeded, then the connection ends,
    # before or after its RegisterCN went out.
    listener = socket.create_server((HOST, 0))
    context = server_context(pki["master.pem"], pki["master.key"])

    def refuse() -> None:
        conn, _ = listener.accept()
        tls = context.wrap_socket(conn, server_side=True)
        if linger:
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        tls.close()

    serving = Background(refuse)
    try:
        with pytest.raises((TLSFailure, MasterClosedConnection), match="TLS"):
            ComputeNode(20, HOST, listener.getsockname()[1], echo=False, ssl_context=node_context(pki))
        serving.result()
    finally:
        listener.close()


def test_the_tls_error_is_a_handshake_error():
    assert issubclass(TLSHandshakeError, ConnectionError)


# -- the command line ---------------------------------------------------------------------------


def test_cli_master_and_compute_node_with_mutual_tls(pki):
    process, stderr = start_master_cli(
        "--host", HOST, "--port", "0", "--n-cn", "1", "--timeout", "60",
        "--tls-cert", pki["master.pem"], "--tls-key", pki["master.key"],
        "--tls-ca", pki["ca.pem"], "--tls-require-client-cert",
    )
    try:
        port = int(stderr.wait_for(r"listening on [\d.]+:(\d+)").group(1))
        node = subprocess.Popen(
            [sys.executable, "-m", "skyllh_cluster", "compute-node", HOST, str(port), "--live-time", "60",
             "--tls-ca", pki["ca.pem"], "--tls-cert", pki["node.pem"], "--tls-key", pki["node.key"]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", env=subprocess_env(),
        )
        stderr.wait_for("all 1 compute nodes registered")
        process.stdin.write("over TLS\n")  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
        assert wait_exit(process) == 0
        out, err = node.communicate(timeout=60)
        assert node.returncode == 0, err
        assert out.splitlines() == expected_node_output(HOST, port, 60, ["over TLS"], kind="cli")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_master_serves_the_conformance_scenario_over_mutual_tls(pki):
    # What the kit would point --tls-* options at: every scenario payload,
    # in order, inside TLS, to a node with a valid client certificate.
    from skyllh_cluster.scenario import SCENARIO_PAYLOADS

    process, stderr = start_master_cli(
        "--scenario", "conformance", "--host", HOST, "--port", "0",
        "--tls-cert", pki["master.pem"], "--tls-key", pki["master.key"],
        "--tls-ca", pki["ca.pem"], "--tls-require-client-cert",
    )
    try:
        port = int(stderr.wait_for(r"^listening on [\d.]+:(\d+)$").group(1))
        done = run_node_cli(port, "--tls-ca", pki["ca.pem"], "--tls-cert", pki["node.pem"], "--tls-key", pki["node.key"])
        refused = run_node_cli(port)  # a plain node: refused, one line
        process.send_signal(signal.SIGTERM)
        assert wait_exit(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected_node_output(HOST, port, 20, SCENARIO_PAYLOADS, kind="cli")
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1 and "TLS" in refused.stderr
    assert stderr.rest()[-1] == "stopped after serving 1 compute node(s)"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tls-require-client-cert"], "need --tls-cert"),
        (["--tls-cert", "{master.pem}", "--tls-require-client-cert"], "needs --tls-ca"),
        (["--tls-cert", "/nonexistent/master.pem"], "cannot load the TLS files"),
        (["--tls-cert", "{ca.pem}"], "cannot load the TLS files"),  # a certificate without its key
        (["--allow", "10.0.0.0/33"], "is not an IP address or network"),
    ],
)
def test_cli_master_refuses_bad_tls_and_allow_options_in_one_line(pki, args, message):
    args = [pki[arg.strip("{}")] if arg.startswith("{") else arg for arg in args]
    done = subprocess.run(
        [sys.executable, "-m", "skyllh_cluster", "master", "--host", HOST, "--port", "0", "--n-cn", "1", *args],
        capture_output=True, encoding="utf-8", env=subprocess_env(), timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_cli_compute_node_refuses_unreadable_tls_files_in_one_line(pki):
    done = run_node_cli(1, "--tls-ca", "/nonexistent/ca.pem")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("compute node: cannot set up TLS"), lines
