"""The REST API against the fake parties: answers equal the plaintext model's, and every failure path has its 4xx/5xx."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.client import PrivateClient, preprocess, request_to_json, seal_input, sealed_from_json
from mpcvit.sealing import BoxContext, SealError, generate_keypair, open_tensor
from server.main import create_app
from tests.server.conftest import SAMPLES_DIR, SettingsFactory, sdk
from tests.server.fake_party import FakeParties

DIGIT = SAMPLES_DIR / "digits_00012_0.png"


def plaintext_logits(model_dir: Path, model: str, image: Any) -> torch.Tensor:
    net, meta = load_checkpoint(model_dir / model)
    x = preprocess(image, net.spec.input_shape)
    with torch.no_grad():
        return net(normalise_input(x[None], meta))[0].double()


def keys(client: TestClient) -> list[bytes]:
    r = client.get("/v1/parties/keys")
    assert r.status_code == 200, r.text
    return [base64.b64decode(p["public_key"]) for p in r.json()["parties"]]


def private_body(client: TestClient, model: str = "vit_2_4_8", x: torch.Tensor | None = None) -> tuple[dict[str, Any], Any]:
    x = preprocess(DIGIT, (1, 8, 8)) if x is None else x
    req = seal_input(x, keys(client), model=model)
    return request_to_json(model, req), req


def png_bytes(path: Path = DIGIT) -> bytes:
    return path.read_bytes()


# -- happy paths -----------------------------------------------------------------------


def test_private_classify_equals_plaintext(client: TestClient, model_dir: Path, parties: FakeParties) -> None:
    result = sdk(parties, http_client=client).classify(DIGIT, model="vit_2_4_8")
    ref = plaintext_logits(model_dir, "vit_2_4_8", DIGIT)
    assert torch.allclose(torch.tensor(result.logits, dtype=torch.float64), ref, atol=2e-3)
    assert result.class_index == int(ref.argmax())
    assert abs(sum(result.probabilities) - 1) < 1e-9
    assert result.costs["total"]["rounds"] > 0 and result.costs["total"]["bytes"] > 0
    assert [p["rank"] for p in result.costs["parties"]] == [0, 1]
    assert result.batch_size == 1


def test_private_response_is_sealed_and_says_so(client: TestClient) -> None:
    body, req = private_body(client)
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["coordinator_saw_image"] is False
    assert out["request_id"] == req.request_id and len(out["output_shares"]) == 2
    shares = [sealed_from_json(s) for s in out["output_shares"]]
    assert all(s.shape == (10,) for s in shares)
    stranger = generate_keypair()  # anyone without the client's one-time key (the coordinator) cannot open them
    with pytest.raises(SealError):
        open_tensor(shares[0], stranger.private, keys(client)[0], BoxContext(req.request_id, "vit_2_4_8", 0, "output"))
    assert set(out["costs"]) == {"total", "parties"} and out["queue_seconds"] >= 0


def test_coordinator_never_receives_the_image(make_settings: SettingsFactory, parties: FakeParties) -> None:
    """Capture every byte the coordinator receives in private mode: no encoding of the image is in it."""
    app = create_app(make_settings())
    received: list[bytes] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        async def recv() -> Any:
            msg = await receive()
            received.append(msg.get("body", b""))
            return msg
        await app(scope, recv, send)

    with TestClient(spy) as c:  # type: ignore[arg-type]
        result = sdk(parties, http_client=c).classify(DIGIT, model="vit_2_4_8")
    wire = b"".join(received)
    x = preprocess(DIGIT, (1, 8, 8))
    encoded = torch.round(x.double() * 2**16).to(torch.int64).numpy().astype("<i8").tobytes()
    as_text = json.dumps(x.flatten().tolist()).encode()
    assert wire and encoded not in wire and encoded[8 * 20 : 8 * 28] not in wire
    assert as_text[:40] not in wire and DIGIT.read_bytes() not in wire
    # what the parties got is sealed too: each party's item opens only with its own key
    item = parties.runtime.received[0][-1].items[0]
    assert item.request_id == result.request_id and item.input_share.ciphertext not in (encoded,)
    assert len(item.input_share.ciphertext) == 8 * 64 + 16


def test_demo_multipart_and_json(client: TestClient, model_dir: Path) -> None:
    ref = plaintext_logits(model_dir, "mpcvit_2_4_8", DIGIT)
    r = client.post("/v1/classify/demo", files={"image": ("d.png", png_bytes(), "image/png")}, data={"model": "mpcvit_2_4_8"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["coordinator_saw_image"] is True
    assert out["class_index"] == int(ref.argmax()) and out["class_name"] == str(int(ref.argmax()))
    assert np.allclose(out["logits"], ref.numpy(), atol=2e-3)
    assert out["costs"]["total"]["rounds"] > 0 and out["latency_seconds"] > 0
    pixels = (np.asarray(Image.open(DIGIT), dtype=np.float64) / 255).tolist()
    r2 = client.post("/v1/classify/demo", json={"model": "mpcvit_2_4_8", "pixels": pixels})
    assert r2.status_code == 200, r2.text
    assert np.allclose(r2.json()["logits"], out["logits"], atol=2e-3)


def test_compare_runs_default_models_side_by_side(client: TestClient, model_dir: Path) -> None:
    r = client.post("/v1/compare", files={"image": ("d.png", png_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [e["model"] for e in results] == ["vit_2_4_8", "thex_2_4_8", "mpcvit_2_4_8"]  # the compare order
    for e in results:
        assert e["ok"], e
        assert e["class_index"] == int(plaintext_logits(model_dir, e["model"], DIGIT).argmax())
        assert e["costs"]["total"]["bytes"] > 0 and e["latency_seconds"] > 0 and e["accuracy"] is not None
    r = client.post("/v1/compare", files={"image": ("d.png", png_bytes(), "image/png")}, data={"models": "thex_2_4_8"})
    assert r.status_code == 200 and [e["model"] for e in r.json()["results"]] == ["thex_2_4_8"]


def test_models_keys_health_metrics_docs(client: TestClient, parties: FakeParties) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert set(models) == {"vit_2_4_8", "mpcvit_2_4_8", "thex_2_4_8"}
    m = models["vit_2_4_8"]
    assert m["input_shape"] == [1, 8, 8] and m["classes"] == [str(i) for i in range(10)]
    assert m["variant"] == "vit" and m["attention"] == {"softmax": 8} and m["accuracy"] == 0.5 and m["precision_bits"] == 16
    sdk(parties, http_client=client).classify(DIGIT, model="vit_2_4_8")
    m = {x["name"]: x for x in client.get("/v1/models").json()["models"]}["vit_2_4_8"]
    assert m["loaded"] and m["measured_cost"]["rounds"] > 0
    assert len(keys(client)) == 2 and all(len(k) == 32 for k in keys(client))
    h = client.get("/v1/health")
    assert h.status_code == 200 and h.json()["ok"] and h.json()["dealer_reachable"]
    text = client.get("/metrics").text
    for name in ("mpcvit_requests_total", "mpcvit_request_latency_seconds_bucket", "mpcvit_rounds_total",
                 "mpcvit_bytes_total", "mpcvit_errors_total", "mpcvit_queue_length"):
        assert name in text, name
    assert 'mpcvit_rounds_total{model="vit_2_4_8"}' in text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/classify", "/v1/classify/demo", "/v1/compare", "/v1/models", "/v1/parties/keys", "/v1/health"} <= set(paths)


# -- bad input -------------------------------------------------------------------------


def test_unknown_model_is_404(client: TestClient) -> None:
    body, _ = private_body(client)
    body["model"] = "nope_2_4_8"
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 404 and "unknown model" in r.json()["detail"]
    r = client.post("/v1/classify/demo", files={"image": ("d.png", png_bytes(), "image/png")}, data={"model": "nope"})
    assert r.status_code == 404


def test_wrong_shape_and_sizes_are_400(client: TestClient) -> None:
    body, _ = private_body(client, x=torch.rand(1, 4, 4))
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 400 and "shape" in r.json()["detail"]
    body, _ = private_body(client)
    body["shares"][1]["ciphertext"] = base64.b64encode(b"x" * 100).decode()
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 400 and "ciphertext" in r.json()["detail"]
    body, _ = private_body(client)
    body["client_public_key"] = base64.b64encode(b"k" * 16).decode()
    r = client.post("/v1/classify", json=body)  # a key length the schema states: 422
    assert r.status_code == 422 and "client_public_key: must be 32 bytes" in r.json()["detail"]
    body, _ = private_body(client)
    body["shares"][0]["nonce"] = "not base64 !!"
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 422
    body, _ = private_body(client)
    body["shares"] = body["shares"][:1]
    assert client.post("/v1/classify", json=body).status_code == 422


def test_share_that_does_not_open_is_400(client: TestClient) -> None:
    body, _ = private_body(client)
    body["shares"] = body["shares"][::-1]  # each party gets the share sealed to the other one
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 400 and "does not open" in r.json()["detail"]
    body, _ = private_body(client)
    body["request_id"] = "another-id"  # the AAD no longer matches
    assert client.post("/v1/classify", json=body).status_code == 400
    assert client.post("/v1/classify", json=private_body(client)[0]).status_code == 200  # and the next one works


def test_not_an_image_and_bad_pixels(client: TestClient) -> None:
    r = client.post("/v1/classify/demo", files={"image": ("x.png", b"definitely not a png", "image/png")}, data={"model": "vit_2_4_8"})
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]
    r = client.post("/v1/classify/demo", files={"image": ("x.png", b"", "image/png")}, data={"model": "vit_2_4_8"})
    assert r.status_code == 400
    r = client.post("/v1/classify/demo", json={"model": "vit_2_4_8", "pixels": [[0.5, 2.0], [0.1, 0.1]]})
    assert r.status_code == 422 and "[0, 1]" in r.json()["detail"]  # the schema's bounds
    r = client.post("/v1/classify/demo", json={"model": "vit_2_4_8", "pixels": [[0.5, 0.2], [0.1]]})
    assert r.status_code == 422 and "rectangular" in r.json()["detail"]
    r = client.post("/v1/classify/demo", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/v1/classify/demo", files={"image": ("d.png", png_bytes(), "image/png")})
    assert r.status_code == 422 and "model" in r.json()["detail"]  # a required field


def test_oversize_body_is_413(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(max_body_bytes=4096))) as c:
        big = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)).save(big, "PNG")
        r = c.post("/v1/classify/demo", files={"image": ("big.png", big.getvalue(), "image/png")}, data={"model": "vit_2_4_8"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]

        def chunks() -> Any:  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b"x" * 1024

        r = c.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/v1/models").status_code == 200


def test_too_many_pixels_is_400(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(max_image_pixels=1000))) as c:
        big = io.BytesIO()
        Image.new("L", (64, 64)).save(big, "PNG")
        r = c.post("/v1/classify/demo", files={"image": ("b.png", big.getvalue(), "image/png")}, data={"model": "vit_2_4_8"})
        assert r.status_code == 400 and "pixels" in r.json()["detail"]


def test_expired_deadline_is_400(client: TestClient) -> None:
    body, _ = private_body(client)
    body["deadline_unix_ms"] = int(time.time() * 1000) - 1000
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 400 and "expired" in r.json()["detail"]


def test_bearer_token_auth(make_settings: SettingsFactory, parties: FakeParties) -> None:
    with TestClient(create_app(make_settings(api_token="s3cret"))) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/parties/keys").status_code == 401
        r = c.post("/v1/classify/demo", files={"image": ("d.png", png_bytes(), "image/png")}, data={"model": "vit_2_4_8"})
        assert r.status_code == 401
        assert c.get("/v1/health").status_code == 200  # liveness stays open
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        c.headers["Authorization"] = "Bearer s3cret"
        assert sdk(parties, http_client=c).classify(DIGIT, model="vit_2_4_8").class_name


def test_settings_need_tls_or_explicit_insecure(make_settings: SettingsFactory) -> None:
    from pydantic import ValidationError

    from server.settings import Settings

    with pytest.raises(ValidationError, match="insecure"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert make_settings().insecure


def test_page_and_static_files(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "http" not in r.text.split("<body>")[0].replace("http-equiv", "")  # nothing from another origin
    assert client.get("/static/app.js").status_code == 200
    manifest = client.get("/static/samples/index.json").json()
    assert len(manifest) >= 5 and all(client.get(f"/static/samples/{m['file']}").status_code == 200 for m in manifest)
