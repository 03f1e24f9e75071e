"""Mutual TLS for every gRPC channel, with the role of the other end checked in both directions.

Certificates come from the deployment's PKI (:mod:`mpcvit.pki`, ``mpcvit
certs``). A role's process reads exactly three files from its certificate
directory: ``ca.pem``, ``<role>.pem`` and ``<role>.key`` (refused unless mode
0600); a directory that also holds ``ca.key`` is refused (the CA key belongs
with the CA operator, not with a serving process). For tests and the local
demo ``certs_dir`` may also be the root of ``mpcvit certs local``: the role's
``<role>/`` folder is used (:func:`mpcvit.pki.role_dir`).

* Servers require a client certificate from the CA
  (``require_client_auth=True``) and each service checks the caller's role
  from its CN (:func:`peer_role`): the dealer serves party i's seed only to
  ``party{i}``, a party's transport takes frames only from its peer, and
  ``PartyControl`` takes control calls only from the coordinator.
* Clients verify the server against the CA **and** its role: the channel sets
  ``grpc.ssl_target_name_override`` to the role's DNS name
  (``party1.role.mpcvit.invalid``, :func:`mpcvit.pki.role_dns_name`), which only
  that role's certificate carries, so the TLS hostname check itself refuses a
  server with any other role's certificate (:func:`secure_channel`,
  :func:`role_options`).

Plaintext is used only when a caller passes no credentials (``--insecure``,
accepted on loopback addresses only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc

from mpcvit import pki
from mpcvit.pki import ROLES, PkiError, create_local, role_dns_name

logger = logging.getLogger(__name__)

__all__ = ["ROLES", "channel_credentials", "peer_role", "role_options", "secure_channel", "server_credentials", "write_certs"]


def write_certs(out_dir: str | Path, hosts: list[str] | None = None, roles: tuple[str, ...] = ROLES) -> dict[str, Path]:
    """The one-machine set-up (``mpcvit certs local``): ``OUT/ca/`` and one directory per role."""
    return create_local(out_dir, hosts=hosts, roles=roles)


def _role_files(certs_dir: str | Path, role: str) -> tuple[bytes, bytes, bytes]:
    """``(ca.pem, <role>.pem, <role>.key)`` of ``role``, checking the key's mode and that no CA key lies beside it."""
    directory = pki.role_dir(certs_dir, role)
    if (directory / "ca.key").exists():
        raise PkiError(f"{directory / 'ca.key'}: the CA key must not sit with a serving role's files; keep it with the CA operator only")
    paths = [directory / "ca.pem", directory / f"{role}.pem"]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (see 'mpcvit certs --help': request, sign, local)")
    key = pki.read_private(directory / f"{role}.key")
    return paths[0].read_bytes(), paths[1].read_bytes(), key


def server_credentials(certs_dir: str | Path, role: str) -> grpc.ServerCredentials:
    """Server side: present ``role``'s certificate, require a client certificate from the CA."""
    ca, cert, key = _role_files(certs_dir, role)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(certs_dir: str | Path, role: str) -> grpc.ChannelCredentials:
    """Client side: trust the CA, present ``role``'s certificate (pair it with :func:`role_options` of the server's role)."""
    ca, cert, key = _role_files(certs_dir, role)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def role_options(expected_role: str) -> list[tuple[str, Any]]:
    """Channel options that make the TLS handshake accept only a server certificate of ``expected_role``."""
    return [("grpc.ssl_target_name_override", role_dns_name(expected_role))]


def secure_channel(
    target: str, credentials: grpc.ChannelCredentials, expected_role: str, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A channel to ``target`` that completes its handshake only with ``expected_role``'s certificate."""
    return grpc.secure_channel(target, credentials, options=[*(options or []), *role_options(expected_role)])


def peer_role(context: grpc.ServicerContext) -> str | None:
    """The CN of the authenticated client certificate of a call (None on plaintext)."""
    names = context.auth_context().get("x509_common_name")
    return names[0].decode() if names else None
