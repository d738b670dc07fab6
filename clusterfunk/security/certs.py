"""``clusterfunk certs``: a cluster CA and one certificate per node, for mutual TLS.

::

    clusterfunk certs --out tls/ --nodes n1,n2,n3

writes ``tls/ca.pem`` and ``tls/ca-key.pem`` (the cluster CA), ``tls/<node>.pem`` and
``tls/<node>-key.pem`` for each node, and ``tls/client.pem`` / ``tls/client-key.pem``
for ``ctl`` and other clients. Each node certificate names its node id (the
``subjectAltName`` DNS entry and the common name), which the transport checks
against the id a peer claims (:mod:`clusterfunk.runtime.tls`). Keys are ECDSA P-256,
written with mode 0600 (the directory, when created, 0700).

If ``DIR`` already holds a CA, it is reused: run the command again with new node ids
to add nodes to a cluster. Existing node or client files are kept unless ``--force``
(which re-issues them: certificate rotation, followed by a TLS reload on the node).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clusterfunk.runtime.tls import CLIENT_NAME

__all__ = ["CertError", "add_parser", "handler", "issue", "main", "make_ca"]

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

CA_DAYS = 3650
CERT_DAYS = 825


class CertError(ValueError):
    """Bad arguments or unusable existing files."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(name: str = "clusterfunk cluster CA", days: int = CA_DAYS
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed CA certificate and its key."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca_cert: x509.Certificate, ca_key: Any, name: str, days: int = CERT_DAYS
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for node (or client) ``name``, signed by the CA: usable both to
    accept connections and to dial them (server and client auth)."""
    key = _key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write ``path`` atomically; keys are created 0600 (never readable by others)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _pem_key(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def parse_nodes(text: str) -> list[str]:
    """``a,b,c`` -> node ids, checked: usable as certificate names and file names."""
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    if not nodes:
        raise CertError("--nodes needs at least one node id")
    for n in nodes:
        if not _NODE_ID.match(n):
            raise CertError(f"node id {n!r} is not usable in a certificate: use letters, "
                            "digits, '.', '_' and '-' (at most 63, starting alphanumeric)")
        if n in (CLIENT_NAME, "ca"):
            raise CertError(f"node id {n!r} is reserved (it names the {n} files)")
    if len(set(nodes)) != len(nodes):
        raise CertError("--nodes lists a node id twice")
    return nodes


def write_certs(out: Path, nodes: Sequence[str], *, force: bool = False,
                days: int = CERT_DAYS) -> list[Path]:
    """Create (or reuse) the CA in ``out`` and write the node and client files.
    Returns the files written."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_pem, ca_key_pem = out / "ca.pem", out / "ca-key.pem"
    written: list[Path] = []
    if ca_pem.exists() != ca_key_pem.exists():
        raise CertError(f"{out} has only one of ca.pem and ca-key.pem")
    if ca_pem.exists():
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
            ca_key = serialization.load_pem_private_key(ca_key_pem.read_bytes(), None)
        except (ValueError, TypeError) as exc:
            raise CertError(f"cannot reuse the CA in {out}: {exc}") from None
    else:
        ca_cert, ca_key = make_ca()
        _write(ca_key_pem, _pem_key(ca_key), True)
        _write(ca_pem, ca_cert.public_bytes(serialization.Encoding.PEM), False)
        written += [ca_pem, ca_key_pem]
    for name in [*nodes, CLIENT_NAME]:
        cert_path, key_path = out / f"{name}.pem", out / f"{name}-key.pem"
        if not force and (cert_path.exists() or key_path.exists()):
            if name == CLIENT_NAME:
                continue  # keep the existing client certificate
            raise CertError(f"{cert_path} exists (use --force to re-issue it)")
        cert, key = issue(ca_cert, ca_key, name, days)
        _write(key_path, _pem_key(key), True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), False)
        written += [cert_path, key_path]
    return written


def handler(args: argparse.Namespace) -> int:
    try:
        nodes = parse_nodes(args.nodes)
        written = write_certs(Path(args.out), nodes, force=args.force, days=args.days)
    except (CertError, OSError) as exc:
        print(f"clusterfunk certs: error: {exc}", file=sys.stderr)
        return 2
    for p in written:
        print(p)
    return 0


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="directory for the files (created 0700 if missing)")
    parser.add_argument("--nodes", required=True, metavar="A,B,C",
                        help="comma-separated node ids, one certificate each")
    parser.add_argument("--days", type=int, default=CERT_DAYS,
                        help=f"validity of node and client certificates (default {CERT_DAYS})")
    parser.add_argument("--force", action="store_true",
                        help="re-issue node and client certificates that already exist")
    parser.set_defaults(func=handler)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``certs`` subcommand on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "certs",
        help="create a cluster CA and node certificates for mutual TLS",
        description="Create (or reuse) a cluster CA in DIR and write DIR/<node>.pem and "
        "DIR/<node>-key.pem for each node, plus DIR/client.pem and DIR/client-key.pem.",
    )
    return _configure(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _configure(argparse.ArgumentParser(prog="clusterfunk certs",
                                                description=__doc__.splitlines()[0]))
    return handler(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
