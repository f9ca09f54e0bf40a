"""The kit's side of the TLS profile (``spec/tls-profile.md``): contexts, handshakes, certificates.

The kit tests a target in TLS mode when it is given certificates:

* master mode (``--target``): ``--tls-ca`` is the CA that signs the master's
  certificate; every connection the kit opens is TLS, verified against it
  and the target's host name.  ``--tls-cert``/``--tls-key`` are the client
  certificate the kit presents: the target is then taken to be in mutual
  TLS, and the TLS-4 checks run;
* compute-node mode (``--cn-command``): ``--tls-cert``/``--tls-key`` are the
  server certificate of the kit's fake master (for the address it listens
  on, ``127.0.0.1`` by default); with ``--tls-ca`` it requires client
  certificates from that CA.  The node command must trust the kit's
  certificate (give the node the CA that signed it).

The protocol checks do not change: :mod:`.peer` wraps each socket right after
connect or accept, and the checks read and write application data as before.
The TLS checks need certificates the kit was not given (self-signed, from
another CA): :func:`untrusted_certificates` makes them at run time in a
temporary directory, with the ``cryptography`` package if it can be imported,
else with the ``openssl`` command; without either the checks that need them
are inconclusive.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import socket
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from .failures import KitError

__all__ = [
    "TLSSettings",
    "HandshakeFailed",
    "client_context",
    "server_context",
    "client_handshake",
    "server_handshake",
    "looks_like_tls",
    "reason_of",
    "untrusted_certificates",
    "NoCertificateTool",
    "UNTRUSTED_NAMES",
    "legacy",
    "legacy_works",
]

logger = logging.getLogger(__name__)

#: The names the kit's own certificates are made for (the kit's loopback listener).
UNTRUSTED_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TLSSettings:
    """The kit's TLS options, as given (paths to PEM files)."""

    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None

    @property
    def master_mode(self) -> bool:
        """Whether the kit talks TLS to a master (it needs the CA to verify it)."""
        return self.ca is not None

    @property
    def mutual(self) -> bool:
        """Whether the kit presents a client certificate to the master (the target is in mutual TLS)."""
        return self.ca is not None and self.cert is not None

    @property
    def node_mode(self) -> bool:
        """Whether the kit's fake master serves TLS to the nodes (it needs a server certificate)."""
        return self.cert is not None

    @property
    def any(self) -> bool:
        return self.ca is not None or self.cert is not None or self.key is not None

    def check(self) -> None:
        """Refuse combinations that cannot work, and files that cannot be read (:class:`ValueError`)."""
        if self.key is not None and self.cert is None:
            raise ValueError("--tls-key needs --tls-cert (the certificate of that key)")
        for option, path in (("--tls-ca", self.ca), ("--tls-cert", self.cert), ("--tls-key", self.key)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{option}: no such file {path!r}")
        try:
            if self.ca is not None:
                client_context(self.ca, self.cert, self.key)
            if self.cert is not None:
                server_context(self.cert, self.key, self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"the TLS files do not load: {reason_of(exc)}") from None


class HandshakeFailed(Exception):
    """A TLS handshake failed; ``reason`` says why in a few words, ``verify`` when a certificate did not verify."""

    def __init__(self, reason: str, *, verify: bool = False, closed: bool = False, timed_out: bool = False) -> None:
        self.reason = reason
        self.timed_out = timed_out
        self.verify = verify
        #: The peer closed or reset the connection instead of answering.
        self.closed = closed
        #: The socket of the failed handshake (closed unless a caller keeps it).
        self.sock: Optional[ssl.SSLSocket] = None
        super().__init__(reason)


def reason_of(error: BaseException) -> str:
    """A TLS or socket error in a few words (OpenSSL's reason code when there is one), bounded."""
    if isinstance(error, ssl.SSLCertVerificationError):
        text = f"certificate verify failed: {error.verify_message}"
    else:
        text = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text)[:200]


