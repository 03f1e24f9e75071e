"""The API contract beyond the happy path: bounded metrics, one status per kind of bad body, clean error messages."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

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


POST_ROUTES = ("/v1/classify", "/v1/classify/demo", "/v1/compare")
INTERNALS = ("0x", "pydantic", "Traceback", "ctx", "'type':", "<class", "object at", "errors.pydantic.dev")


def assert_clean(detail: object) -> None:
    assert isinstance(detail, str), detail
    for needle in INTERNALS:
        assert needle not in detail, (needle, detail)


@pytest.mark.parametrize("raw", [b"{", b"{'model': 1}", b"not json", b'{"model": "vit_2_4_8",}', b"\xff\xfe"])
def test_malformed_json_is_400_on_every_route(client: TestClient, raw: bytes) -> None:
    for route in POST_ROUTES:
        r = client.post(route, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, (route, r.text)
        assert_clean(r.json()["detail"])


@pytest.mark.parametrize("body", [{}, [], "x", {"model": "vit_2_4_8", "pixels": "x"}, {"pixels": [[0.5] * 8] * 8, "extra": 1}])
def test_schema_violations_are_422_on_every_route(client: TestClient, body: object) -> None:
    for route in POST_ROUTES:
        r = client.post(route, json=body)
        assert r.status_code == 422, (route, r.text)
        assert_clean(r.json()["detail"])


def test_error_messages_do_not_echo_python_internals(client: TestClient) -> None:
    body, _ = private_body(client)
    bad = [
        ("/v1/classify", {**body, "client_public_key": "!!"}),
        ("/v1/classify", {**body, "shares": [{"shape": "x"}]}),
        ("/v1/classify", {**body, "deadline_unix_ms": -5, "request_id": "a b"}),
        ("/v1/classify/demo", {"model": "vit_2_4_8", "pixels": [[None, "a"], [{}, []]]}),
        ("/v1/classify/demo", {"model": "vit_2_4_8", "pixels": [[[[0.5]]]]}),
        ("/v1/compare", {"pixels": [[0.5] * 8] * 8, "models": ["x"] * 40}),
    ]
    for route, payload in bad:
        r = client.post(route, json=payload)
        assert r.status_code == 422, (route, r.text)
        assert_clean(r.json()["detail"])
    r = client.post("/v1/classify/demo", files={"image": ("x.png", b"\x89PNG not really", "image/png")}, data={"model": "vit_2_4_8"})
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]
    assert_clean(r.json()["detail"])


def test_images_smaller_than_the_patch_grid_are_refused(client: TestClient) -> None:
    tiny = io.BytesIO()
    Image.new("L", (3, 8)).save(tiny, "PNG")  # the 2_4_8 models have a 4x4 patch grid
    r = client.post("/v1/classify/demo", files={"image": ("t.png", tiny.getvalue(), "image/png")}, data={"model": "vit_2_4_8"})
    assert r.status_code == 400 and "smaller than model vit_2_4_8's 4x4 patch grid" in r.json()["detail"]
    r = client.post("/v1/compare", json={"pixels": [[0.5]]})
    assert r.status_code == 400 and "patch grid" in r.json()["detail"]
    r = client.post("/v1/classify/demo", json={"model": "vit_2_4_8", "pixels": [[0.5] * 4] * 4})
    assert r.status_code == 200, r.text  # the grid itself is enough


def test_openapi_states_the_constraints(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    comps = doc["components"]["schemas"]
    req = comps["PrivateClassifyRequest"]
    assert set(req["required"]) == {"model", "request_id", "client_public_key", "shares"}
    assert req["properties"]["model"]["enum"] == ["mpcvit_2_4_8", "thex_2_4_8", "vit_2_4_8"]
    assert req["properties"]["client_public_key"]["minLength"] == req["properties"]["client_public_key"]["maxLength"] == 44
    assert req["properties"]["shares"]["minItems"] == req["properties"]["shares"]["maxItems"] == 2
    share = comps["SealedTensorIn"]["properties"]
    assert share["nonce"]["maxLength"] == 16 and share["shape"]["minItems"] == share["shape"]["maxItems"] == 3
    demo = doc["paths"]["/v1/classify/demo"]["post"]["requestBody"]["content"]
    assert demo["multipart/form-data"]["schema"]["required"] == ["image", "model"]
    pixels = demo["application/json"]["schema"]["properties"]["pixels"]["anyOf"][0]
    assert pixels["minItems"] == pixels["items"]["minItems"] == 4 and pixels["maxItems"] == 4096
    assert pixels["items"]["items"] == {"type": "number", "minimum": 0, "maximum": 1}
    compare = doc["paths"]["/v1/compare"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert compare["properties"]["models"]["anyOf"][0]["maxItems"] == 8
    assert "422" in doc["paths"]["/v1/classify"]["post"]["responses"]
