"""The kit against TLS targets (spec/tls-profile.md): the reference passes, each TLS fault fails its clause.

Certificates are made fresh by tests/tls_certs.py (the ``openssl`` command;
never checked in).  The kit is run as its users run it, in a subprocess with
``--tls-ca``/``--tls-cert``/``--tls-key``:

* against the reference master in mutual TLS, and the reference compute node
  in TLS mode against the kit's TLS master: strict, every clause that ran
  passes, the TLS clauses among them;
* against tests/kit_targets/ in TLS mode with one TLS fault each (the rows
  ``TLS-n`` at the end of their FAULTS tables): the kit, restricted to that
  clause, reports it failed and exits 1;
* in plain mode the TLS checks are reported as not run, never as passed;
* without a way to make certificates, the checks that need them are
  inconclusive, never passed.
"""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from skyllh_cluster.conformance.drivers.process import MasterProcess, address_pattern

import tls_certs
from kit_runs import KitRun, faulty_cn_command, faulty_master, run_kit
from kit_targets.faulty_cn import FAULTS as CN_FAULTS
from kit_targets.faulty_master import FAULTS as MASTER_FAULTS

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(tls_certs.OPENSSL is None, reason="the openssl command makes the test certificates"),
]

MASTER_TLS_CLAUSES = ("TLS-1", "TLS-2", "TLS-4", "TLS-5", "TLS-6", "TLS-7")
CN_TLS_CLAUSES = ("TLS-1", "TLS-3", "TLS-6")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    return tls_certs.make_pki(tmp_path_factory.mktemp("pki"))


def _kit_as_node(pki: Dict[str, str]) -> List[str]:
    """The kit tests a master in mutual TLS: it verifies it against the CA and presents a node certificate."""
    return ["--tls-ca", pki["ca.pem"], "--tls-cert", pki["node.pem"], "--tls-key", pki["node.key"]]


def _kit_as_master(pki: Dict[str, str]) -> List[str]:
    """The kit serves TLS to compute nodes with the master certificate, and requires their client certificates."""
    return ["--tls-ca", pki["ca.pem"], "--tls-cert", pki["master.pem"], "--tls-key", pki["master.key"]]


def _master_tls(pki: Dict[str, str], cert: str = "master") -> List[str]:
    return ["--tls-cert", pki[f"{cert}.pem"], "--tls-key", pki[f"{cert}.key"], "--tls-ca", pki["ca.pem"],
            "--tls-require-client-cert"]


def _node_tls(pki: Dict[str, str]) -> List[str]:
    return ["--tls-ca", pki["ca.pem"], "--tls-cert", pki["node.pem"], "--tls-key", pki["node.key"]]


def _reference_node_command(pki: Dict[str, str]) -> str:
    return " ".join([sys.executable, "-m", "skyllh_cluster.compute_node", "{host}", "{port}", "--live-time", "{live_time}",
                     *_node_tls(pki)])


@pytest.fixture(scope="module")
def reference_master(pki: Dict[str, str]) -> Iterator[str]:
    argv = [sys.executable, "-m", "skyllh_cluster", "master", "--host", "127.0.0.1", "--port", "0",
            "--scenario", "conformance", "--registration-timeout", "1", *_master_tls(pki)]
    with MasterProcess(argv, address_pattern("listening on")) as master:
        yield master.target


def _explain(run: KitRun) -> str:
    return run.output[-4000:]


def _only_passed_or_skipped(run: KitRun) -> None:
    bad = {cid: o for cid, o in run.outcomes().items() if o not in ("passed", "skipped")}
    assert not bad, f"{bad}\n{_explain(run)}"


def test_reference_master_in_mutual_tls_conforms_strictly(reference_master: str, pki: Dict[str, str]) -> None:
    run = run_kit(["--target", reference_master, "--strict-conformance", *_kit_as_node(pki)])
    assert run.status == 0, _explain(run)
    _only_passed_or_skipped(run)
    outcomes = run.outcomes()
    assert all(outcomes[c] == "passed" for c in MASTER_TLS_CLAUSES), outcomes
    # every protocol check ran inside TLS, and passed
    assert all(outcomes[c] == "passed" for c in ("MST-1", "MST-2", "MST-3", "MST-7", "MST-11", "SCN-1", "SEC-1", "ERR-1"))


def test_reference_node_in_tls_conforms_strictly(pki: Dict[str, str]) -> None:
    run = run_kit(["--cn-command", _reference_node_command(pki), "--strict-conformance", *_kit_as_master(pki)])
    assert run.status == 0, _explain(run)
    _only_passed_or_skipped(run)
    outcomes = run.outcomes()
    assert all(outcomes[c] == "passed" for c in CN_TLS_CLAUSES), outcomes
    assert all(outcomes[c] == "passed" for c in ("CN-1", "CN-4", "CN-6", "CN-11", "SCN-3", "SEC-1"))
    tls3 = next(c for c in run.report["clauses"] if c["id"] == "TLS-3")
    assert [t["outcome"] for t in tls3["tests"]] == ["passed"] * 3  # self-signed, other CA, another address


def test_conforming_test_targets_pass_the_tls_checks(pki: Dict[str, str]) -> None:
    """The faulty targets without a fault, in TLS mode: the TLS checks pass a second, independent TLS stack too."""
    with faulty_master(extra=_master_tls(pki)) as target:
        master = run_kit(["--target", target, "--strict-conformance", "--conformance-clause", ",".join(MASTER_TLS_CLAUSES),
                          *_kit_as_node(pki)])
    assert master.status == 0, _explain(master)
    node = run_kit(["--cn-command", faulty_cn_command(extra=_node_tls(pki)), "--strict-conformance",
                    "--conformance-clause", ",".join(CN_TLS_CLAUSES), *_kit_as_master(pki)])
    assert node.status == 0, _explain(node)


