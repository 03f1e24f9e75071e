"""The HTTP edge: absurd numbers, content types, slow bodies, what a request may make the parties load."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.server.test_api import png_bytes, private_body
from tests.server.test_contract import assert_clean

ABSURD = ["1" + "0" * 400, "-" + "9" * 400, "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "-1", "0.5", "9223372036854775808", '"1"', "true", "null"]


def post_raw(client: TestClient, route: str, raw: str) -> object:
    return client.post(route, content=raw.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("value", ABSURD)
def test_absurd_numbers_in_any_numeric_field_are_422(make_settings, value: str) -> None:  # type: ignore[no-untyped-def]
    from server.main import create_app

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
