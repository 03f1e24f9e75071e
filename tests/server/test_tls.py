"""The coordinator talks to the parties over mutual TLS, checking their roles; clients verify the parties' keys."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient

from mpcvit import pki
from mpcvit.client import PrivateClient
from mpcvit.sealing import generate_keypair
from parties import tls
from parties.proto import control_pb2_grpc
from server.errors import CoordinatorError
from server.main import create_app
from server.parties import PartyClient, channel_credentials
from server.settings import Settings
from tests.server.conftest import SAMPLES_DIR
from tests.server.fake_party import FakeParties, FakeParty, FakeRuntime

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tls_parties(model_dir: Path, tmp_path: Path) -> Iterator[tuple[FakeParties, Path]]:
    certs = tmp_path / "certs"
    tls.write_certs(certs)
    fp = FakeParties(model_dir, certs=certs).start()
    yield fp, certs
    fp.stop()


def settings(fp: FakeParties, model_dir: Path, cert_dir: Path) -> Settings:
    return Settings(_env_file=None, party0=fp.addresses[0], party1=fp.addresses[1], cert_dir=cert_dir,  # type: ignore[call-arg]
                    model_dir=model_dir, connect_timeout_s=1.0, health_timeout_s=1.0)


def test_classify_over_mutual_tls(tls_parties: tuple[FakeParties, Path], model_dir: Path) -> None:
    fp, certs = tls_parties
    with TestClient(create_app(settings(fp, model_dir, certs))) as c:
        assert c.get("/v1/health").status_code == 200
        assert PrivateClient(http_client=c, ca=certs / "ca" / "ca.pem").classify(SAMPLES_DIR / "digits_00004_5.png", model="vit_2_4_8").class_name


def test_a_coordinator_with_a_foreign_certificate_is_refused(tls_parties: tuple[FakeParties, Path], model_dir: Path, tmp_path: Path) -> None:
    fp, _ = tls_parties
    other = tmp_path / "other-ca"
    tls.write_certs(other)
    with TestClient(create_app(settings(fp, model_dir, other))) as c:
        assert c.get("/v1/health").status_code == 503
        r = c.get("/v1/parties/keys")
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]


# -- the coordinator checks the parties' roles ------------------------------------------------


def _party_server(model_dir: Path, certs: Path, rank: int, cert_role: str) -> tuple[grpc.Server, str]:
    """A fake party ``rank`` that presents ``cert_role``'s certificate."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    control_pb2_grpc.add_PartyControlServicer_to_server(FakeParty(rank, FakeRuntime(model_dir), certs, cert_role), server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(certs, cert_role))
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.mark.parametrize("rank", [0, 1])
def test_the_coordinator_accepts_only_party_i_as_party_i(model_dir: Path, tmp_path: Path, rank: int) -> None:
    certs = tmp_path / "certs"
    tls.write_certs(certs)

    async def ask(address: str) -> bool:
        client = PartyClient(rank, address, channel_credentials(certs), connect_timeout_s=2.0)
        try:
            await client.health(3.0)
            return True
        except CoordinatorError:
            return False
        finally:
            await client.close()

    for role in pki.ROLES:
        server, address = _party_server(model_dir, certs, rank, role)
        try:
            assert asyncio.run(ask(address)) == (role == f"party{rank}"), f"coordinator -> party {rank} presenting {role}'s certificate"
        finally:
            server.stop(0)


# -- the client verifies the parties' keys ------------------------------------------------------


def test_classify_verifies_the_party_keys_against_the_ca(tls_parties: tuple[FakeParties, Path], model_dir: Path) -> None:
    fp, certs = tls_parties
    with TestClient(create_app(settings(fp, model_dir, certs))) as c:
        listed = c.get("/v1/parties/keys").json()["parties"]
        assert all(p["certificate"].startswith("-----BEGIN CERTIFICATE") and p["signature"] for p in listed)
        result = PrivateClient(http_client=c, ca=certs / "ca" / "ca.pem").classify(SAMPLES_DIR / "digits_00004_5.png", model="vit_2_4_8")
        assert result.class_name
        pins = [pki.key_fingerprint(k.public) for k in fp.runtime.keys]
        assert PrivateClient(http_client=c, pins=pins).classify(SAMPLES_DIR / "digits_00004_5.png", model="vit_2_4_8").class_name


