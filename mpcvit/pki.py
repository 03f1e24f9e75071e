"""The deployment's PKI: a CA, one key and certificate per role, and signed party sealing keys.

Roles are :data:`ROLES`. Each role makes its own private key and a
certificate signing request (:func:`make_request`); the CA operator signs the
request for the role it names (:func:`sign_request`) and returns only the
certificate. No private key ever leaves the directory where it was made.

**The role field.** A certificate names its role twice, both set by the CA
and never copied from the request: the subject CN (``party0``, ...), which
servers read from the TLS auth context, and one DNS SAN
``<role>.role.mpcvit.invalid`` (:func:`role_dns_name`), which clients check
during the TLS handshake by setting ``grpc.ssl_target_name_override`` to the
role they expect (``.invalid`` is reserved and never resolves: it is a label
for the check, not an address). The CA refuses requests that ask for any name
under :data:`ROLE_DOMAIN`, so only the role's own certificate carries it. The
other SANs are the hostnames the role asked for (``--hosts``).

**Party sealing keys.** A party's long-term X25519 key (``mpcvit.sealing``)
is bound to its identity: the party signs
``"mpcvit party sealing key v1" || 0x00 || rank || public key`` with its TLS
certificate key (ECDSA P-256, SHA-256), and clients check the signature, the
certificate's chain to the CA they were given, its validity and its role
(:func:`verify_party_key`), or compare the key with a pinned SHA-256
fingerprint (:func:`key_fingerprint`).

Private key files must be readable by their owner only (:func:`check_private_file`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("dealer", "party0", "party1", "coordinator")
PARTY_ROLES: tuple[str, ...] = ("party0", "party1")
ROLE_DOMAIN = "role.mpcvit.invalid"
ORGANIZATION = "mpcvit"
VALIDITY = dt.timedelta(days=825)
CA_VALIDITY = dt.timedelta(days=3650)
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
CA_DIR = "ca"
SEALING_KEY_FILE = "{role}.x25519"
KEY_STATEMENT = b"mpcvit party sealing key v1"


class PkiError(ValueError):
    """A request, certificate or key file that the PKI refuses."""


class KeyPermissionError(PkiError):
    """A private key file that others than its owner may read."""


class PartyKeyError(PkiError):
    """A party's sealing key whose binding to the party does not verify."""


# -- names -------------------------------------------------------------------------


def check_role(role: str) -> str:
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


def role_dns_name(role: str) -> str:
    """The DNS SAN that only ``role``'s certificate carries, and that its clients check."""
    return f"{check_role(role)}.{ROLE_DOMAIN}"


