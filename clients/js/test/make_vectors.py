"""Known-answer vectors shared by the Python SDK and the JavaScript SDK (clients/js).

    python clients/js/test/make_vectors.py            # rewrites clients/js/test/vectors.json
    python clients/js/test/make_vectors.py --check    # exit 1 if the committed file's deterministic parts differ

Everything here comes from the Python functions the SDK uses (``mpcvit.sealing``, ``mpcvit.client``,
``mpcvit.pki``) with fixed keys, fixed nonces (``seal_tensor``'s test-only ``_nonce``) and fixed masks, so
the JavaScript tests can check that the same inputs give the same bytes. The "pki" part holds freshly
made certificates and ECDSA signatures (randomised, so it is not reproduced by ``--check``; the Python
test verifies it with ``mpcvit.pki.verify_party_key`` instead).

No key here protects anything: they are derived from public labels.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric import ec

from mpcvit import client as sdk
from mpcvit import pki
from mpcvit.prg import PRG
from mpcvit.sealing import BoxContext, KeyPair, Sealed, _aad, _key, public_from_private, seal_tensor

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors.json"
VERSION = 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def fixed(label: str, n: int = 32) -> bytes:
    """Public, reproducible bytes for a label (test keys, nonces, PRG keys)."""
    return hashlib.sha256(b"mpcvit js vectors|" + label.encode()).digest()[:n]


def keypair(label: str) -> KeyPair:
    private = fixed(label)
    return KeyPair(private, public_from_private(private))


def ints(t: torch.Tensor) -> list[str]:
    """int64 values as decimal strings (JSON numbers lose precision beyond 2^53)."""
    return [str(int(v)) for v in t.reshape(-1).tolist()]


def floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.reshape(-1).tolist()]


def mask(label: str, shape: tuple[int, ...]) -> torch.Tensor:
    return PRG(fixed(label)).ring(shape)


def split(x: torch.Tensor, bits: int, mask_label: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``share_fixed_point`` with a known mask: (encoded, share0 = mask, share1 = encoded - mask)."""
    enc = torch.round(x.double() * (1 << bits)).to(torch.int64)
    r = mask(mask_label, tuple(enc.shape))
    return enc, r, enc - r


def sealed_json(s: Sealed) -> dict[str, Any]:
    return sdk.sealed_to_json(s)


def seal_case(name: str, values: torch.Tensor, client: KeyPair, party: KeyPair, ctx: BoxContext) -> dict[str, Any]:
    nonce = fixed(f"nonce|{name}", 12)
    if ctx.direction == "input":
        own, peer, key = client.private, party.public, _key(client.private, party.public, "input", own_is_client=True)
    else:
        own, peer, key = party.private, client.public, _key(party.private, client.public, "output", own_is_client=False)
    box = seal_tensor(values, own, peer, ctx, _nonce=nonce)
    return {
        "name": name,
        "context": {"request_id": ctx.request_id, "model": ctx.model, "rank": ctx.rank, "direction": ctx.direction},
        "client_public": b64(client.public),
        "party_public": b64(party.public),
        "values": ints(values),
        "key": key.hex(),
        "aad": b64(_aad(ctx, tuple(values.shape), "int64")),
        "sealed": sealed_json(box),
    }


def fixed_point_cases() -> list[dict[str, Any]]:
    cases = []
    raw = [0.0, 1.0, 0.5, 1 / 3, 0.1, 2.0**-17, 3 * 2.0**-17, 5 * 2.0**-17, -(2.0**-17), -3 * 2.0**-17, -0.75, 0.999, 123.456]
    for bits in (16, 12, 20):
        x = torch.tensor(raw, dtype=torch.float32)
        enc, s0, s1 = split(x, bits, f"mask|fixed|{bits}")
        cases.append({"precision_bits": bits, "x": floats(x), "encoded": ints(enc), "share0": ints(s0), "share1": ints(s1),
                      "decoded": floats(sdk.reconstruct_fixed_point(s0, s1, bits))})
    return cases


def box_cases(client: KeyPair, parties: list[KeyPair]) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(7)
    cases = []
    for rank in (0, 1):
        x = torch.randint(-(2**63), 2**63 - 1, (1, 3, 4), generator=g, dtype=torch.int64)
        cases.append(seal_case(f"input-{rank}", x, client, parties[rank], BoxContext("req-0001", "vit-tiny", rank, "input")))
        y = torch.randint(-(2**40), 2**40, (10,), generator=g, dtype=torch.int64)
        cases.append(seal_case(f"output-{rank}", y, client, parties[rank], BoxContext("req-0001", "vit-tiny", rank, "output")))
    cases.append(seal_case("unicode-model", torch.tensor([-1, 0, 1, 2**63 - 1, -(2**63)], dtype=torch.int64), client, parties[1],
                           BoxContext("r:é", "modèle-ü/β", 1, "input")))
    cases.append(seal_case("scalar", torch.tensor(42, dtype=torch.int64), client, parties[0], BoxContext("s", "m", 0, "output")))
    return cases


