"""The client's integrity net and retries (mpcvit.client): garbage is never returned, a 503 is retried safely."""

from __future__ import annotations

import pytest
import torch

from mpcvit import client as sdk
from mpcvit.sealing import generate_keypair, reconstruct_fixed_point, seal_tensor, BoxContext


def test_garbage_logits_are_refused_and_real_ones_pass() -> None:
    """A mismatched-material answer decodes to uniform ring elements: about +-2^47 after 16 fraction bits."""
    garbage = torch.randint(-(2**62), 2**62, (1000, 10), dtype=torch.int64)
    for row in reconstruct_fixed_point(garbage, torch.zeros_like(garbage), 16):
        with pytest.raises(sdk.ImplausibleOutput, match="garbage"):
            sdk.check_plausible(row)
    logits = torch.tensor([3.5, -12.0, 250.0])
    assert sdk.check_plausible(logits) is logits
    with pytest.raises(sdk.ImplausibleOutput):
        sdk.check_plausible(torch.tensor([float("nan"), 1.0]))


class _Response:
    def __init__(self, status: int, body: dict, headers: dict | None = None) -> None:
        self.status_code, self._body, self.headers, self.text = status, body, headers or {}, str(body)

    def json(self) -> dict:
        return self._body


class _Http:
    """Answers /v1/classify from a script; records every body it was sent."""

    def __init__(self, script: list) -> None:
        self.script, self.sent = script, []
        self.base_url = "http://127.0.0.1:1"

    def post(self, path: str, json: dict, headers: dict) -> _Response:
        self.sent.append(json)
        return self.script.pop(0)(json)

    def get(self, path: str, headers: dict) -> _Response:
        return _Response(200, {"models": [{"name": "m", "input_shape": [1, 2, 2], "precision_bits": 16, "classes": ["a", "b"]}]})


def _answer(keys: list, logits: torch.Tensor):
    """An honest reply: the logits split and sealed by the 'parties' to the request's client key."""
    def reply(body: dict) -> _Response:
        client_key = sdk.base64.b64decode(body["client_public_key"])
        encoded = (logits * 2**16).round().long()
        shares = (encoded - 5, torch.full_like(encoded, 5))
        out = []
        for rank in (0, 1):
            box = seal_tensor(shares[rank], keys[rank].private, client_key, BoxContext(body["request_id"], "m", rank, "output"))
            out.append(sdk.sealed_to_json(box))
        return _Response(200, {"output_shares": out, "costs": {}})
    return reply


def test_classify_retries_a_503_with_the_same_box_and_refuses_garbage_with_a_fresh_one() -> None:
    parties = [generate_keypair(), generate_keypair()]
    good = torch.tensor([1.0, 2.0])
    busy = lambda body: _Response(503, {"detail": "queue full"}, {"retry-after": "0"})  # noqa: E731
    http = _Http([busy, _answer(parties, good)])
    c = sdk.PrivateClient(party_keys=[p.public for p in parties], http_client=http)
    result = c.classify(torch.zeros(1, 2, 2), model="m")
    assert result.class_index == 1 and c.retried == 1
    assert http.sent[0] == http.sent[1]  # the same sealed request: safe, it was not answered
    garbage = torch.tensor([1e12, 2.0])
    http = _Http([_answer(parties, garbage), _answer(parties, good)])
    c = sdk.PrivateClient(party_keys=[p.public for p in parties], http_client=http)
    assert c.classify(torch.zeros(1, 2, 2), model="m").class_index == 1 and c.implausible == 1
    assert http.sent[0]["request_id"] != http.sent[1]["request_id"]  # answered once: asked again freshly sealed
    http = _Http([_answer(parties, garbage), _answer(parties, garbage)])
    c = sdk.PrivateClient(party_keys=[p.public for p in parties], http_client=http)
    with pytest.raises(sdk.ImplausibleOutput):
        c.classify(torch.zeros(1, 2, 2), model="m")
    conflict = lambda body: _Response(409, {"detail": "replayed box"})  # noqa: E731
    http = _Http([conflict])
    c = sdk.PrivateClient(party_keys=[p.public for p in parties], http_client=http)
    with pytest.raises(sdk.ServerError) as err:
        c.classify(torch.zeros(1, 2, 2), model="m")
    assert err.value.status_code == 409 and len(http.sent) == 1  # a 409 is never retried


def test_a_409_after_our_own_resend_is_asked_again_freshly_sealed_once() -> None:
    """A party computed the box before its peer died (503); the re-sent box is a replay there (409): the answer never
    arrived, so the SDK seals the image afresh once. A 409 on the first send is never retried."""
    parties = [generate_keypair(), generate_keypair()]
    busy = lambda body: _Response(503, {"detail": "party 0 is unavailable"}, {"retry-after": "0"})  # noqa: E731
    replayed = lambda body: _Response(409, {"detail": "replayed box"})  # noqa: E731
    http = _Http([busy, replayed, _answer(parties, torch.tensor([0.0, 3.0]))])
    c = sdk.PrivateClient(party_keys=[p.public for p in parties], http_client=http)
    assert c.classify(torch.zeros(1, 2, 2), model="m").class_index == 1 and c.resealed == 1
    assert http.sent[0] == http.sent[1] and http.sent[2]["request_id"] != http.sent[0]["request_id"]
    http = _Http([busy, replayed, busy, replayed])
    c = sdk.PrivateClient(party_keys=[p.public for p in parties], http_client=http)
    with pytest.raises(sdk.ServerError):
        c.classify(torch.zeros(1, 2, 2), model="m")
    assert c.resealed == 1
