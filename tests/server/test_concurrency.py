"""Batching, the bounded queue, deadlines and a party going down, on a live uvicorn server with the fake parties."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.client import PrivateClient, ServerError, request_to_json, seal_input
from tests.server.conftest import LiveServer
from tests.server.fake_party import FakeParties

pytestmark = pytest.mark.timeout(90)


def plaintext(model_dir: Path, xs: list[torch.Tensor], model: str = "vit_2_4_8") -> torch.Tensor:
    net, meta = load_checkpoint(model_dir / model)
    with torch.no_grad():
        return net(normalise_input(torch.stack(xs), meta)).double()


def sealed_body(url: str, x: torch.Tensor, model: str = "vit_2_4_8", **extra: Any) -> dict[str, Any]:
    keys = [base64.b64decode(p["public_key"]) for p in httpx.get(f"{url}/v1/parties/keys").json()["parties"]]
    body = request_to_json(model, seal_input(x, keys, model=model))
    body.update(extra)
    return body


def test_concurrent_requests_are_batched_and_each_answer_is_its_own(
    live: Callable[..., LiveServer], parties: FakeParties, model_dir: Path
) -> None:
    parties.runtime.delay_s = 0.3  # a slow 'secure forward', so requests pile up behind it
    n = 8
    gen = torch.Generator().manual_seed(0)
    xs = [torch.rand(1, 8, 8, generator=gen) for _ in range(n)]
    with live(batch_size=8, batch_wait_ms=50) as server:
        def one(x: torch.Tensor) -> Any:
            with PrivateClient(server.url, trust_coordinator=True) as c:
                return c.classify(x, model="vit_2_4_8")

        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(one, xs))
    ref = plaintext(model_dir, xs)
    for r, expected in zip(results, ref):
        assert torch.allclose(torch.tensor(r.logits, dtype=torch.float64), expected, atol=2e-3)
    assert parties.runtime.forwards < n, parties.runtime.batch_sizes
    assert max(parties.runtime.batch_sizes) > 1 and sum(parties.runtime.batch_sizes) == n
    assert max(r.batch_size for r in results) > 1


def test_full_queue_answers_503_with_retry_after_and_never_hangs(live: Callable[..., LiveServer], parties: FakeParties) -> None:
    parties.runtime.delay_s = 0.4
    with live(batch_size=1, queue_bound=2, retry_after_s=3) as server:
        httpx.get(f"{server.url}/v1/parties/keys")
        bodies = [sealed_body(server.url, torch.rand(1, 8, 8)) for _ in range(8)]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda b: httpx.post(f"{server.url}/v1/classify", json=b, timeout=30), bodies))
        elapsed = time.monotonic() - started
        codes = sorted(r.status_code for r in responses)
        assert 503 in codes and 200 in codes, codes
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "3" and "queue full" in r.json()["detail"]
        assert elapsed < 8, elapsed
        assert "mpcvit_errors_total{kind=\"queue_full\"}" in httpx.get(f"{server.url}/metrics").text


def test_party_down_is_503_within_the_deadline_and_the_next_request_works(
    live: Callable[..., LiveServer], parties: FakeParties
) -> None:
    with live(connect_timeout_s=1.5) as server, PrivateClient(server.url, trust_coordinator=True) as client:
        x = torch.rand(1, 8, 8)
        assert client.classify(x, model="vit_2_4_8").class_name
        parties.stop(1)  # party 1 dies (and forgets its loaded model, as a restarted process would)
        client.retries = 0  # the coordinator's own answer (the SDK would send the same box again after Retry-After)
        started = time.monotonic()
        with pytest.raises(ServerError) as err:
            client.classify(x, model="vit_2_4_8")
        assert err.value.status_code == 503 and "party 1" in err.value.detail
        assert time.monotonic() - started < 5
        health = httpx.get(f"{server.url}/v1/health")
        assert health.status_code == 503 and not health.json()["parties"][1]["reachable"]
        parties.start(1)  # back, same port and key, model not loaded
        r = client.classify(x, model="vit_2_4_8")  # the very next request works (the coordinator reloads the model)
        assert r.class_name and httpx.get(f"{server.url}/v1/health").status_code == 200


@pytest.mark.parametrize("when", ["before", "during"])
def test_the_first_503_names_the_party_that_died_not_its_peer(
    live: Callable[..., LiveServer], parties: FakeParties, when: str
) -> None:
    """Party 1 dies (before the request, or while its forward runs); party 0 answers "peer connection lost" at once,
    as a real party does, but the answer names party 1: its own call failed, the coordinator could not reach it."""
    with live(connect_timeout_s=1.5) as server, PrivateClient(server.url, trust_coordinator=True) as client:
        x = torch.rand(1, 8, 8)
        assert client.classify(x, model="vit_2_4_8").class_name
        client.retries = 0  # the coordinator's first answer
        infers = len(parties.runtime.received[0])
        if when == "before":
            parties.stop(1)
        else:
            parties.runtime.delay_s = 1.0
            threading.Timer(0.5, parties.stop, args=(1,)).start()
        with pytest.raises(ServerError) as err:
            client.classify(x, model="vit_2_4_8")
        assert len(parties.runtime.received[0]) > infers  # party 0 was asked, and reported its peer lost
        assert err.value.status_code == 503, err.value.detail
        assert err.value.detail.startswith("party 1 is unavailable") and "peer connection lost" not in err.value.detail, err.value.detail


def test_deadline_passing_during_the_forward_is_504(live: Callable[..., LiveServer], parties: FakeParties) -> None:
    parties.runtime.delay_s = 1.5
    with live() as server:
        body = sealed_body(server.url, torch.rand(1, 8, 8), deadline_unix_ms=int((time.time() + 0.6) * 1000))
        started = time.monotonic()
        r = httpx.post(f"{server.url}/v1/classify", json=body, timeout=30)
        assert r.status_code == 504 and "deadline" in r.json()["detail"]
        assert time.monotonic() - started < 1.4


def test_one_bad_share_in_a_batch_fails_only_its_own_request(
    live: Callable[..., LiveServer], parties: FakeParties, model_dir: Path
) -> None:
    parties.runtime.delay_s = 0.3
    with live(batch_size=8, batch_wait_ms=100) as server:
        xs = [torch.rand(1, 8, 8) for _ in range(4)]
        bodies = [sealed_body(server.url, x) for x in xs]
        bodies[2]["shares"] = bodies[2]["shares"][::-1]  # sealed to the wrong parties
        bodies.append(dict(bodies[0]))  # the same request id twice while the first is in flight
        with ThreadPoolExecutor(5) as pool:
            responses = list(pool.map(lambda b: httpx.post(f"{server.url}/v1/classify", json=b, timeout=30), bodies))
    codes = [r.status_code for r in responses]
    assert codes[2] == 400, codes
    assert sorted([codes[0], codes[4]]) == [200, 409], codes
    assert codes[1] == codes[3] == 200, codes


def test_a_replayed_request_in_a_batch_fails_only_itself(live: Callable[..., LiveServer], parties: FakeParties) -> None:
    """A party that already answered a request id (its answer lost on the way: the other party died) refuses it
    again with ALREADY_EXISTS before computing anything; the requests batched with it are still answered."""
    parties.runtime.delay_s = 0.3
    with live(batch_size=8, batch_wait_ms=200) as server:
        bodies = [sealed_body(server.url, torch.rand(1, 8, 8)) for _ in range(3)]
        parties.runtime.used[1].add(bodies[1]["request_id"])
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda b: httpx.post(f"{server.url}/v1/classify", json=b, timeout=30), bodies))
    codes = [r.status_code for r in responses]
    assert codes == [200, 409, 200], [(r.status_code, r.text[:200]) for r in responses]
    assert bodies[1]["request_id"] in responses[1].json()["detail"]
    assert len(parties.runtime.received[1][0].items) == 3  # the three went out in one batch first


def _wait_for(condition: Callable[[], bool], limit_s: float = 30.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``limit_s`` passes (False); a bound, not a measurement."""
    end = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_a_restarted_party_is_readmitted_before_any_request(
    live: Callable[..., LiveServer], parties: FakeParties, model_dir: Path
) -> None:
    """The watch sees party 1 back without the model and loads it on both parties; no request is needed for that."""
    with live(health_interval_s=0.1, preload_models=["vit_2_4_8"]) as server, \
            PrivateClient(server.url, trust_coordinator=True) as client:
        assert _wait_for(lambda: all("vit_2_4_8" in loaded for loaded in parties.runtime.loaded))
        x = torch.rand(1, 8, 8)
        before = client.classify(x, model="vit_2_4_8")
        parties.stop(1)  # party 1 dies and forgets the model, as a restarted process would
        parties.start(1)
        assert _wait_for(lambda: "vit_2_4_8" in parties.runtime.loaded[1]), "the watch did not load the model again"
        infers = [len(r) for r in parties.runtime.received]
        after = client.classify(x, model="vit_2_4_8")
        assert [len(r) for r in parties.runtime.received] == [n + 1 for n in infers]  # one Infer each, no refusal first
    assert after.logits == pytest.approx(before.logits, abs=2e-3)
    assert torch.allclose(torch.tensor(after.logits, dtype=torch.float64), plaintext(model_dir, [x])[0], atol=2e-3)


