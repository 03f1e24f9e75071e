"""The PKI workflow and the role checks of the parties' channels (dealer, peer transport, party control).

Every channel is tried in both directions: a server that presents another
role's certificate is refused by the client's handshake, and a client that
presents another role's certificate is refused by the server (PERMISSION_DENIED).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import torch
from cryptography import x509

from mpcvit import pki
from parties import tls
from parties.dealer import DealerClient, DealerServicer, DealerState
from parties.party import PartyControlServicer
from parties.proto import control_pb2, control_pb2_grpc, dealer_pb2, dealer_pb2_grpc, transport_pb2, transport_pb2_grpc
from parties.transport import Inboxes, Limits, PeerLink, PeerTransportServicer, NetworkShape, add_transport_servicer, tensor_frames

pytestmark = pytest.mark.timeout(120)
ROLES = pki.ROLES


# -- the PKI workflow ------------------------------------------------------------------


def test_local_setup_gives_each_role_only_its_own_files(certs: Path) -> None:
    assert sorted(p.name for p in (certs / "ca").iterdir()) == ["ca.key", "ca.pem"]
    for role in ROLES:
        names = {p.name for p in (certs / role).iterdir()}
        assert {"ca.pem", f"{role}.pem", f"{role}.key"} <= names and "ca.key" not in names, role
        assert not any(n.endswith(".key") and n != f"{role}.key" for n in names), role
        assert (os.stat(certs / role / f"{role}.key").st_mode & 0o777) == 0o600
        cert = x509.load_pem_x509_certificate((certs / role / f"{role}.pem").read_bytes())
        assert pki.cert_role(cert) == role
        dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert [n for n in dns if n.endswith(pki.ROLE_DOMAIN)] == [pki.role_dns_name(role)]


def test_the_ca_decides_the_role_and_refuses_role_names_in_requests(tmp_path: Path) -> None:
    ca_key, ca_cert = pki.make_ca()
    key, csr = pki.make_request("party0", ["p0.example.org"])
    with pytest.raises(pki.PkiError, match="not party1"):
        pki.sign_request(ca_key, ca_cert, csr, "party1")
    cert = pki.sign_request(ca_key, ca_cert, csr, "party0")
    assert pki.cert_role(cert) == "party0"
    with pytest.raises(pki.PkiError, match="set by the CA"):
        pki.make_request("party0", [pki.role_dns_name("party1")])
    # a hand-made request that sneaks in another role's name is refused by the CA
    from cryptography.hazmat.primitives import hashes

    sneaky = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "party0")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(pki.role_dns_name("dealer"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(pki.PkiError, match="set by the CA only"):
        pki.sign_request(ca_key, ca_cert, sneaky, "party0")
    pki.create_ca(tmp_path / "ca")
    with pytest.raises(pki.PkiError, match="refusing to replace"):
        pki.create_ca(tmp_path / "ca")


def test_a_role_key_readable_by_others_stops_the_process(certs: Path, tmp_path: Path) -> None:
    pki.create_local(tmp_path / "pki", roles=("dealer",))
    key = tmp_path / "pki" / "dealer" / "dealer.key"
    key.chmod(0o640)
    with pytest.raises(pki.KeyPermissionError, match="chmod 600"):
        tls.server_credentials(tmp_path / "pki", "dealer")
    from mpcvit.cli import main

    assert main(["dealer", "--listen", "127.0.0.1:0", "--certs", str(tmp_path / "pki" / "dealer")]) == 1
    key.chmod(0o600)
    (tmp_path / "pki" / "dealer" / "ca.key").write_bytes(b"x")  # the CA key beside a serving role's files
    with pytest.raises(pki.PkiError, match="CA key"):
        tls.channel_credentials(tmp_path / "pki" / "dealer", "dealer")


def test_cli_error_for_a_readable_key_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mpcvit.cli import main

    pki.create_local(tmp_path / "pki", roles=("dealer",))
    (tmp_path / "pki" / "dealer" / "dealer.key").chmod(0o644)
    assert main(["dealer", "--listen", "127.0.0.1:0", "--certs", str(tmp_path / "pki" / "dealer")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "chmod 600" in err, err


# -- servers in another role's place (client-side checks) ---------------------------------


def _server(certs: Path, role: str, register) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    register(server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(certs, role))
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def dealer_like(certs: Path) -> Iterator[dict[str, str]]:
    """A dealer service presenting each role's certificate in turn."""
    servers = {role: _server(certs, role, lambda s: dealer_pb2_grpc.add_DealerServicer_to_server(DealerServicer(DealerState()), s)) for role in ROLES}
    yield {role: address for role, (_, address) in servers.items()}
    for server, _ in servers.values():
        server.stop(0)


@pytest.fixture(scope="module")
def transport_like(certs: Path) -> Iterator[dict[str, str]]:
    """A peer transport presenting each role's certificate in turn."""

    def register(server: grpc.Server) -> None:
        add_transport_servicer(server, PeerTransportServicer(1, Inboxes(Limits()), lambda reason: None))

    servers = {role: _server(certs, role, register) for role in ROLES}
    yield {role: address for role, (_, address) in servers.items()}
    for server, _ in servers.values():
        server.stop(0)


