"""Mutual TLS for the stream transport: configuration, contexts, peer identity.

A cluster has one CA. Every node has a certificate signed by it whose name is the
node id: a ``subjectAltName`` DNS entry (and the subject common name) equal to the
id. Clients (``ctl``) get one named ``client``. ``clusterfunk certs`` writes them
(:mod:`clusterfunk.security.certs`); :func:`load_tls_dir` loads one node's.

On a connection the dialer is the TLS client and the acceptor the TLS server;
both present a certificate and both require one from the CA (mutual TLS):

* The acceptor checks the dialer's certificate against the CA (the handshake
  fails otherwise) and then checks that the node id the dialer claims in its
  stream hello is one of the certificate's names. The connection's
  *authenticated identity* is that node id; the transport passes it with every
  frame (``handler.on_frame_from(src, identity, data)``, see
  :mod:`clusterfunk.runtime.net`).
* The dialer checks that the acceptor's certificate comes from the CA. It does
  not check *which* node it is (it knows an address, not an id): the acceptor
  never writes on the connection, and every CA-signed party is a cluster member.

:meth:`TLSConfig.reload` re-reads the files and builds new contexts; connections
opened afterwards use them, open ones keep theirs (certificate rotation without
a restart). Only TLS 1.3 is offered.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

#: The identity of connections without TLS: nothing is authenticated.
UNAUTHENTICATED: str | None = None

#: The certificate name ``clusterfunk certs`` gives the client (``ctl``) certificate.
CLIENT_NAME = "client"


class TLSError(ValueError):
    """The TLS files are missing, unreadable or do not belong together."""


def _server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual: the dialer must show a CA-signed cert
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.num_tickets = 0  # the acceptor never writes after the handshake; no resumption
    return ctx


def _client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # The dialer knows an address, not a node id: it checks the CA, not a name.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class TLSConfig:
    """One node's TLS material: the CA, its certificate and key, and its node id.

    ``node_id`` is what this node claims in its stream hello; it must be a name in
    ``cert``. The contexts are built at once (a :class:`TLSError` names the file
    that is wrong) and again by :meth:`reload`.
    """

    def __init__(self, ca: str | os.PathLike[str], cert: str | os.PathLike[str],
                 key: str | os.PathLike[str], node_id: str) -> None:
        if not node_id:
            raise TLSError("a TLS configuration needs the node id its certificate names")
        self.ca = Path(ca)
        self.cert = Path(cert)
        self.key = Path(key)
        self.node_id = node_id
        self.reloads = 0
        self._server, self._client = self._build()

    def _build(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        for what, path in (("CA", self.ca), ("certificate", self.cert), ("key", self.key)):
            if not path.is_file():
                raise TLSError(f"TLS {what} file not found: {path}")
        try:
            server = _server_context(self.ca, self.cert, self.key)
            client = _client_context(self.ca, self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(f"cannot load TLS files {self.cert}, {self.key} "
                           f"(CA {self.ca}): {exc}") from None
        names = cert_names(_decode_cert_file(self.cert))
        if self.node_id not in names:
            raise TLSError(f"certificate {self.cert} names {sorted(names)}, "
                           f"not the node id {self.node_id!r}")
        return server, client

    def reload(self) -> None:
        """Re-read the files and use the new contexts for connections opened from now
        on. On an error (:class:`TLSError`) the old contexts stay in use."""
        self._server, self._client = self._build()
        self.reloads += 1

    @property
    def server_context(self) -> ssl.SSLContext:
        """For accepted connections (checks the dialer's certificate)."""
        return self._server

    @property
    def client_context(self) -> ssl.SSLContext:
        """For dialled connections (checks the acceptor's certificate against the CA)."""
        return self._client


def load_tls_dir(directory: str | os.PathLike[str], node_id: str) -> TLSConfig:
    """The TLS configuration of ``node_id`` from a ``clusterfunk certs`` directory:
    ``ca.pem``, ``<node_id>.pem`` and ``<node_id>-key.pem``."""
    d = Path(directory)
    if not d.is_dir():
        raise TLSError(f"TLS directory not found: {d}")
    if not node_id or "/" in node_id or node_id.startswith("."):
        raise TLSError(f"not a usable node id for a certificate file name: {node_id!r}")
    return TLSConfig(d / "ca.pem", d / f"{node_id}.pem", d / f"{node_id}-key.pem", node_id)


def _decode_cert_file(path: Path) -> dict[str, Any]:
    """The certificate at ``path`` in the form of ``SSLSocket.getpeercert()``."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TLSError(f"cannot read certificate {path}: {exc}") from None
    out: dict[str, Any] = {}
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    out["subject"] = tuple((("commonName", str(a.value)),) for a in cns)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        out["subjectAltName"] = tuple(("DNS", n) for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return out


def cert_names(cert: dict[str, Any] | None) -> frozenset[str]:
    """The names a verified peer certificate (``getpeercert()`` form) stands for: its
    DNS ``subjectAltName`` entries, or its subject common name if it has none."""
    if not cert:
        return frozenset()
    dns = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS" and isinstance(v, str)]
    if dns:
        return frozenset(dns)
    cns = [v for rdn in cert.get("subject", ()) for k, v in rdn
           if k == "commonName" and isinstance(v, str)]
    return frozenset(cns)


def peer_identity(cert: dict[str, Any] | None, claimed: str | None) -> str | None:
    """The authenticated identity of a TLS peer that claims ``claimed`` in its hello:
    ``claimed`` if the certificate names it, else None (the claim is false)."""
    if claimed is None:
        return None
    return claimed if claimed in cert_names(cert) else None


__all__ = [
    "CLIENT_NAME",
    "UNAUTHENTICATED",
    "TLSConfig",
    "TLSError",
    "cert_names",
    "load_tls_dir",
    "peer_identity",
]