def test_a_preload_that_failed_at_start_is_retried_by_the_watch(
    live: Callable[..., LiveServer], parties: FakeParties
) -> None:
    parties.stop()  # both parties down when the coordinator starts
    with live(health_interval_s=0.1, preload_models=["mpcvit_2_4_8"]) as server:
        assert httpx.get(f"{server.url}/v1/health").status_code == 503
        parties.start()
        assert _wait_for(lambda: all("mpcvit_2_4_8" in loaded for loaded in parties.runtime.loaded))
        assert httpx.get(f"{server.url}/v1/health").status_code == 200


def test_mismatched_material_is_retried_once_on_fresh_tickets_and_never_answered(
    live: Callable[..., LiveServer], parties: FakeParties
) -> None:
    """Both parties abort with DATA_LOSS (their dealer material did not match): the coordinator retries once under a
    ticket past what either may hold ahead; a second mismatch is a 503 the client may retry, never an answer."""
    with live() as server, PrivateClient(server.url, trust_coordinator=True) as client:
        x = torch.rand(1, 8, 8)
        assert client.classify(x, model="vit_2_4_8").class_name
        before = len(parties.runtime.received[0])
        parties.runtime.data_loss_forwards = 1
        assert client.classify(x, model="vit_2_4_8").class_name
        tried = parties.runtime.received[0][before:]
        assert len(tried) == 2 and tried[1].batch_number >= tried[0].batch_number + 4
        assert tried[0].batch_series == tried[1].batch_series
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'mpcvit_material_mismatches_total{model="vit_2_4_8"} 1.0' in metrics
        client.retries = 0
        parties.runtime.data_loss_forwards = 2
        with pytest.raises(ServerError) as err:
            client.classify(x, model="vit_2_4_8")
        assert err.value.status_code == 503 and "material mismatch" in err.value.detail
        assert client.classify(x, model="vit_2_4_8").class_name  # the next one is answered
