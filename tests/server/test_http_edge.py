"""The HTTP edge: absurd numbers, content types, slow bodies, what a request may make the parties load."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.main import create_app, uvicorn_options
from server.settings import Settings
from tests.server.conftest import LiveServer, SettingsFactory
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


# -- slow bodies, connection cap (a real uvicorn on loopback, raw sockets) ----------------------------


def half_sent(port: int, path: str = "/v1/classify", chunked: bool = False) -> socket.socket:
    """A connection that sends a POST's headers and half of its body, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 100"
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + length + b"\r\n\r\n")
    s.sendall(b"32\r\n" + b"{" * 50 + b"\r\n" if chunked else b"{" * 50)
    return s


def read_until_closed(s: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    s.settimeout(limit_s)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except socket.timeout:
        pytest.fail(f"the server kept the half-sent request open past {limit_s} s; got {data!r}")
    return data, time.monotonic() - started


@pytest.mark.timeout(60)
def test_a_half_sent_body_gets_408_and_a_closed_connection(live: Callable[..., LiveServer]) -> None:
    with live(body_timeout_s=1.0) as server:
        for path, chunked in (("/v1/classify", False), ("/v1/classify/demo", False), ("/v1/compare", True)):
            s = half_sent(server.port, path, chunked)
            with s:
                data, took = read_until_closed(s, 10)
            assert data.startswith(b"HTTP/1.1 408 "), (path, data)
            assert b"did not arrive within 1 s" in data and b"connection: close" in data.lower(), data
            assert took < 5, took
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:  # a whole body in time is unaffected
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = read_until_closed(s, 10)
            assert data.startswith(b"HTTP/1.1 200 "), data


@pytest.mark.timeout(60)
def test_connections_beyond_the_cap_get_503(make_settings: SettingsFactory) -> None:
    settings = make_settings(body_timeout_s=30.0, max_connections=3)  # uvicorn counts the new connection too
    with LiveServer(create_app(settings), **uvicorn_options(settings)) as server:
        held = [half_sent(server.port) for _ in range(2)]
        try:
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data, _ = read_until_closed(s, 10)
            assert data.startswith(b"HTTP/1.1 503 "), data
        finally:
            for s in held:
                s.close()


def test_serve_flags_for_the_http_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    from mpcvit import cli
    from mpcvit.commands import serve

    monkeypatch.setenv("MPCVIT_INSECURE", "true")
    parser = cli.build_parser(load="serve")
    s = serve.settings_from_args(parser.parse_args(["serve"]))
    assert (s.body_timeout_s, s.max_connections, s.serve_unlisted) == (30.0, 512, False)
    s = serve.settings_from_args(parser.parse_args(["serve", "--body-timeout", "5", "--max-connections", "64", "--serve-unlisted"]))
    assert (s.body_timeout_s, s.max_connections, s.serve_unlisted) == (5.0, 64, True)
    assert uvicorn_options(s) == {"limit_concurrency": 64}


def test_the_openapi_document_states_what_the_server_answers(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(doc)  # every error is {"detail": "<one line>"}
    models = doc["paths"]["/v1/models"]["get"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert models == {"$ref": "#/components/schemas/ErrorResponse"}
    r = client.get("/v1/models?all=null&all=null")
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)
    for route in ("/v1/classify", "/v1/classify/demo", "/v1/compare"):
        assert {"400", "408", "413", "415", "422"} <= set(doc["paths"][route]["post"]["responses"]), route
    request = doc["components"]["schemas"]["PrivateClassifyRequest"]
    share = request["properties"]["shares"]["items"]["properties"]
    assert share["shape"]["const"] == [1, 8, 8]  # the served models' input shape, not any [C, H, W]
    assert share["ciphertext"]["minLength"] == share["ciphertext"]["maxLength"] == 4 * ((8 * 64 + 16 + 2) // 3)
