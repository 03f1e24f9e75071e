"""Schema-driven fuzzing: requests drawn from the app's own /openapi.json, on every route, against the fake parties.

A small generator turns each operation's schema (parameters, JSON and multipart bodies) into hypothesis
strategies: enums, patterns, lengths, bounds and required fields are taken as the document states them, so
schema-conforming requests reach the secure path. Nested arrays are drawn rectangular (one length per
level), and a binary field marked ``x-image`` becomes a real PNG of at least ``x-min-side`` pixels per side.
The one thing no schema can give is a box that opens: for ``POST /v1/classify`` half the examples seal an
image drawn from the demo route's pixel schema with the SDK, the other half are pure schema draws.

Every route must answer every example without a 5xx, and with at least one 200.
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mpcvit.client import preprocess, request_to_json, seal_input

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis (a dev dependency) is not installed")
st = hypothesis.strategies

EXAMPLES = 20  # per route; bounded so the whole file runs in well under a minute
SHORT = 6  # longest free-form array or string the generator draws beyond its minimum


class SchemaStrategies:
    """JSON Schema (OpenAPI 3.1 flavour) -> hypothesis strategies, resolving ``#/components`` references."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.doc
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def value(self, schema: dict[str, Any]) -> Any:
        schema = self.resolve(schema)
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "const" in schema:
            return st.just(schema["const"])
        if "anyOf" in schema or "oneOf" in schema:
            return st.one_of([self.value(s) for s in schema.get("anyOf", schema.get("oneOf"))])
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            return self.obj(schema)
        if kind == "array":
            return self.array(schema)
        if kind == "string":
            return self.string(schema)
        if kind == "integer":
            return st.integers(schema.get("minimum"), schema.get("maximum"))
        if kind == "number":
            return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        return st.none() | st.integers() | st.text(max_size=SHORT)

    def string(self, schema: dict[str, Any]) -> Any:
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        if "pattern" in schema:
            strategy = st.from_regex(schema["pattern"], fullmatch=True)
            return strategy.filter(lambda s: lo <= len(s) and (hi is None or len(s) <= hi))
        return st.text(min_size=lo, max_size=min(hi if hi is not None else lo + SHORT, lo + SHORT))

    def array(self, schema: dict[str, Any]) -> Any:
        """Nested arrays are rectangular: one length per level, drawn first, then the leaves."""
        levels: list[tuple[int, int]] = []
        while schema.get("type") == "array":
            lo = schema.get("minItems", 0)
            levels.append((lo, min(schema.get("maxItems", lo + SHORT), lo + SHORT)))
            schema = self.resolve(schema.get("items", {}))
        leaf = self.value(schema)

        def nest(shape: tuple[int, ...]) -> Any:
            if not shape:
                return leaf
            return st.lists(nest(shape[1:]), min_size=shape[0], max_size=shape[0])

        return st.tuples(*(st.integers(lo, hi) for lo, hi in levels)).flatmap(nest)

    def obj(self, schema: dict[str, Any]) -> Any:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: self.field(v) for k, v in props.items() if k in required},
            optional={k: self.field(v) for k, v in props.items() if k not in required},
        )

    def field(self, schema: dict[str, Any]) -> Any:
        schema = self.resolve(schema)
        if schema.get("format") == "binary":
            return png_files(int(schema.get("x-min-side", 1))) if schema.get("x-image") else st.binary(max_size=64)
        return self.value(schema)


def png_files(min_side: int) -> Any:
    """A real PNG (gray or RGB) with each side in [min_side, min_side + 12]."""

    def encode(args: tuple[int, int, str, int]) -> bytes:
        width, height, mode, seed = args
        img = Image.new(mode, (width, height), color=seed % 256 if mode == "L" else (seed % 256, 40, 200))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()

    side = st.integers(min_side, min_side + 12)
    return st.tuples(side, side, st.sampled_from(["L", "RGB"]), st.integers(0, 255)).map(encode)


def operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((method.upper(), path) for path, item in doc["paths"].items() for method in item)


def request_strategy(client: TestClient, doc: dict[str, Any], method: str, path: str) -> Any:
    """Keyword arguments for ``client.request``: query parameters, and a JSON or multipart body."""
    gen = SchemaStrategies(doc)
    op = doc["paths"][path][method.lower()]
    params = {p["name"]: gen.value(p["schema"]).map(lambda v: json.dumps(v) if isinstance(v, bool) else str(v))
              for p in op.get("parameters", []) if p["in"] == "query"}
    parts: list[Any] = []
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        parts.append(gen.value(content["application/json"]["schema"]).map(lambda body: {"json": body}))
    if "multipart/form-data" in content:
        schema = content["multipart/form-data"]["schema"]

        def split(form: dict[str, Any]) -> dict[str, Any]:
            files = {k: (f"{k}.png", v, "image/png") for k, v in form.items() if isinstance(v, bytes)}
            return {"files": files, "data": {k: v for k, v in form.items() if not isinstance(v, bytes)}}

        parts.append(gen.obj(schema).map(split))
    if path == "/v1/classify":
        parts.append(sealed_requests(client, doc, gen))
    body = st.one_of(parts) if parts else st.just({})
    return st.tuples(st.fixed_dictionaries(params), body).map(lambda pb: {**({"params": pb[0]} if pb[0] else {}), **pb[1]})


def sealed_requests(client: TestClient, doc: dict[str, Any], gen: SchemaStrategies) -> Any:
    """Private requests that open: a model from the schema's enum, an image from the demo route's pixel schema."""
    keys = [base64.b64decode(p["public_key"]) for p in client.get("/v1/parties/keys").json()["parties"]]
    models = {m["name"]: m["input_shape"] for m in client.get("/v1/models", params={"all": "true"}).json()["models"]}
    names = doc["components"]["schemas"]["PrivateClassifyRequest"]["properties"]["model"]["enum"]
    pixels = doc["paths"]["/v1/classify/demo"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["pixels"]

    def seal(args: tuple[str, Any]) -> dict[str, Any]:
        model, image = args
        x = preprocess(np.asarray(image, dtype=np.float32), models[model])
        return {"json": request_to_json(model, seal_input(x, keys, model=model))}

    return st.tuples(st.sampled_from(names), gen.value(pixels["anyOf"][0])).map(seal)


@pytest.mark.timeout(120)
def test_schema_driven_fuzz_no_5xx_and_some_200_on_every_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    ops = operations(doc)
    assert {("POST", "/v1/classify"), ("POST", "/v1/classify/demo"), ("POST", "/v1/compare"), ("GET", "/v1/models")} <= set(ops)
    seen: dict[tuple[str, str], Counter[int]] = {}
    for method, path in ops:
        statuses: Counter[int] = Counter()

        @hypothesis.settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(request_strategy(client, doc, method, path))
        def one(kwargs: dict[str, Any]) -> None:
            r = client.request(method, path, **kwargs)
            statuses[r.status_code] += 1
            assert r.status_code < 500, (method, path, kwargs, r.text)
            if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
                assert isinstance(r.json()["detail"], str), r.text

        one()
        seen[(method, path)] = statuses
    assert all(s[200] > 0 for s in seen.values()), seen
