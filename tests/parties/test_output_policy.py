"""Output policies end to end: dealer + party 0 + party 1 as processes (mutual TLS); this test plays the coordinator.

A model whose owner set ``"output_policy": "label"`` in its meta.json answers each client with one sealed share
of the class index per party, and nothing else: the opened index is the plaintext argmax.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
import torch

from mpcvit import sealing
from mpcvit.checkpoint import load_checkpoint, normalise_input
from parties.proto import control_pb2
from tests.parties.test_party import REPO, _both, _deadline, running_pair
from tests.protocols.helpers import digits

pytestmark = pytest.mark.timeout(400)
CHECKPOINT = REPO / "checkpoints" / "digits" / "mpcvit_2_4_8"
POLICIES = {"digits-label": "label", "digits-top3": "topk:3", "digits-logits": None, "digits-bad": "topk:10"}


@pytest.fixture(scope="module")
def cluster(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("policy")
    for name, policy in POLICIES.items():
        shutil.copytree(CHECKPOINT, tmp / "models" / name)
        meta_path = tmp / "models" / name / "meta.json"
        meta = json.loads(meta_path.read_text())
        if policy is not None:
            meta["output_policy"] = policy
        meta_path.write_text(json.dumps(meta))
    model, meta = load_checkpoint(CHECKPOINT)
    with running_pair(certs, tmp / "models", tmp, 1) as (stubs, health):
        yield {"stubs": stubs, "health": health, "model": model, "meta": meta}


def _load(cluster: dict, name: str) -> list:
    request = control_pb2.LoadModelRequest(model=name, session_id=uuid.uuid4().hex, deadline_unix_ms=_deadline(120))
    return _both(cluster["stubs"], "LoadModel", [request, request])


def _infer(cluster: dict, name: str, images: torch.Tensor) -> tuple[list, list]:
    health = cluster["health"]
    items: list[list[control_pb2.InferItem]] = [[], []]
    clients = []
    for image in images:
        client, request_id = sealing.generate_keypair(), uuid.uuid4().hex
        shares = sealing.share_fixed_point(image, 16)
        for rank in (0, 1):
            box = sealing.seal_tensor(shares[rank], client.private, health[rank].public_key,
                                      sealing.BoxContext(request_id, name, rank, "input"))
            items[rank].append(control_pb2.InferItem(
                request_id=request_id, client_public_key=client.public,
                input_share=control_pb2.SealedTensor(shape=list(box.shape), dtype=box.dtype, nonce=box.nonce, ciphertext=box.ciphertext)))
        clients.append((client, request_id))
    session = uuid.uuid4().hex
    requests = [control_pb2.InferRequest(session_id=session, model=name, deadline_unix_ms=_deadline(200), items=items[r]) for r in (0, 1)]
    replies = _both(cluster["stubs"], "Infer", requests, timeout=200)
    assert not any(isinstance(r, grpc.RpcError) for r in replies), replies
    return replies, clients


def _open(cluster: dict, name: str, replies: list, clients: list) -> list[torch.Tensor]:
    out = []
    for i, (client, request_id) in enumerate(clients):
        shares = []
        for rank in (0, 1):
            box = replies[rank].output_shares[i]
            shares.append(sealing.open_tensor(sealing.Sealed(tuple(box.shape), box.dtype, box.nonce, box.ciphertext), client.private,
                                              cluster["health"][rank].public_key, sealing.BoxContext(request_id, name, rank, "output")))
        out.append(shares[0] + shares[1])  # ring integers: the indices
    return out


def _images(n: int) -> torch.Tensor:
    x, _ = digits("test")
    return x[:n]


def test_a_label_model_answers_only_the_sealed_index_of_the_plaintext_argmax(cluster: dict) -> None:
    loaded = _load(cluster, "digits-label")
    assert not any(isinstance(r, grpc.RpcError) for r in loaded), loaded
    assert [r.output_policy for r in loaded] == ["label", "label"]  # party 1 enforces what party 0 announced
    images = _images(56)
    replies, clients = _infer(cluster, "digits-label", images)
    for reply in replies:
        assert reply.output_policy == "label"
        assert {f.name for f, _ in reply.ListFields()} <= {"output_shares", "costs", "precision_bits", "output_policy"}
        assert len(reply.output_shares) == len(images)
        for box in reply.output_shares:  # one ring element: 8 bytes + the 16-byte AES-GCM tag, no logit share
            assert list(box.shape) == [1] and box.dtype == "int64" and len(box.ciphertext) == 8 + 16
        op = {o.op: o for o in reply.costs.ops}["output-label"]
        assert op.rounds == 5 and op.bytes_sent == len(images) * (9 * 8 + 4 * 16)
    got = torch.stack(_open(cluster, "digits-label", replies, clients))[:, 0]
    with torch.no_grad():
        logits = cluster["model"](normalise_input(images, cluster["meta"]))
    top = logits.topk(2, dim=-1).values
    clear = (top[:, 0] - top[:, 1]) > 0.05  # the secure logits are within ~0.02 of these
    assert int(clear.sum()) >= 50
    assert torch.equal(got[clear], logits.argmax(-1)[clear])
    assert bool(((got >= 0) & (got < 10)).all())


def test_a_topk_model_answers_the_ranked_indices(cluster: dict) -> None:
    loaded = _load(cluster, "digits-top3")
    assert [r.output_policy for r in loaded] == ["topk:3", "topk:3"]
    images = _images(16)
    replies, clients = _infer(cluster, "digits-top3", images)
    assert all(list(b.shape) == [3] for r in replies for b in r.output_shares)
    got = torch.stack(_open(cluster, "digits-top3", replies, clients))
    with torch.no_grad():
        logits = cluster["model"](normalise_input(images, cluster["meta"]))
    top = logits.topk(4, dim=-1)
    gaps = top.values[:, :-1] - top.values[:, 1:]  # (B, 3): rank j's lead over rank j + 1
    checked = 0
    for j in range(3):  # rank j is determined where it leads the next one and trails the one before by > 0.05
        clear = (gaps[:, j] > 0.05) & ((gaps[:, j - 1] > 0.05) if j else True)
        assert torch.equal(got[clear, j], top.indices[clear, j]), j
        checked += int(clear.sum())
    assert checked >= 24
    assert sorted(set(got.flatten().tolist())) <= list(range(10)) and all(len(set(r)) == 3 for r in got.tolist())


def test_the_default_stays_logits_and_a_bad_policy_is_refused(cluster: dict) -> None:
    loaded = _load(cluster, "digits-logits")
    assert [r.output_policy for r in loaded] == ["logits", "logits"]
    replies, _ = _infer(cluster, "digits-logits", _images(1))
    assert replies[0].output_policy == "logits" and list(replies[0].output_shares[0].shape) == [10]
    bad = _load(cluster, "digits-bad")  # topk:10 of 10 classes would reveal the whole ranking: party 0 refuses
    assert isinstance(bad[0], grpc.RpcError) and bad[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert isinstance(bad[1], grpc.RpcError)