@pytest.mark.parametrize("rank", [0, 1])
def test_parties_accept_only_the_dealer_as_dealer(certs: Path, dealer_like: dict[str, str], rank: int) -> None:
    for role, address in dealer_like.items():
        client = DealerClient(address, rank, str(certs))
        try:
            assert client.reachable(3.0) == (role == "dealer"), f"party{rank} -> server with {role}'s certificate"
        finally:
            client.close()


@pytest.mark.parametrize("rank", [0, 1])
def test_a_party_accepts_only_its_peer_as_peer(certs: Path, transport_like: dict[str, str], rank: int) -> None:
    creds = tls.channel_credentials(certs, f"party{rank}")
    for role, address in transport_like.items():
        link = PeerLink(address, creds, "unary", NetworkShape(), Limits(), lambda reason: None, expected_role=f"party{1 - rank}")
        try:
            assert link.ping(3.0) == (role == f"party{1 - rank}"), f"party{rank} -> peer with {role}'s certificate"
        finally:
            link.close()


# -- clients in another role's place (server-side checks) ---------------------------------


def test_the_dealer_serves_seeds_and_corrections_only_to_their_party(certs: Path, dealer_like: dict[str, str]) -> None:
    for role in ROLES:
        channel = tls.secure_channel(dealer_like["dealer"], tls.channel_credentials(certs, role), "dealer")
        stub = dealer_pb2_grpc.DealerStub(channel)
        for rank in (0, 1):
            call = lambda: stub.GetSeed(dealer_pb2.SeedRequest(batch_id=f"{role}-{rank}", rank=rank), timeout=5)  # noqa: E731
            if role == f"party{rank}":
                call()
            else:
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (role, rank)
        if role != "party0":
            with pytest.raises(grpc.RpcError) as err:
                list(stub.GetCorrections(dealer_pb2.CorrectionsRequest(batch_id=f"{role}-c"), timeout=5))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
        channel.close()


def test_a_party_takes_frames_only_from_its_peer(certs: Path, transport_like: dict[str, str]) -> None:
    frame = tensor_frames("s", 0, 1, "x", torch.arange(2))[0]
    for role in ROLES:  # the server is party 1 (presenting party1.pem); only party 0 may send
        channel = tls.secure_channel(transport_like["party1"], tls.channel_credentials(certs, role), "party1")
        stub = transport_pb2_grpc.PeerTransportStub(channel)
        if role == "party0":
            assert stub.Send(frame, timeout=5).frames == 1
        else:
            with pytest.raises(grpc.RpcError) as err:
                stub.Send(frame, timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
        channel.close()


@pytest.mark.parametrize("rank", [0, 1])
def test_a_party_takes_control_calls_only_from_the_coordinator(certs: Path, rank: int) -> None:
    stopped = control_pb2.StatsReply(sessions_ok=7)
    party = SimpleNamespace(health=lambda: control_pb2.HealthReply(rank=rank), stats=lambda: stopped,
                            infer=lambda request: control_pb2.InferReply(), load_model=lambda *a: control_pb2.LoadModelReply())
    servicer = PartyControlServicer(party)  # type: ignore[arg-type]
    server, address = _server(certs, f"party{rank}", lambda s: control_pb2_grpc.add_PartyControlServicer_to_server(servicer, s))
    try:
        for role in ROLES:
            channel = tls.secure_channel(address, tls.channel_credentials(certs, role), f"party{rank}")
            stub = control_pb2_grpc.PartyControlStub(channel)
            if role == "coordinator":
                assert stub.Stats(control_pb2.StatsRequest(), timeout=5).sessions_ok == 7
            else:
                for call in (lambda: stub.Stats(control_pb2.StatsRequest(), timeout=5),
                             lambda: stub.Infer(control_pb2.InferRequest(model="m"), timeout=5),
                             lambda: stub.LoadModel(control_pb2.LoadModelRequest(model="m"), timeout=5)):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
            channel.close()
    finally:
        server.stop(0)


# -- --insecure only on loopback ----------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["dealer", "--listen", "0.0.0.0:0", "--insecure"],
    ["party", "--rank", "0", "--listen", "127.0.0.1:0", "--peer", "10.1.2.3:50052", "--dealer", "127.0.0.1:1", "--insecure"],
    ["party", "--rank", "1", "--listen", "0.0.0.0:0", "--peer", "127.0.0.1:2", "--dealer", "127.0.0.1:1", "--insecure"],
    ["party", "--rank", "1", "--listen", "127.0.0.1:0", "--peer", "127.0.0.1:2", "--dealer", "dealer.example.org:1", "--insecure"],
    ["serve", "--party0", "127.0.0.1:1", "--party1", "party1:50052", "--insecure"],
])
def test_insecure_is_refused_off_loopback(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from mpcvit.cli import main

    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "only with loopback addresses" in err and len(err.splitlines()) == 1, err


def test_loopback_addresses() -> None:
    for address in ("127.0.0.1:5", "127.8.9.1:5", "localhost:5", "[::1]:5", "::1", "localhost"):
        assert pki.is_loopback(address), address
    for address in ("0.0.0.0:5", "10.0.0.1:5", "party1:50052", "[::]:5", "example.org:1", "127.0.0.1.example.org:5"):
        assert not pki.is_loopback(address), address
