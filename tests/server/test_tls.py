"""The coordinator talks to the parties over mutual TLS with certificates from 'mpcvit certs'."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mpcvit.client import PrivateClient
from parties import tls
from server.main import create_app
from server.settings import Settings
from tests.server.conftest import SAMPLES_DIR
from tests.server.fake_party import FakeParties

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
        assert PrivateClient(http_client=c).classify(SAMPLES_DIR / "digits_00004_5.png", model="vit_2_4_8").class_name


def test_a_coordinator_with_a_foreign_certificate_is_refused(tls_parties: tuple[FakeParties, Path], model_dir: Path, tmp_path: Path) -> None:
    fp, _ = tls_parties
    other = tmp_path / "other-ca"
    tls.write_certs(other)
    with TestClient(create_app(settings(fp, model_dir, other))) as c:
        assert c.get("/v1/health").status_code == 503
        r = c.get("/v1/parties/keys")
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]
