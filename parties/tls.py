"""Mutual TLS for every gRPC channel: a private CA and one certificate per role.

``write_certs(out_dir)`` makes (with the ``cryptography`` package, ECDSA P-256):

* ``ca.pem`` / ``ca.key``: a self-signed CA (the key stays with whoever runs
  ``mpcvit certs``; the processes need only ``ca.pem``);
* ``<role>.pem`` / ``<role>.key`` for each of :data:`ROLES`, signed by the CA,
  valid for server and client auth, with SANs ``localhost``, ``127.0.0.1``,
  the role name (``party0``, ... for docker compose) and any extra ``hosts``.

Servers require and verify client certificates
(``grpc.ssl_server_credentials(..., require_client_auth=True)``); clients
verify the server against the CA. A peer without a certificate from this CA
is refused during the handshake. Plaintext is used only when a caller passes
no credentials (``--insecure`` on the command line).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("dealer", "party0", "party1", "coordinator")
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
VALIDITY = dt.timedelta(days=825)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mpcvit"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def make_ca(common_name: str = "mpcvit CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_role_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, role: str, hosts: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for ``role`` (CN = role), usable as TLS server and client."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(role))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_san([*DEFAULT_HOSTS, role, *hosts]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: Path, data: bytes, private: bool) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_certs(out_dir: str | Path, hosts: list[str] | None = None, roles: tuple[str, ...] = ROLES) -> list[Path]:
    """Make a CA and one certificate + key per role under ``out_dir``; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca()
    written = [out / "ca.pem", out / "ca.key"]
    _write(written[0], ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(written[1], _key_pem(ca_key), private=True)
    for role in roles:
        key, cert = make_role_cert(ca_key, ca_cert, role, list(hosts or []))
        _write(out / f"{role}.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
        _write(out / f"{role}.key", _key_pem(key), private=True)
        written += [out / f"{role}.pem", out / f"{role}.key"]
    logger.info("wrote a CA and certificates for %s under %s", ", ".join(roles), out)
    return written


def _read(certs_dir: str | Path, name: str) -> bytes:
    path = Path(certs_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (make the certificates with 'mpcvit certs --out {certs_dir}')")
    return path.read_bytes()


def server_credentials(certs_dir: str | Path, role: str) -> grpc.ServerCredentials:
    """Server side: present ``role``'s certificate, require a client certificate from the CA."""
    return grpc.ssl_server_credentials(
        [(_read(certs_dir, f"{role}.key"), _read(certs_dir, f"{role}.pem"))],
        root_certificates=_read(certs_dir, "ca.pem"),
        require_client_auth=True,
    )


def channel_credentials(certs_dir: str | Path, role: str) -> grpc.ChannelCredentials:
    """Client side: verify the server against the CA, present ``role``'s certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(certs_dir, "ca.pem"),
        private_key=_read(certs_dir, f"{role}.key"),
        certificate_chain=_read(certs_dir, f"{role}.pem"),
    )


def peer_role(context: grpc.ServicerContext) -> str | None:
    """The CN of the authenticated client certificate of a call (None on plaintext)."""
    names = context.auth_context().get("x509_common_name")
    return names[0].decode() if names else None
