"""Output policies through the coordinator and the SDK (fake parties that follow the owner's meta.json policy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from mpcvit.checkpoint import save_checkpoint
from mpcvit.client import sealed_from_json
from mpcvit.models import create_model
from tests.server.conftest import DIGIT_CLASSES, sdk
from tests.server.fake_party import FakeParties
from tests.server.test_api import DIGIT, keys, plaintext_logits, private_body

POLICIES = {"vit_2_4_8": None, "vit_label": "label", "vit_top3": "topk:3"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("policy-models")
    for name, policy in POLICIES.items():
        torch.manual_seed(0)
        meta = {"dataset": "digits", "classes": DIGIT_CLASSES, "normalisation": {"mean": [0.3], "std": [0.4]}}
        if policy:
            meta["output_policy"] = policy
        save_checkpoint(d / name, create_model("vit_2_4_8"), meta)
    return d


def _policies(client: TestClient) -> dict[str, str]:
    r = client.get("/v1/models", params={"all": "true"})
    assert r.status_code == 200, r.text
    return {m["name"]: m["output_policy"] for m in r.json()["models"]}


def test_models_show_the_owners_policy(client: TestClient, parties: FakeParties) -> None:
    want = {"vit_2_4_8": "logits", "vit_label": "label", "vit_top3": "topk:3"}
    assert _policies(client) == want  # before any load: this copy of meta.json's
    for name in POLICIES:
        sdk(parties, http_client=client).classify(DIGIT, model=name)
    assert _policies(client) == want  # after: what party 0 reported at load


def test_a_label_answer_holds_only_the_class(client: TestClient, parties: FakeParties, model_dir: Path) -> None:
    result = sdk(parties, http_client=client).classify(DIGIT, model="vit_label")
    ref = plaintext_logits(model_dir, "vit_label", DIGIT)
    assert result.class_index == int(ref.argmax()) and result.class_name == str(int(ref.argmax()))
    assert result.output_policy == "label" and result.top_k == [result.class_index]
    assert result.logits == [] and result.probabilities == []
    body, _ = private_body(client, "vit_label")
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["output_policy"] == "label"
    assert [sealed_from_json(s).shape for s in out["output_shares"]] == [(1,), (1,)]  # one ring element each, no logits


def test_a_topk_answer_ranks_k_classes(client: TestClient, parties: FakeParties, model_dir: Path) -> None:
    result = sdk(parties, http_client=client).classify(DIGIT, model="vit_top3")
    ref = plaintext_logits(model_dir, "vit_top3", DIGIT)
    assert result.top_k == ref.topk(3).indices.tolist() and result.class_index == result.top_k[0]
    assert result.output_policy == "topk:3" and result.logits == []


def test_logits_answers_are_unchanged(client: TestClient, parties: FakeParties, model_dir: Path) -> None:
    result = sdk(parties, http_client=client).classify(DIGIT, model="vit_2_4_8")
    ref = plaintext_logits(model_dir, "vit_2_4_8", DIGIT)
    assert torch.allclose(torch.tensor(result.logits, dtype=torch.float64), ref, atol=2e-3)
    assert result.output_policy == "logits" and result.top_k == []


def test_a_request_cannot_ask_for_more(client: TestClient) -> None:
    body, _ = private_body(client, "vit_label")
    body["output_policy"] = "logits"  # the coordinator takes no policy from a client: refused
    assert client.post("/v1/classify", json=body).status_code == 422
    assert keys(client)


def test_demo_mode_under_a_label_policy(client: TestClient, model_dir: Path) -> None:
    ref = plaintext_logits(model_dir, "vit_label", DIGIT)
    r = client.post("/v1/classify/demo", files={"image": ("d.png", DIGIT.read_bytes(), "image/png")}, data={"model": "vit_label"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["class_index"] == int(ref.argmax()) and out["logits"] == [] and out["probabilities"] == []
    assert out["output_policy"] == "label" and out["top_k"] == [out["class_index"]]
