"""The JavaScript client SDK (clients/js) and the Python one agree byte for byte.

* The committed vectors (clients/js/test/vectors.json) are what the Python SDK makes today, and the Python
  PKI accepts and refuses their proofs as recorded.
* With node on PATH: the JavaScript tests (``node --test clients/js/test/``, which check the same vectors),
  and fresh random exchanges both ways: a request sealed by the JavaScript SDK opens here as the parties
  open it, and boxes sealed here open there (clients/js/scripts/cross.mjs).
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mpcvit import client as sdk
from mpcvit.pki import PartyKeyError, PartyKeyProof, verify_party_key
from mpcvit.sealing import BoxContext, generate_keypair, open_tensor, reconstruct_fixed_point, seal_tensor, share_fixed_point

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
VECTORS = JS / "test" / "vectors.json"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH: the JavaScript SDK's tests need Node 20+")


def _make_vectors():
    spec = importlib.util.spec_from_file_location("make_vectors", JS / "test" / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _vectors() -> dict:
    return json.loads(VECTORS.read_text())


def test_committed_vectors_are_what_the_python_sdk_makes() -> None:
    committed = _vectors()
    committed.pop("pki")
    assert committed == json.loads(json.dumps(_make_vectors().deterministic())), \
        "clients/js/test/vectors.json is stale: run python clients/js/test/make_vectors.py and commit it"


def test_the_vectors_pki_proofs_verify_as_recorded() -> None:
    pki = _vectors()["pki"]
    ca = pki["ca_pem"].encode()
    proof = lambda p: PartyKeyProof(p["rank"], base64.b64decode(p["public_key"]), p["certificate"].encode(),  # noqa: E731
                                    base64.b64decode(p["signature"]))
    now = dt.datetime.fromisoformat(pki["now"])
    for p in pki["good"]:
        verify_party_key(proof(p), ca, now=now)
    for bad in pki["bad"]:
        with pytest.raises(PartyKeyError):
            verify_party_key(proof(bad["proof"]), ca, now=dt.datetime.fromisoformat(bad["now"]) if "now" in bad else now)


def _node(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "NODE_NO_WARNINGS": "1"}
    return subprocess.run([NODE, *args], input=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)  # type: ignore[list-item]


@needs_node
def test_javascript_suite() -> None:
    """``node --test clients/js/test/``: the vectors, the key checks, PrivateClient against a fake coordinator."""
    version = _node("--version").stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"node {version} is too old for the JavaScript SDK (Node 20+: WebCrypto X25519)")
    done = _node("--test", "clients/js/test/")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    if not (JS / "node_modules" / "pkijs").is_dir():
        print("note: clients/js/node_modules is missing (npm ci in clients/js): the JavaScript CA-chain tests were skipped")


@needs_node
def test_each_side_opens_what_the_other_sealed() -> None:
    v = _vectors()["keys"]
    parties = [base64.b64decode(k) for k in v["party_private"]]
    publics = [base64.b64decode(k) for k in v["party_public"]]
    model, request_id = "cross-model", sdk.new_request_id()
    image = torch.rand((3, 9, 7), generator=torch.Generator().manual_seed(5))
    input_shape = [1, 6, 6]

    # JavaScript seals a classify request (fresh keys, masks and nonces); the parties open it here
    done = _node("clients/js/scripts/cross.mjs", "seal", stdin=json.dumps({
        "party_public": v["party_public"], "party_private": v["party_private"], "model": model, "request_id": request_id,
        "image": image.tolist(), "input_shape": input_shape}))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    body = out["request_body"]
    assert set(body) == {"model", "request_id", "client_public_key", "shares"} and body["request_id"] == request_id
    client_public = base64.b64decode(body["client_public_key"])
    shares = [open_tensor(sdk.sealed_from_json(body["shares"][r]), parties[r], client_public, BoxContext(request_id, model, r, "input"))
              for r in (0, 1)]
    x = sdk.preprocess(image.permute(1, 2, 0).numpy(), input_shape)
    got = reconstruct_fixed_point(shares[0], shares[1], 16)
    assert got.shape == x.shape
    # the same fixed-point integers, up to one unit where float32 rounding of the resize straddles a half-unit
    assert (got * 65536 - torch.round(x.double() * 65536)).abs().max() <= 1
    client_private = base64.b64decode(out["client_private"])
    for r in (0, 1):
        box = open_tensor(sdk.sealed_from_json(out["party_boxes"][r]), client_private, publics[r], BoxContext(request_id, model, r, "output"))
        assert box.tolist() == [[i - 2**62 for i in range(3)], [i - 2**62 for i in range(3, 6)]]

    # the parties answer here (random nonces and masks); JavaScript opens the answer, and input boxes sealed here
    logits = torch.tensor([0.25, -3.5, 12.0, 1e-3], dtype=torch.float64)
    y0, y1 = share_fixed_point(logits, 16)
    outputs = [sdk.sealed_to_json(seal_tensor(y, parties[r], client_public, BoxContext(request_id, model, r, "output"))) for r, y in enumerate((y0, y1))]
    me = generate_keypair()
    values = torch.tensor([[-(2**63), 2**63 - 1], [0, -1]], dtype=torch.int64)
    inputs = [sdk.sealed_to_json(seal_tensor(values + r, me.private, publics[r], BoxContext(request_id, model, r, "input"))) for r in (0, 1)]
    done = _node("clients/js/scripts/cross.mjs", "open", stdin=json.dumps({
        "client_private": out["client_private"], "party_public": v["party_public"], "party_private": v["party_private"], "model": model,
        "request_id": request_id, "output_shares": outputs, "precision_bits": 16, "input_boxes": inputs,
        "input_client_public": base64.b64encode(me.public).decode()}))
    assert done.returncode == 0, done.stderr
    opened = json.loads(done.stdout)
    assert opened["logits"] == reconstruct_fixed_point(y0, y1, 16).tolist()
    for r in (0, 1):
        assert opened["inputs"][r]["shape"] == [2, 2]
        assert [int(s) for s in opened["inputs"][r]["values"]] == (values + r).reshape(-1).tolist()