TLS_FAULTS = [("master", f) for f in MASTER_FAULTS if f.startswith("TLS-")] + [
    ("cn", f) for f in CN_FAULTS if f.startswith("TLS-")
]


def test_every_tls_clause_the_kit_tests_has_a_fault() -> None:
    assert [f for m, f in TLS_FAULTS if m == "master"] == list(MASTER_TLS_CLAUSES)
    assert [f for m, f in TLS_FAULTS if m == "cn"] == list(CN_TLS_CLAUSES)


@pytest.mark.parametrize("mode, fault", TLS_FAULTS, ids=[f"{m}-{f}" for m, f in TLS_FAULTS])
def test_tls_fault_fails_its_clause(pki: Dict[str, str], mode: str, fault: str) -> None:
    args = ["--conformance-clause", fault, "--strict-conformance"]
    if mode == "master":
        # TLS-2's fault is the certificate: one from the right CA for another host name only.
        cert = "wrong-name" if fault == "TLS-2" else "master"
        with faulty_master(fault, extra=_master_tls(pki, cert)) as target:
            run = run_kit(["--target", target, *args, *_kit_as_node(pki)])
    else:
        run = run_kit(["--cn-command", faulty_cn_command(fault, extra=_node_tls(pki)), *args, *_kit_as_master(pki)])
    assert run.status == 1, f"{mode} fault {fault}: exit status {run.status}\n{_explain(run)}"
    assert fault in run.failed(), f"{fault}: {run.outcomes().get(fault)}: {run.detail(fault)}\n{_explain(run)}"


def test_plain_mode_reports_the_tls_checks_as_not_run() -> None:
    with faulty_master() as target:
        run = run_kit(["--target", target, "--conformance-clause", ",".join(MASTER_TLS_CLAUSES)])
    assert run.status == 0, _explain(run)
    for cid in MASTER_TLS_CLAUSES:
        assert run.outcomes()[cid] == "skipped", cid
        assert run.detail(cid).startswith("not run: the master is tested in plain mode"), run.detail(cid)


def test_without_a_certificate_tool_the_checks_that_need_one_are_inconclusive(
    reference_master: str, pki: Dict[str, str], tmp_path: Path
) -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the cryptography package makes the certificates here")
    # A PATH without openssl: the kit can make no certificate of its own.
    run = run_kit(["--target", reference_master, "--conformance-clause", "TLS-4", *_kit_as_node(pki)],
                  env_extra={"PATH": str(tmp_path)})
    assert run.status == 5, _explain(run)
    assert run.outcomes()["TLS-4"] == "inconclusive"
    assert "neither with the cryptography package nor with the openssl command" in run.detail("TLS-4")


def test_tls_options_are_checked_before_any_test(pki: Dict[str, str]) -> None:
    run = run_kit(["--target", "127.0.0.1:9", "--tls-cert", pki["node.pem"], "--tls-key", pki["node.key"]])
    assert run.status == 4
    assert "a TLS master (--target) needs --tls-ca" in run.output
    run = run_kit(["--target", "127.0.0.1:9", "--tls-ca", os.devnull + ".missing"])
    assert run.status == 4
    assert "--tls-ca: no such file" in run.output


def test_explain_reads_a_tls_clause_and_help_offers_the_tls_options() -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "skyllh_cluster.conformance", "--explain", "TLS-4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("TLS-4 · MUST · In mutual TLS the master admits only a client certificate")
    assert "read it in: spec/tls-profile.md#tls-4--must--" in proc.stdout
    shown = subprocess.run([sys.executable, "-m", "skyllh_cluster.conformance", "--help"],
                           capture_output=True, text=True, timeout=60).stdout
    assert all(option in shown for option in ("--tls-ca FILE", "--tls-cert FILE", "--tls-key FILE"))
    assert len(shown.splitlines()) <= 60


def _handshake_pair(server: ssl.SSLContext, client: ssl.SSLContext, host: str = "127.0.0.1") -> str:
    """One handshake over a loopback connection; the client's negotiated version."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    errors: List[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ValueError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname=host) as tls:
                version = str(tls.version())
                tls.sendall(b"x")
    finally:
        thread.join(10)
        listener.close()
    assert not errors, errors
    return version


@pytest.mark.parametrize("tool", ["openssl", "cryptography"])
def test_the_kits_own_certificates_are_valid_from_their_own_ca(tool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The certificates the kit makes verify against their own CA: a target that refuses them refuses a CA, not a broken file."""
    from skyllh_cluster.conformance import tls

    if tool == "cryptography":
        pytest.importorskip("cryptography")
        made = tls.untrusted_certificates(tmp_path)
    else:
        if tls_certs.OPENSSL is None:
            pytest.skip("no openssl command")
        monkeypatch.setitem(sys.modules, "cryptography", None)  # import fails: the openssl path
        made = tls.untrusted_certificates(tmp_path)
        assert (tmp_path / "other-ca.srl").exists()  # openssl's serial file: the openssl path ran
    for server_name, ca in (("other-master", "other-ca"), ("self-signed", "self-signed")):
        server = tls.server_context(made[f"{server_name}.pem"], made[f"{server_name}.key"], made["other-ca.pem"])
        client = tls.client_context(made[f"{ca}.pem"], made["other-node.pem"], made["other-node.key"])
        for host in ("127.0.0.1", "localhost"):
            assert _handshake_pair(server, client, host) in ("TLSv1.2", "TLSv1.3")
