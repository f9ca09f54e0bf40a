"""The TLS profile and the allow-list: contexts from files, and who may connect.

``spec/tls-profile.md`` is the normative text; :data:`TLS_CLAUSES` is its
index in code, kept identical to it by ``tests/test_tls_spec.py``.

* :func:`server_context` and :func:`client_context` build the standard
  library's :class:`ssl.SSLContext` for each role from PEM files, with the
  profile's settings (TLS 1.2 at least, TLS 1.3 preferred; the compute node
  checks the master's certificate and host name; the master checks client
  certificates when mutual TLS is required).
* :class:`AllowList` is the master's access control in either mode: the
  networks a connection may come from.
* :func:`looks_like_tls_record` recognises a TLS record header where a frame
  was expected, so that a plain peer can say "this is TLS" instead of
  "bad frame" (TLS-5).

The mode is configuration, never negotiated (TLS-6): a master or compute node
given a context speaks TLS on every connection, one without speaks plain TCP.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Iterable, Optional, Tuple, Union

from .clauses import Clause, Level, Role

__all__ = [
    "server_context",
    "client_context",
    "AllowList",
    "looks_like_tls_record",
    "failure_reason",
    "TLS_CLAUSES",
    "MINIMUM_VERSION",
]

#: The oldest protocol version either role accepts (TLS-1).
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


_M, _S = Level.MUST, Level.SHOULD
_ANY, _MST, _CN = Role.ANY, Role.MASTER, Role.COMPUTE_NODE

_TABLE = (
    Clause("TLS-1", _M, _ANY, "In the TLS profile every connection is TLS 1.2 or later, and frames run unchanged inside it"),
    Clause("TLS-2", _M, _MST, "The master presents a certificate chain for the name compute nodes connect to"),
    Clause("TLS-3", _M, _CN, "The compute node verifies the master's certificate against its configured CA and the host name"),
    Clause("TLS-4", _M, _MST, "In mutual TLS the master admits only a client certificate that verifies against its CA"),
    Clause("TLS-5", _M, _ANY, "A failed handshake or a plain peer costs only its connection, and nothing of it is decoded"),
    Clause("TLS-6", _M, _ANY, "The mode is configuration: neither role ever falls back to plain TCP"),
    Clause("TLS-7", _M, _MST, "The master completes handshakes without blocking, within the registration bound"),
    Clause("TLS-8", _S, _MST, "The master closes a connection from outside its allow-list at accept, before reading from it"),
    Clause("TLS-9", _M, _ANY, "The plain profile stays the default and byte-compatible with the original"),
)

#: The clauses of the TLS profile by ID, in the order of ``spec/tls-profile.md``:
#: :class:`~skyllh_cluster.clauses.Clause` objects, in a table of their own
#: until the profile's range joins ``CLAUSES``.
TLS_CLAUSES = {clause.id: clause for clause in _TABLE}


def server_context(
    certfile: str,
    keyfile: Optional[str] = None,
    *,
    cafile: Optional[str] = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """The master's context: its certificate chain, and with mutual TLS the CA that signs the nodes'.

    Args:
        certfile: PEM file with the master's certificate (and its chain).
        keyfile: PEM file with its private key (default: in ``certfile``).
        cafile: PEM file with the CA certificates that client certificates
            must chain to.  Required with ``require_client_cert``.
        require_client_cert: Mutual TLS (TLS-4): a node that presents no
            certificate, or one that does not verify against ``cafile``,
            fails the handshake.

    Raises:
        ValueError: ``require_client_cert`` without ``cafile``.
        OSError, ssl.SSLError: a file cannot be read or does not hold what it should.
    """
    if require_client_cert and cafile is None:
        raise ValueError("requiring client certificates needs the CA that signs them (cafile)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(certfile, keyfile)
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    # The master sends nothing that a session ticket would save; a ticket is
    # two more records per handshake on a master that makes thousands.
    context.num_tickets = 0
    return context


def client_context(
    cafile: Optional[str] = None, certfile: Optional[str] = None, keyfile: Optional[str] = None
) -> ssl.SSLContext:
    """The compute node's context: verifies the master (TLS-3), and presents a client certificate if given.

    Args:
        cafile: PEM file with the CA certificates the master's certificate
            must chain to (default: the system's trust store).
        certfile: PEM file with the node's client certificate, for mutual TLS.
        keyfile: PEM file with its private key (default: in ``certfile``).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    context.minimum_version = MINIMUM_VERSION
    if cafile is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.load_verify_locations(cafile=cafile)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    elif keyfile is not None:
        raise ValueError("a client key needs its certificate (certfile)")
    return context


def looks_like_tls_record(data: bytes) -> bool:
    """Whether ``data`` starts like a TLS record (handshake or alert), not like a frame.

    A frame is ``len:u16le`` and a pickle that starts with ``0x80``; a TLS
    record is a content type (``0x15`` alert, ``0x16`` handshake), then
    ``0x03`` and a minor version byte of at most 4.  Read as a frame, the
    record's minor version is the payload's first byte, which no command's
    pickle starts with, so the two cannot be confused (TLS-5).
    """
    return len(data) >= 3 and data[0] in (0x15, 0x16) and data[1] == 0x03 and data[2] <= 0x04


def failure_reason(error: OSError) -> str:
    """A TLS or socket error's reason in a few words, for one log or error line.

    OpenSSL's reason code (``CERTIFICATE_VERIFY_FAILED``,
    ``WRONG_VERSION_NUMBER``) when there is one, else the system's message,
    else the error's type; at most 200 characters.
    """
    reason = getattr(error, "reason", None) or error.strerror or type(error).__name__
    return str(reason)[:200]


class AllowList:
    """The networks that may connect to a master (TLS-8).

    Built from networks and single addresses (``"10.0.0.0/8"``,
    ``"192.0.2.5"``, ``"2001:db8::/32"``).  An IPv4 peer seen through an
    IPv6 socket (``::ffff:10.1.2.3``) is checked as its IPv4 address.
    """

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[Union[str, _Network]]) -> None:
        parsed = []
        for network in networks:
            try:
                parsed.append(ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network)
            except ValueError:
                raise ValueError(f"{str(network)[:60]!r} is not an IP address or network") from None
        if not parsed:
            raise ValueError("an allow-list needs at least one network")
        self.networks: Tuple[_Network, ...] = tuple(parsed)

    @classmethod
    def parse(cls, text: str) -> "AllowList":
        """An allow-list from a comma-separated list, as ``--allow`` takes it."""
        return cls(part.strip() for part in text.split(",") if part.strip())

    def __contains__(self, address: object) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)  # type: ignore[arg-type]
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def __str__(self) -> str:
        return ",".join(str(network) for network in self.networks)

    def __repr__(self) -> str:
        return f"AllowList({str(self)!r})"
