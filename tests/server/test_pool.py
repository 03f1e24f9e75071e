"""A pool of two party pairs (fake parties that share each party's sealing key, as replicas do): batches go to
both pairs, a failed pair leaves the rotation and comes back when Health answers, models load on every pair."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from mpcvit.client import PrivateClient
from server.main import create_app
from server.settings import Settings
from tests.server.conftest import LiveServer
from tests.server.fake_party import FakeParties
from tests.server.test_concurrency import _wait_for as wait_for, plaintext

pytestmark = pytest.mark.timeout(120)
MODEL = "vit_2_4_8"


@pytest.fixture
def two_pairs(model_dir: Path) -> Iterator[tuple[FakeParties, FakeParties]]:
    a = FakeParties(model_dir)
    b = FakeParties(model_dir)
    b.runtime.keys = a.runtime.keys  # replicas of party 0 share its sealing key, and so do those of party 1
    a.start(), b.start()
    yield a, b
    a.stop(), b.stop()


def pool_server(a: FakeParties, b: FakeParties, model_dir: Path, **overrides: Any) -> LiveServer:
    fields: dict[str, Any] = dict(
        insecure=True, pairs=[",".join(a.addresses), ",".join(b.addresses)], model_dir=model_dir, batch_size=1,
        batch_wait_ms=0.0, request_timeout_s=20.0, connect_timeout_s=1.0, preload_models=[MODEL], health_interval_s=0.1,
    )
    fields.update(overrides)
    return LiveServer(create_app(Settings(_env_file=None, **fields)))  # type: ignore[call-arg]


def classify_all(url: str, xs: list[torch.Tensor]) -> list[Any]:
    def one(x: torch.Tensor) -> Any:
        with PrivateClient(url, trust_coordinator=True) as client:
            return client.classify(x, model=MODEL)

    with ThreadPoolExecutor(len(xs)) as pool:
        return list(pool.map(one, xs))


def test_batches_go_to_both_pairs_and_every_answer_is_its_own(two_pairs: tuple[FakeParties, FakeParties], model_dir: Path) -> None:
    a, b = two_pairs
    a.runtime.delay_s = b.runtime.delay_s = 0.3  # a slow forward: while one pair runs, the next batch takes the other
    gen = torch.Generator().manual_seed(1)
    xs = [torch.rand(1, 8, 8, generator=gen) for _ in range(6)]
    with pool_server(a, b, model_dir) as server:
        assert all(MODEL in loaded for loaded in a.runtime.loaded + b.runtime.loaded)  # preloaded on every pair
        results = classify_all(server.url, xs)
        health = httpx.get(f"{server.url}/v1/health").json()
    for r, expected in zip(results, plaintext(model_dir, xs)):
        assert torch.allclose(torch.tensor(r.logits, dtype=torch.float64), expected, atol=2e-3)
    assert a.runtime.forwards > 0 and b.runtime.forwards > 0, (a.runtime.forwards, b.runtime.forwards)
    assert a.runtime.forwards + b.runtime.forwards == len(xs)
    assert [p["in_rotation"] and p["ok"] for p in health["pairs"]] == [True, True]
    assert [(p["pair"], p["rank"]) for p in health["parties"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_a_failed_pair_leaves_the_rotation_and_comes_back(two_pairs: tuple[FakeParties, FakeParties], model_dir: Path) -> None:
    a, b = two_pairs
    x = torch.rand(1, 8, 8)
    expected = plaintext(model_dir, [x])[0]
    with pool_server(a, b, model_dir, health_interval_s=0.2) as server, \
            PrivateClient(server.url, trust_coordinator=True) as client:
        a.stop(1)  # pair 0's party 1 dies
        assert wait_for(lambda: [p["in_rotation"] for p in httpx.get(f"{server.url}/v1/health").json()["pairs"]] == [False, True])
        health = httpx.get(f"{server.url}/v1/health")
        assert health.status_code == 200  # one pair is enough
        assert "party 1" in health.json()["pairs"][0]["why_out"]
        before = b.runtime.forwards
        for _ in range(3):  # every request goes to pair 1 and works
            r = client.classify(x, model=MODEL)
            assert torch.allclose(torch.tensor(r.logits, dtype=torch.float64), expected, atol=2e-3)
        assert b.runtime.forwards == before + 3
        a.start(1)  # back, without the model: the watch puts the pair back and loads the model on it
        assert wait_for(lambda: MODEL in a.runtime.loaded[1])
        assert wait_for(lambda: [p["in_rotation"] for p in httpx.get(f"{server.url}/v1/health").json()["pairs"]] == [True, True])
        a_before = a.runtime.forwards
        b.runtime.delay_s = 0.3
        classify_all(server.url, [x, x, x, x])
        assert a.runtime.forwards > a_before  # pair 0 takes sessions again


def test_a_batch_on_a_pair_that_just_died_goes_to_the_other_pair(
    two_pairs: tuple[FakeParties, FakeParties], model_dir: Path
) -> None:
    """The watch is off: the request itself finds pair 0 down, and is answered by pair 1."""
    a, b = two_pairs
    x = torch.rand(1, 8, 8)
    with pool_server(a, b, model_dir, health_interval_s=0.0) as server, \
            PrivateClient(server.url, trust_coordinator=True) as client:
        a.stop(0)
        b_before = b.runtime.forwards
        r = client.classify(x, model=MODEL)  # pair 0 is the least used and is tried first
        assert torch.allclose(torch.tensor(r.logits, dtype=torch.float64), plaintext(model_dir, [x])[0], atol=2e-3)
        assert b.runtime.forwards == b_before + 1
        pairs = httpx.get(f"{server.url}/v1/health").json()["pairs"]
        assert [p["in_rotation"] for p in pairs] == [False, True]


def test_a_pair_with_other_sealing_keys_stays_out_of_rotation(model_dir: Path) -> None:
    a, b = FakeParties(model_dir).start(), FakeParties(model_dir).start()  # b's keys differ: not replicas of a's parties
    try:
        with pool_server(a, b, model_dir) as server:
            assert wait_for(lambda: [p["in_rotation"] for p in httpx.get(f"{server.url}/v1/health").json()["pairs"]] == [True, False])
            pairs = httpx.get(f"{server.url}/v1/health").json()["pairs"]
            assert "another sealing key" in pairs[1]["why_out"] and not pairs[1]["ok"]
            results = classify_all(server.url, [torch.rand(1, 8, 8) for _ in range(3)])
            assert len(results) == 3 and b.runtime.forwards == 0
    finally:
        a.stop(), b.stop()


def test_pairs_settings_and_cli(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None, insecure=True, pairs=["127.0.0.1:1,127.0.0.1:2", " 127.0.0.1:3 , localhost:4"])  # type: ignore[call-arg]
    assert s.pair_addresses == [("127.0.0.1:1", "127.0.0.1:2"), ("127.0.0.1:3", "localhost:4")]
    assert Settings(_env_file=None, insecure=True).pair_addresses == [("127.0.0.1:50051", "127.0.0.1:50052")]  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="a pair is 'PARTY0_HOST:PORT,PARTY1_HOST:PORT'"):
        Settings(_env_file=None, insecure=True, pairs=["127.0.0.1:1"])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="either party0 and party1 .* or pairs"):
        Settings(_env_file=None, insecure=True, party0="127.0.0.1:9", pairs=["127.0.0.1:1,127.0.0.1:2"])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="only with loopback addresses.*pair 1 party1 10.0.0.2:2"):
        Settings(_env_file=None, insecure=True, pairs=["127.0.0.1:1,127.0.0.1:2", "127.0.0.1:3,10.0.0.2:2"])  # type: ignore[call-arg]
    monkeypatch.setenv("MPCVIT_PAIRS", '["127.0.0.1:5,127.0.0.1:6", "127.0.0.1:7,127.0.0.1:8"]')
    monkeypatch.setenv("MPCVIT_INSECURE", "true")
    assert len(Settings(_env_file=None).pair_addresses) == 2  # type: ignore[call-arg]
    import argparse

    from mpcvit.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(["--insecure", "--pair", "127.0.0.1:1,127.0.0.1:2", "--pair", "127.0.0.1:3,127.0.0.1:4"])
    assert serve.settings_from_args(args).pair_addresses[1] == ("127.0.0.1:3", "127.0.0.1:4")


def test_a_pair_runs_as_many_sessions_at_once_as_its_parties_report(model_dir: Path) -> None:
    """Parties that run 3 and 2 sessions at once: the coordinator learns 2 from Health and keeps 2 in flight."""
    parties = FakeParties(model_dir).start()
    parties.runtime.max_sessions = [3, 2]
    parties.runtime.delay_s = 0.4
    gen = torch.Generator().manual_seed(3)
    xs = [torch.rand(1, 8, 8, generator=gen) for _ in range(6)]
    try:
        fields: dict[str, Any] = dict(insecure=True, pairs=[",".join(parties.addresses)], model_dir=model_dir, batch_size=1,
                                      batch_wait_ms=0.0, request_timeout_s=20.0, preload_models=[MODEL], health_interval_s=0.1)
        with LiveServer(create_app(Settings(_env_file=None, **fields))) as server:  # type: ignore[call-arg]
            assert httpx.get(f"{server.url}/v1/health").json()["pairs"][0]["sessions"] == 2
            results = classify_all(server.url, xs)
    finally:
        parties.stop()
    for r, expected in zip(results, plaintext(model_dir, xs)):
        assert torch.allclose(torch.tensor(r.logits, dtype=torch.float64), expected, atol=2e-3)
    assert parties.runtime.peak_in_flight == [2, 2]
    # every forward carries a dealer ticket: one series (pair, batch size, model), numbered 0, 1, 2, ... on both parties
    for received in parties.runtime.received:
        assert len({r.batch_series for r in received}) == 1
        assert sorted(r.batch_number for r in received) == list(range(len(xs)))