def party_role(rank: int) -> str:
    if rank not in (0, 1):
        raise PkiError(f"rank must be 0 or 1, got {rank}")
    return f"party{rank}"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_names(hosts: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def _in_role_domain(name: str) -> bool:
    name = name.lower().rstrip(".")
    return name == ROLE_DOMAIN or name.endswith("." + ROLE_DOMAIN)


def cert_role(cert: x509.Certificate) -> str | None:
    """The role a certificate names: its one role DNS SAN, agreeing with its CN; None otherwise."""
    try:
        dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return None
    roles = [n[: -len(ROLE_DOMAIN) - 1] for n in dns if _in_role_domain(n)]
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(roles) != 1 or roles[0] not in ROLES or cns != [roles[0]]:
        return None
    return roles[0]


# -- keys and files ----------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def check_private_file(path: Path) -> None:
    """Refuse a private key file that its group or others may read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyPermissionError(f"{path} is readable by others (mode {mode:04o}): run 'chmod 600 {path}'")


def read_private(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    check_private_file(path)
    return path.read_bytes()


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(read_private(path), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an EC private key")
    return key


# -- CA, requests, signing ------------------------------------------------------------


def make_ca(common_name: str = "mpcvit CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_request(role: str, hosts: list[str]) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    """A new key for ``role`` and a request for a certificate naming ``hosts`` (the CA adds the role)."""
    check_role(role)
    for host in hosts:
        if _in_role_domain(host):
            raise PkiError(f"{host}: names under {ROLE_DOMAIN} are set by the CA, not requested")
    key = new_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(role))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(hosts)), critical=False)
    return key, builder.sign(key, hashes.SHA256())


def requested_hosts(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def sign_request(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, csr: x509.CertificateSigningRequest, role: str
) -> x509.Certificate:
    """The CA's certificate for ``role`` over the request's key: CN and role SAN from the CA, hostnames from the request."""
    check_role(role)
    if not csr.is_signature_valid:
        raise PkiError("the request's signature does not verify (corrupt or not made with its key)")
    asked = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if asked != [role]:
        raise PkiError(f"the request is for {asked or 'no role'}, not {role}: sign each role's own request")
    hosts = requested_hosts(csr)
    for host in hosts:
        if _in_role_domain(host):
            raise PkiError(f"the request asks for {host}: names under {ROLE_DOMAIN} are set by the CA only")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PkiError("the request's key is not an EC key")
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(role))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(role_dns_name(role)), *_general_names(hosts)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


# -- the workflow's file steps (what `mpcvit certs ca|request|sign|local` run) ---------------------


def create_ca(out_dir: str | Path, replace: bool = False) -> list[Path]:
    """``ca.key`` (0600) and ``ca.pem`` in ``out_dir``; refuses to overwrite a CA key unless ``replace``."""
    out = Path(out_dir)
    if (out / "ca.key").exists() and not replace:
        raise PkiError(f"{out / 'ca.key'} exists: refusing to replace a CA key")
    key, cert = make_ca()
    write_private(out / "ca.key", key_pem(key))
    write_public(out / "ca.pem", cert_pem(cert))
    return [out / "ca.key", out / "ca.pem"]


def create_request(role: str, out_dir: str | Path, hosts: list[str]) -> list[Path]:
    """``<role>.key`` (0600) and ``<role>.csr`` in ``out_dir``; a party also gets its sealing key ``<role>.x25519`` (0600)."""
    out = Path(out_dir)
    key, csr = make_request(role, hosts)
    write_private(out / f"{role}.key", key_pem(key))
    write_public(out / f"{role}.csr", csr.public_bytes(serialization.Encoding.PEM))
    written = [out / f"{role}.key", out / f"{role}.csr"]
    if role in PARTY_ROLES:
        from mpcvit.sealing import generate_keypair

        pair = generate_keypair()
        write_private(out / SEALING_KEY_FILE.format(role=role), pair.private)
        written.append(out / SEALING_KEY_FILE.format(role=role))
        logger.info("%s sealing key fingerprint (for clients that pin it): %s", role, key_fingerprint(pair.public))
    return written


def sign_file(ca_dir: str | Path, csr_path: str | Path, role: str, out_path: str | Path) -> Path:
    """Sign the request at ``csr_path`` for ``role`` with the CA in ``ca_dir``; write the certificate."""
    ca = Path(ca_dir)
    ca_key = load_key(ca / "ca.key")
    ca_cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    csr = x509.load_pem_x509_csr(Path(csr_path).read_bytes())
    cert = sign_request(ca_key, ca_cert, csr, role)
    write_public(Path(out_path), cert_pem(cert))
    logger.info("signed %s for %s (hosts: %s)", out_path, role, ", ".join(requested_hosts(csr)) or "none")
    return Path(out_path)


def create_local(out_dir: str | Path, hosts: list[str] | None = None, roles: tuple[str, ...] = ROLES) -> dict[str, Path]:
    """The whole workflow on one machine: ``OUT/ca/`` (CA key + certificate) and ``OUT/<role>/`` per role.

    Each role's directory gets its own key, its request, the certificate the CA
    signed (hostnames: ``hosts`` and the role's name) and ``ca.pem``: exactly
    what that role's process reads (``--certs OUT/<role>``).
    Returns the directory of each role (and of the CA under ``"ca"``).
    """
    out = Path(out_dir)
    hosts = list(hosts if hosts is not None else LOOPBACK_HOSTS)
    create_ca(out / CA_DIR, replace=True)  # a fresh set-up each time (the demo's and the tests')
    dirs = {CA_DIR: out / CA_DIR}
    for role in roles:
        role_dir = out / role
        create_request(role, role_dir, [*hosts, role])  # the role's name too: the compose service name
        sign_file(out / CA_DIR, role_dir / f"{role}.csr", role, role_dir / f"{role}.pem")
        write_public(role_dir / "ca.pem", (out / CA_DIR / "ca.pem").read_bytes())
        dirs[role] = role_dir
    logger.info("CA in %s; %s each in their own directory under %s", out / CA_DIR, ", ".join(roles), out)
    return dirs


def role_dir(certs_dir: str | Path, role: str) -> Path:
    """Where ``role``'s files are: ``certs_dir`` itself, or its ``<role>/`` folder when ``certs_dir`` is a local set-up's root."""
    base = Path(certs_dir)
    sub = base / role
    return sub if (sub / f"{role}.key").is_file() else base


# -- party sealing keys -------------------------------------------------------------


def key_fingerprint(public_key: bytes) -> str:
    """``sha256:<hex>`` of a 32-byte X25519 public key (what a client pins)."""
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def _statement(rank: int, public_key: bytes) -> bytes:
    return KEY_STATEMENT + b"\x00" + bytes([rank]) + public_key


def sign_party_key(tls_key: ec.EllipticCurvePrivateKey, rank: int, public_key: bytes) -> bytes:
    """The party's signature (DER ECDSA) binding its sealing key to its rank."""
    party_role(rank)
    return tls_key.sign(_statement(rank, public_key), ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True)
class PartyKeyProof:
    """What a party publishes about its sealing key: the key, its certificate (PEM) and its signature."""

    rank: int
    public_key: bytes
    certificate: bytes
    signature: bytes


def verify_party_key(proof: PartyKeyProof, ca_pem: bytes, now: dt.datetime | None = None) -> None:
    """Check that ``proof.public_key`` is party ``proof.rank``'s key under the CA ``ca_pem``; ``PartyKeyError`` says why not."""
    who = f"party {proof.rank}"
    if len(proof.public_key) != 32:
        raise PartyKeyError(f"{who}: the sealing key has {len(proof.public_key)} bytes, expected 32")
    if not proof.certificate or not proof.signature:
        raise PartyKeyError(f"{who}: the coordinator gave no certificate or signature for the sealing key (a party without TLS?)")
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(proof.certificate)
    except ValueError as exc:
        raise PartyKeyError(f"{who}: unreadable certificate: {exc}") from exc
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PartyKeyError(f"{who}: the certificate was not issued by the given CA ({ca.subject.rfc4514_string()})") from exc
    now = now or dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PartyKeyError(f"{who}: the certificate is not valid now (valid {cert.not_valid_before_utc} to {cert.not_valid_after_utc})")
    role = cert_role(cert)
    if role != party_role(proof.rank):
        raise PartyKeyError(f"{who}: the certificate names role {role!r}, not {party_role(proof.rank)!r}")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise PartyKeyError(f"{who}: the certificate's key is not an EC key")
    try:
        public.verify(proof.signature, _statement(proof.rank, proof.public_key), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise PartyKeyError(f"{who}: the sealing key is not signed by the party's certificate key (substituted key?)") from exc


def check_pinned(rank: int, public_key: bytes, pinned: str) -> None:
    """Compare a party's sealing key with a pinned fingerprint (``sha256:<hex>`` or bare hex)."""
    want = pinned.lower().removeprefix("sha256:")
    got = key_fingerprint(public_key).removeprefix("sha256:")
    if want != got:
        raise PartyKeyError(f"party {rank}: the sealing key's fingerprint sha256:{got} is not the pinned sha256:{want}")


# -- addresses ------------------------------------------------------------------------


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or a bare host) is a loopback address: 127.0.0.0/8, ::1 or localhost."""
    host = address
    if host.startswith("["):
        host = host[1 : host.index("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.strip().lower()
    if host in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(flag: str, addresses: dict[str, str]) -> None:
    """Refuse ``flag`` (plaintext) unless every address is a loopback one."""
    remote = {what: a for what, a in addresses.items() if not is_loopback(a)}
    if remote:
        listed = ", ".join(f"{what} {a}" for what, a in remote.items())
        raise PkiError(f"{flag} is allowed only with loopback addresses (127.0.0.1, ::1, localhost); not with {listed}")
