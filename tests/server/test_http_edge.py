"""The HTTP edge: absurd numbers, content types, slow bodies, what a request may make the parties load."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.main import create_app
from server.settings import Settings
from tests.server.fake_party import FakeParties
from tests.server.test_api import png_bytes, private_body
from tests.server.test_contract import assert_clean

ABSURD = ["1" + "0" * 400, "-" + "9" * 400, "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "-1", "0.5", "9223372036854775808", '"1"', "true", "null"]


def post_raw(client: TestClient, route: str, raw: str) -> object:
    return client.post(route, content=raw.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("value", ABSURD)
def test_absurd_numbers_in_any_numeric_field_are_422(make_settings: Any, value: str) -> None:
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as client:
        body, _ = private_body(client)
        raw = json.dumps(body)
        pixels = "[[%s, 0.5, 0.5, 0.5], " % value + ", ".join(["[0.5, 0.5, 0.5, 0.5]"] * 3) + "]"  # 4x4: the patch grid
        cases = [
            ("/v1/classify", raw.replace('"shares"', f'"deadline_unix_ms": {value}, "shares"', 1), "deadline_unix_ms"),
            ("/v1/classify", raw.replace("[1, 8, 8]", f"[1, 8, {value}]", 1), "shares.0.shape.2"),
            ("/v1/classify/demo", '{"model": "vit_2_4_8", "pixels": %s}' % pixels, "pixels"),
            ("/v1/compare", '{"pixels": %s}' % pixels, "pixels"),
        ]
        for route, payload, field in cases:
            if value == "null" and field == "deadline_unix_ms":
                continue  # an explicit null deadline is the default deadline
            if value == "0.5" and field == "pixels":
                continue  # a pixel value in range
            r = post_raw(client, route, payload)
            assert r.status_code == 422, (route, field, value[:12], r.status_code, r.text)
            detail = r.json()["detail"]
            assert field in detail, detail
            assert_clean(detail)
        if value == "true":
            return
        r = client.get("/v1/models", params={"all": value})
        assert r.status_code == 422 and "all" in r.json()["detail"], r.text


def test_deadline_bound_is_stated_and_far_future_is_capped(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    prop = doc["components"]["schemas"]["PrivateClassifyRequest"]["properties"]["deadline_unix_ms"]["anyOf"][0]
    assert prop["minimum"] == 0 and prop["maximum"] == 253_402_300_799_999
    body, _ = private_body(client)
    r = client.post("/v1/classify", json={**body, "deadline_unix_ms": 253_402_300_799_999})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None])
def test_wrong_content_type_is_415_saying_json(client: TestClient, ctype: str | None) -> None:
    body, _ = private_body(client)
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/v1/classify", content=json.dumps(body).encode(), headers=headers)
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["detail"]
    for route in ("/v1/classify/demo", "/v1/compare"):
        if ctype and ctype.startswith("multipart"):
            continue  # the demo routes take multipart
        r = client.post(route, content=b'{"model": "vit_2_4_8"}', headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["detail"], (route, r.text)
    ok = client.post("/v1/classify", content=json.dumps(private_body(client)[0]).encode(),
                     headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text
    doc = client.get("/openapi.json").json()
    for route in ("/v1/classify", "/v1/classify/demo", "/v1/compare"):
        assert "415" in doc["paths"][route]["post"]["responses"], route


# -- what a request may make the parties load -------------------------------------------


@pytest.fixture
def curated(model_dir: Path, tmp_path: Path) -> Iterator[tuple[Path, FakeParties]]:
    """vit (listed in a manifest) and mpcvit (a checkpoint beside it, not listed), behind their own fake parties."""
    for name in ("vit_2_4_8", "mpcvit_2_4_8"):
        shutil.copytree(model_dir / name, tmp_path / name)
    (tmp_path / "manifest.json").write_text(json.dumps({"default": "vit_2_4_8", "models": [{"name": "vit_2_4_8", "label": "ViT"}]}))
    parties = FakeParties(tmp_path).start()
    try:
        yield tmp_path, parties
    finally:
        parties.stop()


def curated_client(curated: tuple[Path, FakeParties], **overrides: Any) -> TestClient:
    root, parties = curated
    return TestClient(create_app(Settings(  # type: ignore[call-arg]
        _env_file=None, insecure=True, party0=parties.addresses[0], party1=parties.addresses[1], model_dir=root,
        batch_wait_ms=2.0, request_timeout_s=10.0, connect_timeout_s=1.5, **overrides,
    )))


def test_only_the_catalog_is_loaded_unless_the_operator_allows_more(curated: tuple[Path, FakeParties]) -> None:
    _, parties = curated
    image = {"image": ("d.png", png_bytes(), "image/png")}
    with curated_client(curated) as client:
        body, _ = private_body(client, model="mpcvit_2_4_8")
        r = client.post("/v1/classify", json=body)
        assert r.status_code == 404 and "available: vit_2_4_8" in r.json()["detail"], r.text
        assert client.post("/v1/classify/demo", files=image, data={"model": "mpcvit_2_4_8"}).status_code == 404
        assert client.post("/v1/compare", files=image, data={"models": "vit_2_4_8,mpcvit_2_4_8"}).status_code == 404
        assert parties.runtime.loaded == [set(), set()]  # nothing reached a party
        assert [m["name"] for m in client.get("/v1/models", params={"all": "true"}).json()["models"]] == ["vit_2_4_8"]
        enum = client.get("/openapi.json").json()["components"]["schemas"]["PrivateClassifyRequest"]["properties"]["model"]["enum"]
        assert enum == ["vit_2_4_8"]
        assert client.post("/v1/classify", json=private_body(client)[0]).status_code == 200
        assert parties.runtime.loaded == [{"vit_2_4_8"}, {"vit_2_4_8"}]
    with curated_client(curated, preload_models=["mpcvit_2_4_8"]) as client:  # a preload is the operator's choice
        assert client.post("/v1/classify", json=private_body(client, model="mpcvit_2_4_8")[0]).status_code == 200
    parties.runtime.loaded = [set(), set()]
    with curated_client(curated, serve_unlisted=True) as client:
        assert sorted(m["name"] for m in client.get("/v1/models", params={"all": "true"}).json()["models"]) == ["mpcvit_2_4_8", "vit_2_4_8"]
        r = client.post("/v1/classify/demo", files=image, data={"model": "mpcvit_2_4_8"})
        assert r.status_code == 200, r.text
        assert parties.runtime.loaded == [{"mpcvit_2_4_8"}, {"mpcvit_2_4_8"}]


def test_no_load_before_the_request_is_otherwise_valid(curated: tuple[Path, FakeParties]) -> None:
    _, parties = curated
    with curated_client(curated) as client:
        body, _ = private_body(client)
        bad = [
            {**body, "shares": [{**s, "shape": [1, 8, 4]} for s in body["shares"]]},  # not the model's shape
            {**body, "shares": [{**s, "ciphertext": base64.b64encode(b"x" * 24).decode()} for s in body["shares"]]},  # too short
            {**body, "client_public_key": base64.b64encode(bytes(32)).decode()},  # a low-order point: nothing opens
            {**body, "deadline_unix_ms": 1},  # expired
        ]
        for payload in bad:
            r = client.post("/v1/classify", json=payload)
            assert r.status_code == 400, r.text
        tiny = io.BytesIO()
        Image.new("L", (2, 2)).save(tiny, "PNG")
        r = client.post("/v1/compare", files={"image": ("t.png", tiny.getvalue(), "image/png")}, data={"models": "vit_2_4_8"})
        assert r.status_code == 400 and "patch grid" in r.json()["detail"]
        r = client.post("/v1/classify/demo", files={"image": ("t.png", tiny.getvalue(), "image/png")}, data={"model": "vit_2_4_8"})
        assert r.status_code == 400
        assert parties.runtime.loaded == [set(), set()] and parties.runtime.received == [[], []]