def client_context(cafile: Optional[str], certfile: Optional[str] = None, keyfile: Optional[str] = None) -> ssl.SSLContext:
    """A compute node's context: verifies the master against ``cafile`` and its name; presents ``certfile``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
    else:
        # The kit's own untrusted-certificate checks never verify.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context


def server_context(certfile: str, keyfile: Optional[str] = None, cafile: Optional[str] = None) -> ssl.SSLContext:
    """A master's context with ``certfile``; with ``cafile`` it requires client certificates from that CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    context.num_tickets = 0  # the kit resumes nothing; tickets would only add records after the handshake
    return context


def legacy(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` limited to TLS 1.0 and 1.1, the versions TLS-1 forbids; :class:`ValueError` if this ssl cannot.

    OpenSSL 3 offers them only at security level 0 (their handshake signs
    with MD5 and SHA-1), so the kit asks for that level on these contexts only.
    """
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ssl.TLSVersion.TLSv1 and TLSv1_1
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        raise ValueError(f"this ssl module cannot offer TLS 1.1: {reason_of(exc)}") from None
    return context


def legacy_works(certfile: str, keyfile: Optional[str]) -> Optional[str]:
    """Whether this ssl module can speak TLS 1.1 at all: None if it can, else why not.

    A handshake in memory between two legacy contexts, the server with
    ``certfile``, must end at TLS 1.1; only then does a target's refusal of
    the kit's legacy handshake say something about the target.
    """
    try:
        server = legacy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        server.load_cert_chain(certfile, keyfile)
        client = legacy(client_context(None))
    except (ValueError, OSError, ssl.SSLError) as exc:
        return str(exc)[:200]
    bios = [ssl.MemoryBIO() for _ in range(4)]
    ends = [client.wrap_bio(bios[0], bios[1]), server.wrap_bio(bios[2], bios[3], server_side=True)]
    done = [False, False]
    for _ in range(10):  # a TLS 1.1 handshake takes two round trips
        for i, end in enumerate(ends):
            if not done[i]:
                try:
                    end.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    return f"this ssl module cannot complete a TLS 1.1 handshake: {reason_of(exc)}"
        bios[2].write(bios[1].read())
        bios[0].write(bios[3].read())
        if all(done):
            break
    version = ends[0].version() if all(done) else None
    return None if version == "TLSv1.1" else f"this ssl module's TLS 1.1 handshake ended at {version}"


def _handshake(tls: ssl.SSLSocket, timeout: float) -> None:
    tls.settimeout(max(0.05, timeout))
    try:
        tls.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        raise HandshakeFailed(reason_of(exc), verify=True) from None
    except socket.timeout:
        raise HandshakeFailed(f"no TLS handshake within {timeout:g} s", timed_out=True) from None
    except (ssl.SSLEOFError, ConnectionError) as exc:
        raise HandshakeFailed(f"the peer closed the connection during the handshake ({reason_of(exc)})", closed=True) from None
    except (ssl.SSLError, OSError) as exc:
        raise HandshakeFailed(reason_of(exc)) from None


def client_handshake(
    sock: socket.socket, context: ssl.SSLContext, host: str, timeout: float, *, keep_failed: bool = False
) -> ssl.SSLSocket:
    """Run the client side of a handshake on ``sock`` (which it then owns); raise :class:`HandshakeFailed`.

    With ``keep_failed``, a handshake the peer ended by closing leaves its
    socket open in the exception's ``sock`` (for the caller to close).

    The server's name is ``host``, as the kit was given it: an IP address
    must match an IP entry of the certificate, a name a DNS entry (TLS-2).
    """
    tls = context.wrap_socket(sock, server_hostname=host if context.check_hostname else None, do_handshake_on_connect=False)
    try:
        _handshake(tls, timeout)
    except HandshakeFailed as failed:
        if keep_failed and failed.closed:
            failed.sock = tls
        else:
            tls.close()
        raise
    return tls


def server_handshake(sock: socket.socket, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    """Run the server side of a handshake on ``sock`` (which it then owns); raise :class:`HandshakeFailed`."""
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        _handshake(tls, timeout)
    except HandshakeFailed:
        tls.close()
        raise
    return tls


def looks_like_tls(data: bytes) -> bool:
    """Whether ``data`` starts like a TLS record (handshake or alert), which no frame does (TLS-5)."""
    return len(data) >= 3 and data[0] in (0x15, 0x16) and data[1] == 0x03 and data[2] <= 0x04


# -- certificates the kit was not given -------------------------------------------------
class NoCertificateTool(KitError):
    """Neither the ``cryptography`` package nor the ``openssl`` command is available."""


def untrusted_certificates(directory: Path) -> Dict[str, str]:
    """Write certificates no target was told to trust into ``directory``; return ``{name: path}``.

    * ``self-signed.pem``/``.key``: a self-signed server certificate for
      ``127.0.0.1`` and ``localhost``;
    * ``other-master.pem``/``.key``: a server certificate for the same names
      from ``other-ca.pem``, a CA made here;
    * ``other-node.pem``/``.key``: a client certificate from that CA.

    EC P-256 keys, valid for two days.  Raises :class:`NoCertificateTool`.
    """
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            raise NoCertificateTool(
                "the kit needs certificates it was not given (self-signed, from another CA) and can make them "
                "neither with the cryptography package nor with the openssl command: install one of them"
            ) from None
        _with_openssl(directory)
    else:
        _with_cryptography(directory)
    return {p.name: str(p) for p in sorted(directory.iterdir()) if p.suffix in (".pem", ".key")}


def _with_cryptography(directory: Path) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def write(name: str, cert: "x509.Certificate", key: "ec.EllipticCurvePrivateKey") -> None:
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )

    def make(name: str, issuer: Optional[Tuple["x509.Certificate", "ec.EllipticCurvePrivateKey"]], *, ca: bool = False,
             usage: Optional["x509.ObjectIdentifier"] = None, names: Tuple[str, ...] = ()) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer[0].subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if names:
            entries = []
            for entry in names:
                try:
                    entries.append(x509.IPAddress(ipaddress.ip_address(entry)))
                except ValueError:
                    entries.append(x509.DNSName(entry))
            builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
        write(name, cert, key)
        return cert, key

    other_ca = make("other-ca", None, ca=True)
    make("other-master", other_ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, names=UNTRUSTED_NAMES)
    make("other-node", other_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH, names=("node.invalid",))
    make("self-signed", None, usage=ExtendedKeyUsageOID.SERVER_AUTH, names=UNTRUSTED_NAMES)


def _openssl(directory: Path, *args: str) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NoCertificateTool(f"openssl could not make the kit's certificates: {str(exc)[:200]}") from None


def _with_openssl(directory: Path) -> None:
    sans = ",".join(f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in UNTRUSTED_NAMES)
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
    _openssl(directory, "req", "-x509", *ec_key, "-keyout", "other-ca.key", "-out", "other-ca.pem",
             "-subj", "/CN=conformance kit: another CA", "-config", "/dev/null",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl(directory, "req", "-x509", *ec_key, "-keyout", "self-signed.key", "-out", "self-signed.pem",
             "-subj", "/CN=conformance kit: self-signed", "-config", "/dev/null",
             "-addext", f"subjectAltName={sans}", "-addext", "extendedKeyUsage=serverAuth")
    for name, usage, names in (("other-master", "serverAuth", sans), ("other-node", "clientAuth", "DNS:node.invalid")):
        _openssl(directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=conformance kit: {name}",
                 "-config", "/dev/null")
        (directory / f"{name}.ext").write_text(
            f"basicConstraints=critical,CA:FALSE\nextendedKeyUsage={usage}\nsubjectAltName={names}\n"
        )
        _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "other-ca.pem", "-CAkey", "other-ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")


class CertificateStore:
    """The untrusted certificates of one run, made on first use in a temporary directory removed at the end."""

    def __init__(self) -> None:
        self._dir: Optional[tempfile.TemporaryDirectory] = None
        self._files: Optional[Dict[str, str]] = None
        self._problem: Optional[str] = None

    def files(self) -> Dict[str, str]:
        """``{name: path}`` (see :func:`untrusted_certificates`); raises :class:`NoCertificateTool`."""
        if self._problem is not None:
            raise NoCertificateTool(self._problem)
        if self._files is None:
            self._dir = tempfile.TemporaryDirectory(prefix="skyllh-kit-tls-")
            try:
                self._files = untrusted_certificates(Path(self._dir.name))
            except NoCertificateTool as exc:
                self._problem = str(exc)
                raise
        return self._files

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
            self._files = None