def preprocess_cases() -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(11)
    cases = []
    arrays = [
        ("hw-area", (6, 8), (1, 3, 4)),         # shrink by integer factors: box average
        ("hw-area-uneven", (7, 5), (1, 3, 3)),  # shrink by uneven factors (overlapping windows)
        ("hw-bilinear", (3, 4), (1, 7, 9)),     # enlarge: bilinear, align_corners=False
        ("hw-mixed", (8, 3), (1, 4, 5)),        # one side shrinks, the other grows: bilinear
        ("hwc-rgb-to-gray", (5, 5, 3), (1, 5, 5)),
        ("chw-rgb-to-gray", (3, 4, 4), (1, 2, 2)),
        ("hw-gray-to-rgb", (4, 4), (3, 2, 2)),
        ("hwc-rgb", (4, 6, 3), (3, 8, 8)),
        ("same-size", (1, 4, 4), (1, 4, 4)),
    ]
    for name, shape, input_shape in arrays:
        a = torch.rand(shape, generator=g).float()
        if name == "hw-bilinear":
            a[0, 0], a[-1, -1] = 0.0, 1.0
        out = sdk.preprocess(a.numpy(), input_shape)
        cases.append({"name": name, "kind": "array", "array_shape": list(shape), "array": floats(a), "input_shape": list(input_shape),
                      "expected": floats(out)})
    from PIL import Image

    for name, (w, h), input_shape in [("rgba-gray", (6, 4), (1, 2, 3)), ("rgba-rgb", (5, 5), (3, 5, 5)), ("rgba-gray-up", (3, 2), (1, 5, 4))]:
        rgba = torch.randint(0, 256, (h, w, 4), generator=g, dtype=torch.uint8).numpy().tobytes()
        out = sdk.preprocess(Image.frombytes("RGBA", (w, h), rgba), input_shape)
        cases.append({"name": name, "kind": "rgba", "width": w, "height": h, "rgba": b64(rgba), "input_shape": list(input_shape),
                      "expected": floats(out)})
    return cases


def classify_case(client: KeyPair, parties: list[KeyPair]) -> dict[str, Any]:
    """One whole exchange: the model entry, the image, the request body the client sends, the reply, the result."""
    bits = 16
    model = {"name": "vectors-mlp", "label": "vectors", "variant": "test", "arch": "test", "attention": {}, "input_shape": [1, 4, 4],
             "classes": [f"class{i}" for i in range(5)], "precision_bits": bits, "accuracy": None, "dataset": None, "loaded": True,
             "measured_cost": None}
    image = torch.rand((8, 8), generator=torch.Generator().manual_seed(3)).float()
    x = sdk.preprocess(image.numpy(), model["input_shape"])
    request_id = "0123456789abcdef0123456789abcdef"
    _, s0, s1 = split(x, bits, "mask|classify|input")
    shares = tuple(seal_tensor(s, client.private, parties[r].public, BoxContext(request_id, model["name"], r, "input"),
                               _nonce=fixed(f"nonce|classify|input|{r}", 12)) for r, s in enumerate((s0, s1)))
    req = sdk.SealedRequest(request_id, client, shares, model["name"])  # type: ignore[arg-type]
    body = sdk.request_to_json(model["name"], req)

    def reply(logits: torch.Tensor, tag: str) -> dict[str, Any]:
        _, y0, y1 = split(logits, bits, f"mask|classify|{tag}")
        outs = [seal_tensor(y, parties[r].private, client.public, BoxContext(request_id, model["name"], r, "output"),
                            _nonce=fixed(f"nonce|classify|{tag}|{r}", 12)) for r, y in enumerate((y0, y1))]
        costs = {"total": {"rounds": 12, "bytes": 34567, "seconds": 0.25},
                 "parties": [{"rank": r, "rounds": 12, "bytes_sent": 17000 + r, "bytes_received": 17000 - r, "seconds": 0.25,
                              "dealer": {"bytes": 1000, "wait_seconds": 0.0, "fetch_seconds": 0.01, "prefetched": True}} for r in (0, 1)]}
        return {"model": model["name"], "request_id": request_id, "session_id": "session-1", "coordinator_saw_image": False,
                "output_shares": [sdk.sealed_to_json(s) for s in outs], "precision_bits": bits, "costs": costs,
                "queue_seconds": 0.125, "batch_size": 1}

    logits = torch.tensor([1.5, -2.25, 7.0, 0.0, 3.125], dtype=torch.float64)
    good = reply(logits, "output")
    opened = sdk.open_output(req, [sdk.sealed_from_json(s) for s in good["output_shares"]], [p.public for p in parties], bits)
    result = sdk.make_result(model, request_id, opened, good["costs"], good["queue_seconds"], good["batch_size"], 0.0).to_dict()
    result.pop("seconds")
    bad = reply(torch.tensor([1.0, -3.0, 2.0**21, 0.0, 0.5], dtype=torch.float64), "implausible")
    return {"model": model, "image_shape": list(image.shape), "image": floats(image), "preprocessed": floats(x),
            "client_private": b64(client.private), "input_mask": ints(s0),
            "input_nonces": [b64(fixed(f"nonce|classify|input|{r}", 12)) for r in (0, 1)], "request_body": body, "reply": good, "result": result, "implausible_reply": bad}


