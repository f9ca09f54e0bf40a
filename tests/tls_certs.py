"""Certificates for the TLS tests, made fresh with the ``openssl`` command (never checked in).

:func:`make_pki` writes into a directory:

* ``ca.pem``/``ca.key``: the test CA;
* ``master.pem``/``master.key``: the master's certificate from that CA, for
  ``127.0.0.1`` and ``localhost`` (serverAuth);
* ``node.pem``/``node.key``: a compute node's client certificate from that CA (clientAuth);
* ``other-ca.pem`` and ``other-node.pem``/``other-node.key``: another CA and
  a client certificate from it;
* ``other-master.pem``/``other-master.key``: a master certificate for the
  right names from the other CA;
* ``self-signed.pem``/``self-signed.key``: a self-signed master certificate
  for the right names;
* ``wrong-name.pem``/``wrong-name.key``: a master certificate from the test CA
  for another host name only.

EC P-256 keys: a handshake costs far less CPU than with RSA, which matters
on the shared test machine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict

OPENSSL = shutil.which("openssl")

def _leaf_extensions(usage: str, names: str) -> str:
    return (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName={names}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True, timeout=60)  # type: ignore[list-item]


def _key(directory: Path, name: str) -> None:
    _openssl(directory, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")


def _ca(directory: Path, name: str, subject: str) -> None:
    _key(directory, name)
    _openssl(
        directory, "req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={subject}", "-config", "/dev/null", "-addext",
        "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )


def issue(directory: Path, name: str, ca: str, usage: str, names: str) -> None:
    """Write ``name.pem``/``name.key``: a certificate from the CA ``ca`` for ``names`` (subjectAltName syntax)."""
    _key(directory, name)
    _openssl(directory, "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", "-config", "/dev/null")
    (directory / f"{name}.ext").write_text(_leaf_extensions(usage, names))
    _openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-set_serial", str(abs(hash(name)) % 10**12 + 1), "-out", f"{name}.pem", "-days", "2",
        "-extfile", f"{name}.ext",
    )


def _self_signed(directory: Path, name: str, names: str) -> None:
    _key(directory, name)
    _openssl(
        directory, "req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}", "-config", "/dev/null", "-addext", f"subjectAltName={names}",
        "-addext", "extendedKeyUsage=serverAuth",
    )


MASTER_NAMES = "IP:127.0.0.1,DNS:localhost"


def make_pki(directory: Path) -> Dict[str, str]:
    """Write the certificates listed in the module's docstring; return ``{name: path}`` of every file."""
    if OPENSSL is None:
        raise RuntimeError("the openssl command is not installed")
    _ca(directory, "ca", "skyllh-cluster test CA")
    _ca(directory, "other-ca", "another CA")
    issue(directory, "master", "ca", "serverAuth", MASTER_NAMES)
    issue(directory, "node", "ca", "clientAuth", "DNS:node.test")
    issue(directory, "other-node", "other-ca", "clientAuth", "DNS:node.test")
    issue(directory, "other-master", "other-ca", "serverAuth", MASTER_NAMES)
    issue(directory, "wrong-name", "ca", "serverAuth", "DNS:elsewhere.test")
    _self_signed(directory, "self-signed", MASTER_NAMES)
    return {path.name: str(path) for path in directory.iterdir()}
