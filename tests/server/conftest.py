"""Fixtures: small checkpoints, the fake parties (a test double, see fake_party.py), apps and a live server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mpcvit.checkpoint import save_checkpoint
from mpcvit.client import PrivateClient
from mpcvit.pki import key_fingerprint
from mpcvit.models import create_model
from server.main import create_app
from server.settings import Settings
from tests.server.fake_party import FakeParties

DIGIT_CLASSES = [str(i) for i in range(10)]
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "server" / "static" / "samples"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seeded (untrained) digits-shaped checkpoints: the plaintext answer is what matters here."""
    d = tmp_path_factory.mktemp("models")
    for i, name in enumerate(("vit_2_4_8", "mpcvit_2_4_8", "thex_2_4_8")):
        torch.manual_seed(i)
        model = create_model(name)
        meta = {"dataset": "digits", "classes": DIGIT_CLASSES, "normalisation": {"mean": [0.3], "std": [0.4]}, "test_accuracy": 0.5 + i / 10}
        save_checkpoint(d / name, model, meta)
    return d


@pytest.fixture
def parties(model_dir: Path) -> Iterator[FakeParties]:
    fp = FakeParties(model_dir).start()
    yield fp
    fp.stop()


SettingsFactory = Callable[..., Settings]


def sdk(parties: FakeParties, url: str = "http://127.0.0.1:8000", **kwargs: Any) -> PrivateClient:
    """The SDK with the fake parties' key fingerprints pinned (they have no certificates to check)."""
    return PrivateClient(url, pins=[key_fingerprint(k.public) for k in parties.runtime.keys], **kwargs)


@pytest.fixture
def make_settings(parties: FakeParties, model_dir: Path) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        fields: dict[str, Any] = dict(
            insecure=True, party0=parties.addresses[0], party1=parties.addresses[1], model_dir=model_dir,
            batch_wait_ms=2.0, request_timeout_s=10.0, connect_timeout_s=1.5,
        )
        fields.update(overrides)
        return Settings(_env_file=None, **fields)  # type: ignore[call-arg]

    return make


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn in a thread on a free loopback port (for concurrency, the CLI and the browser)."""

    def __init__(self, app: FastAPI, **options: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.app = app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live(make_settings: SettingsFactory) -> Callable[..., LiveServer]:
    def start(**overrides: Any) -> LiveServer:
        return LiveServer(create_app(make_settings(**overrides)))

    return start