class MaliciousCoordinator:
    """An HTTP double that answers like the real coordinator, except for the keys it relays; it records every POST."""

    def __init__(self, real: TestClient, listing: list[dict]) -> None:
        self.real = real
        self.listing = listing
        self.posts: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            self.posts.append(request.url.path)
            return httpx.Response(500)
        if request.url.path == "/v1/parties/keys":
            return httpx.Response(200, json={"parties": self.listing})
        r = self.real.get(request.url.path)
        return httpx.Response(r.status_code, content=r.content, headers={"content-type": "application/json"})


def _entry(rank: int, key: bytes, cert: bytes, signature: bytes) -> dict:
    return {"rank": rank, "public_key": base64.b64encode(key).decode(), "certificate": cert.decode(), "signature": base64.b64encode(signature).decode()}


def test_a_substituted_party_key_is_refused_before_anything_is_sent(tls_parties: tuple[FakeParties, Path], model_dir: Path, tmp_path: Path) -> None:
    fp, certs = tls_parties
    attacker = generate_keypair().public
    coordinator_key = pki.load_key(certs / "coordinator" / "coordinator.key")  # a malicious coordinator holds its own CA-issued key
    coordinator_cert = (certs / "coordinator" / "coordinator.pem").read_bytes()
    other = tmp_path / "other-ca"
    pki.create_local(other, roles=("party0",))
    foreign_cert = (other / "party0" / "party0.pem").read_bytes()
    foreign_key = pki.load_key(other / "party0" / "party0.key")
    with TestClient(create_app(settings(fp, model_dir, certs))) as real:
        honest = real.get("/v1/parties/keys").json()["parties"]
        p0 = honest[0]
        cert0, sig0 = p0["certificate"].encode(), base64.b64decode(p0["signature"])
        cases = {
            "its own key under party 0's certificate and signature": (_entry(0, attacker, cert0, sig0), "not signed by the party"),
            "its own key signed with the coordinator's certificate": (
                _entry(0, attacker, coordinator_cert, pki.sign_party_key(coordinator_key, 0, attacker)), "names role 'coordinator'"),
            "its own key signed by a party 0 of another CA": (
                _entry(0, attacker, foreign_cert, pki.sign_party_key(foreign_key, 0, attacker)), "not issued by the given CA"),
            "party 1's key and proof as party 0's": ({**honest[1], "rank": 0}, "names role 'party1'"),
            "no certificate": (_entry(0, attacker, b"", b""), "no certificate"),
        }
        for name, (entry, reason) in cases.items():
            evil = MaliciousCoordinator(real, [entry, honest[1]])
            with httpx.Client(transport=httpx.MockTransport(evil.handler), base_url="http://coordinator.test") as http:
                client = PrivateClient(http_client=http, ca=certs / "ca" / "ca.pem")
                with pytest.raises(pki.PartyKeyError, match=reason):
                    client.classify(SAMPLES_DIR / "digits_00004_5.png", model="vit_2_4_8")
            assert evil.posts == [], name
        # pinned fingerprints catch a substitution too, and no verification at all is refused
        evil = MaliciousCoordinator(real, [_entry(0, attacker, b"", b""), honest[1]])
        with httpx.Client(transport=httpx.MockTransport(evil.handler), base_url="http://coordinator.test") as http:
            pins = [pki.key_fingerprint(k.public) for k in fp.runtime.keys]
            with pytest.raises(pki.PartyKeyError, match="not the pinned"):
                PrivateClient(http_client=http, pins=pins).classify(SAMPLES_DIR / "digits_00004_5.png", model="vit_2_4_8")
            with pytest.raises(pki.PartyKeyError, match="refusing"):
                PrivateClient(http_client=http).classify(SAMPLES_DIR / "digits_00004_5.png", model="vit_2_4_8")
            with pytest.raises(ValueError, match="loopback"):
                PrivateClient(http_client=http, trust_coordinator=True)
        assert evil.posts == []
        assert fp.runtime.received == [[], []]  # no party was asked to compute anything
