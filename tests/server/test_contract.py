"""The API contract beyond the happy path: bounded metrics, one status per kind of bad body, clean error messages."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.metrics import UNKNOWN_MODEL
from tests.server.test_api import png_bytes, private_body


def request_series(client: TestClient) -> set[str]:
    """The per-request series (name and labels, no value) that /metrics shows."""
    r = client.get("/metrics")
    assert r.status_code == 200
    return {line.rsplit(" ", 1)[0] for line in r.text.splitlines() if line.startswith(("mpcvit_requests_", "mpcvit_request_latency_"))}


def test_bogus_model_names_do_not_grow_the_metrics(client: TestClient) -> None:
    body, _ = private_body(client)

    def send_bogus(i: int) -> None:
        body["model"] = f"bogus_{i}"
        assert client.post("/v1/classify", json=body).status_code == 404
        r = client.post("/v1/classify/demo", files={"image": ("d.png", png_bytes(), "image/png")}, data={"model": f"nope-{i}"})
        assert r.status_code == 404

    for i in range(2):
        send_bogus(i)
    request_series(client)  # /metrics counts itself once
    before = request_series(client)
    for i in range(2, 60):
        send_bogus(i)
    after = request_series(client)
    assert after == before, after - before
    assert any(f'model="{UNKNOWN_MODEL}"' in line for line in after)
    assert not any("bogus" in line or "nope" in line for line in after)
    assert client.post("/v1/classify/demo", files={"image": ("d.png", png_bytes(), "image/png")}, data={"model": "vit_2_4_8"}).status_code == 200
    assert any('model="vit_2_4_8"' in line for line in request_series(client))  # a served model keeps its own label