def plausible_cases() -> list[dict[str, Any]]:
    """Logits and whether ``check_plausible`` lets them through (non-finite ones as strings: JSON has no NaN)."""
    out = []
    for logits in ([0.0, 1.0], [2.0**20, -(2.0**20)], [2.0**20 + 1 / 65536], [-(2.0**21)], [1.0, "Infinity"], ["NaN"], []):
        t = torch.tensor([float(v) for v in logits], dtype=torch.float64)
        try:
            sdk.check_plausible(t)
            ok = True
        except sdk.ImplausibleOutput:
            ok = False
        out.append({"logits": logits, "plausible": ok})
    return out


def deterministic() -> dict[str, Any]:
    client = keypair("client")
    parties = [keypair("party0"), keypair("party1")]
    return {
        "version": VERSION,
        "note": "Known-answer vectors for the mpcvit client SDKs; made by clients/js/test/make_vectors.py. Test keys only.",
        "keys": {"client_private": b64(client.private), "client_public": b64(client.public),
                 "party_private": [b64(p.private) for p in parties], "party_public": [b64(p.public) for p in parties],
                 "party_fingerprints": [pki.key_fingerprint(p.public) for p in parties]},
        "plausible_logit": sdk.PLAUSIBLE_LOGIT,
        "fixed_point": fixed_point_cases(),
        "boxes": box_cases(client, parties),
        "preprocess": preprocess_cases(),
        "classify": classify_case(client, parties),
        "plausible": plausible_cases(),
    }


def pki_part(party_publics: list[bytes]) -> dict[str, Any]:
    """A CA, each party's certificate and signed sealing key, and proofs that must be refused (each with why)."""
    ca_key, ca_cert = pki.make_ca()
    other_ca_key, other_ca_cert = pki.make_ca()
    certs, tls_keys = {}, {}
    for role in ("party0", "party1", "coordinator"):
        key, csr = pki.make_request(role, ["localhost", role])
        tls_keys[role], certs[role] = key, pki.sign_request(ca_key, ca_cert, csr, role)
    key_o, csr_o = pki.make_request("party0", ["localhost"])
    other_cert = pki.sign_request(other_ca_key, other_ca_cert, csr_o, "party0")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    pem = lambda c: pki.cert_pem(c).decode()  # noqa: E731

    def proof(rank: int, public: bytes, cert: Any, key: ec.EllipticCurvePrivateKey, signed_rank: int | None = None,
              signed_key: bytes | None = None) -> dict[str, Any]:
        sig = pki.sign_party_key(key, rank if signed_rank is None else signed_rank, public if signed_key is None else signed_key)
        return {"rank": rank, "public_key": b64(public), "certificate": pem(cert), "signature": b64(sig)}

    good = [proof(r, party_publics[r], certs[f"party{r}"], tls_keys[f"party{r}"]) for r in (0, 1)]
    attacker = keypair("attacker").public
    bad = [
        {"why": "substituted key (signature over another key)", "proof": {**good[0], "public_key": b64(attacker)}},
        {"why": "party 1's certificate and signature offered for rank 0",
         "proof": proof(0, party_publics[0], certs["party1"], tls_keys["party1"], signed_rank=0)},
        {"why": "a certificate for the coordinator role", "proof": proof(1, party_publics[1], certs["coordinator"], tls_keys["coordinator"])},
        {"why": "a certificate from another CA", "proof": proof(0, party_publics[0], other_cert, key_o)},
        {"why": "signature by party 0 over rank 1's statement", "proof": proof(0, party_publics[0], certs["party0"], tls_keys["party0"], signed_rank=1)},
        {"why": "no certificate or signature", "proof": {**good[0], "certificate": "", "signature": ""}},
        {"why": "a 31-byte key", "proof": {**good[0], "public_key": b64(party_publics[0][:31])}},
        {"why": "tampered signature", "proof": {**good[1], "signature": b64(bytes(base64.b64decode(good[1]["signature"])[:-1]) + b"\x00")}},
        {"why": "the certificate is not valid yet", "proof": good[0], "now": (now - dt.timedelta(days=1)).isoformat()},
        {"why": "the certificate has expired", "proof": good[1], "now": (now + dt.timedelta(days=900)).isoformat()},
    ]
    return {"now": now.isoformat(), "ca_pem": pem(ca_cert), "other_ca_pem": pem(other_ca_cert), "good": good, "bad": bad}


def build() -> dict[str, Any]:
    vectors = deterministic()
    vectors["pki"] = pki_part([base64.b64decode(k) for k in vectors["keys"]["party_public"]])
    return vectors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare the deterministic parts with the committed file")
    args = ap.parse_args(argv)
    if args.check:
        committed = json.loads(VECTORS.read_text())
        committed.pop("pki", None)
        fresh = json.loads(json.dumps(deterministic()))
        if committed != fresh:
            print(f"{VECTORS.name} differs from what the Python SDK makes now: run {Path(__file__).name} and commit", file=sys.stderr)
            return 1
        print(f"{VECTORS.name}: the Python SDK reproduces it")
        return 0
    VECTORS.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {VECTORS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
