"""Sealed boxes open only in their own context: swapped, reflected or re-targeted boxes are refused."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
import torch

from mpcvit.sealing import BoxContext, SealError, generate_keypair, open_tensor, seal_tensor


def test_a_box_opens_only_in_its_own_context() -> None:
    client, p0, p1 = generate_keypair(), generate_keypair(), generate_keypair()
    x = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    ctx = BoxContext("req-1", "vit_2_4_8", 0, "input")
    box = seal_tensor(x, client.private, p0.public, ctx)
    assert torch.equal(open_tensor(box, p0.private, client.public, ctx), x)
    wrong = {
        "swapped to party 1": (p1.private, BoxContext("req-1", "vit_2_4_8", 1, "input")),
        "party 0's key, party 1's slot": (p0.private, BoxContext("req-1", "vit_2_4_8", 1, "input")),
        "another model": (p0.private, BoxContext("req-1", "mpcvit_2_4_8", 0, "input")),
        "another request": (p0.private, BoxContext("req-2", "vit_2_4_8", 0, "input")),
    }
    for name, (private, context) in wrong.items():
        with pytest.raises(SealError, match="does not open"):
            open_tensor(box, private, client.public, context)
            pytest.fail(name)
    with pytest.raises(SealError):  # a tampered public shape
        open_tensor(type(box)((4, 3), box.dtype, box.nonce, box.ciphertext), p0.private, client.public, ctx)


def test_reflected_boxes_are_refused() -> None:
    """An input box handed back to the client as an output, or an output box sent to the party as an input."""
    client, party = generate_keypair(), generate_keypair()
    x = torch.arange(10, dtype=torch.int64)
    inbox = seal_tensor(x, client.private, party.public, BoxContext("r", "m", 0, "input"))
    with pytest.raises(SealError, match="does not open"):
        open_tensor(inbox, client.private, party.public, BoxContext("r", "m", 0, "output"))
    outbox = seal_tensor(x, party.private, client.public, BoxContext("r", "m", 0, "output"))
    with pytest.raises(SealError, match="does not open"):
        open_tensor(outbox, party.private, client.public, BoxContext("r", "m", 0, "input"))
    assert torch.equal(open_tensor(outbox, client.private, party.public, BoxContext("r", "m", 0, "output")), x)


def test_a_party_refuses_replayed_boxes_before_opening_them() -> None:
    from parties.party import Party, PartyError, ReplayGuard

    client, keys = generate_keypair(), generate_keypair()
    party = SimpleNamespace(rank=0, keys=keys, replays=ReplayGuard(window_s=60))
    spec = SimpleNamespace(input_shape=(1, 2, 2))

    def item(request_id: str, client_key=client):
        from parties.proto import control_pb2

        box = seal_tensor(torch.ones(1, 2, 2, dtype=torch.int64), client_key.private, keys.public, BoxContext(request_id, "m", 0, "input"))
        sealed = control_pb2.SealedTensor(shape=list(box.shape), dtype=box.dtype, nonce=box.nonce, ciphertext=box.ciphertext)
        return control_pb2.InferItem(request_id=request_id, client_public_key=client_key.public, input_share=sealed)

    first = item("a")
    x, held = Party._open_inputs(party, [first], "m", spec)  # type: ignore[arg-type]
    assert x.shape == (1, 1, 2, 2)
    with pytest.raises(PartyError, match="running now") as err:  # held by its running forward: not a replay yet
        Party._open_inputs(party, [first], "m", spec)  # type: ignore[arg-type]
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    party.replays.release(held)  # the forward failed: the same box may come again
    x, held = Party._open_inputs(party, [first], "m", spec)  # type: ignore[arg-type]
    party.replays.commit(held)  # answered: from now on a replay
    for name, items in {"same box": [first], "same request id": [item("a", generate_keypair())],
                        "same client key": [item("b")], "repeat inside a batch": [item("c", k := generate_keypair()), item("d", k)]}.items():
        with pytest.raises(PartyError, match="replayed") as err:
            Party._open_inputs(party, items, "m", spec)  # type: ignore[arg-type]
        assert err.value.code == grpc.StatusCode.ALREADY_EXISTS, name
    # a box that does not open is not remembered, and the window forgets
    fresh = generate_keypair()
    with pytest.raises(PartyError, match="does not open"):
        Party._open_inputs(party, [item("e", fresh)], "other-model", spec)  # type: ignore[arg-type]
    party.replays.commit(Party._open_inputs(party, [item("e", fresh)], "m", spec)[1])  # type: ignore[arg-type]
    party.replays.window_s = -1.0
    Party._open_inputs(party, [first], "m", spec)  # type: ignore[arg-type]
