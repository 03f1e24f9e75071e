"""The three attacks that broke privacy, mounted again on a party's recorded view: each now fails.

1. Load-time plan: party 1 recomputed party 0's Beaver mask from the dry run's
   public seed (0x5EED) and read the weights off party 0's opening W_0 - b_0.
   (The runtime now opens each weight's mask once, at model load, with b from
   the parties' model keys: the attack is mounted on that opening.)
2. Generator cloning: raw generator words reach the peer (party 0 computes
   b_1 = W_1 - (W_1 - b_1); party 1 receives b_0 unmasked in a comparison's
   first AND); 624 MT19937 outputs give the whole stream, hence the other
   party's input share, the image or the weights.
3. Client mask: the input mask came from torch's default generator with a
   32-bit seed; party 1's share enc(x) - r gives r's top bits and a seed search
   gives the image.

Each attack is checked first against the old randomness (a positive control:
the attack code works), then against the current runtime (it fails).
"""

from __future__ import annotations

import pytest
import torch

from mpcvit.models.registry import create_model, model_spec
from mpcvit.prg import new_key
from mpcvit.sealing import share_fixed_point
from protocols.local import run_two_party
from tests.security import views
from tests.security.mt19937 import predict_words

MODEL = "vit_4_4_28"  # embed weight 16 x 64 = 1,024 words; qkv 64 x 192


@pytest.fixture(scope="module")
def recorded() -> dict:
    """Both parties' views of model load and one inference on a real-looking image (random weights)."""
    spec = model_spec(MODEL)
    image = torch.rand(1, *spec.input_shape, generator=torch.Generator().manual_seed(3))
    key = new_key()
    s0, s1 = share_fixed_point(image, 16)
    r0, r1 = run_two_party(views.load_and_infer, MODEL, key, rank_args=((s0,), (s1,)), timeout=300)
    return {"p0": r0, "p1": r1, "image": image, "key": key, "shares": (s0, s1)}


def _tensor(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.int64)


def _weight_openings(view: list, shape: tuple[int, ...]) -> list[torch.Tensor]:
    return [_tensor(t) for kind, t in view if kind == "sum" and tuple(_tensor(t).shape) == shape]


# -- 1. the load-time plan ----------------------------------------------------------------------
def test_model_load_sends_only_the_masked_weights(recorded: dict) -> None:
    """Sharing the weights is pseudo-random zero sharing and the plan a local dry run; the only messages at load
    are each weight's W_i - b_i (its fixed Beaver mask, opened once) and party 0's one public bit per layer (which
    GeLU the layer runs: ``runtime._fourier_layers``), and no inference opens a weight again."""
    depth = model_spec(MODEL).depth
    for party in ("p0", "p1"):
        view = recorded[party]["load_view"]
        marks = [_tensor(t) for kind, t in view if kind == "broadcast"]
        assert len(marks) == (party == "p1")  # party 1 receives the marks; party 0 receives no broadcast
        for m in marks:
            assert tuple(m.shape) == (depth,) and set(m.tolist()) <= {0, 1}
        shapes = sorted(tuple(_tensor(t).shape) for kind, t in view if kind != "broadcast")
        assert shapes and all(len(s) == 2 for s in shapes)
        weight = tuple(_tensor(recorded["p0"]["weights"]["embed.w_t"]).shape)
        assert weight in shapes and not _weight_openings(recorded[party]["infer_view"], weight)
    assert recorded["p0"]["plan"] == recorded["p1"]["plan"] > 0  # both planned the same requests, each alone


def test_public_seed_mask_no_longer_opens_the_weights(recorded: dict) -> None:
    """Party 1 replays the old public dry-run stream as party 0's mask b_0 on every weight-shaped opening."""
    p0, p1 = recorded["p0"], recorded["p1"]
    truth = _tensor(p0["weights"]["embed.w_t"])
    w1 = _tensor(p1["weight_shares"]["embed.w_t"])
    openings = _weight_openings(p1["load_view"], tuple(truth.shape))
    assert openings, "party 0's opening of the embedding weight is in party 1's view"
    # the old dry run drew a_0 then b_0 from torch.Generator().manual_seed(0x5EED) (CrypTen's randint)
    g = torch.Generator().manual_seed(0x5EED)
    patches = (model_spec(MODEL).grid ** 2, truth.shape[0])
    torch.randint(-(2**63), 2**63 - 1, patches, generator=g)
    guess_b0 = torch.randint(-(2**63), 2**63 - 1, tuple(truth.shape), generator=g)
    for opened in openings:
        recovered = opened + guess_b0 + w1  # W_0 = (W_0 - b_0) + b_0, W = W_0 + W_1
        close = ((recovered - truth).abs() < 4).float().mean().item()
        assert close < 0.01, f"{close:.0%} of the embedding weights recovered from a public-seed mask"


def test_a_dry_run_refuses_to_talk_to_the_peer() -> None:
    from protocols.providers import DealerProvider

    provider = DealerProvider(0)
    with pytest.raises(RuntimeError, match="must not talk to the peer"):
        with provider.recording():
            pass


# -- 2. cloning the generator ----------------------------------------------------------------------
def test_clone_attack_works_on_torch_generator_words() -> None:
    """Positive control: 312 int64 words of torch's MT19937 predict the next ones exactly."""
    words = torch.randint(-(2**63), 2**63 - 1, (512,), generator=torch.Generator().manual_seed(2**40 + 7)).tolist()
    assert predict_words(words, 200) == words[312:]


def test_party0_cannot_clone_party1_stream(recorded: dict) -> None:
    """Party 0 computes b_1 = W_1 - (W_1 - b_1) (it knows W_1 = enc(W) - W_0) and tries to clone party 1's PRG."""
    p0, p1 = recorded["p0"], recorded["p1"]
    for name in ("embed.w_t", "b0.qkv.w_t"):
        enc = _tensor(p0["weights"][name])
        w1 = enc - _tensor(p0["weight_shares"][name])  # party 0's knowledge of party 1's share
        assert torch.equal(w1, _tensor(p1["weight_shares"][name]))
        openings = _weight_openings(p0["load_view"], tuple(enc.shape))
        assert openings
        b1 = (w1 - openings[0]).reshape(-1).tolist()  # raw words of party 1's randomness
        assert len(b1) >= 512
        predicted = predict_words(b1, len(b1) - 312)
        hits = sum(p == w for p, w in zip(predicted, b1[312:]))
        assert hits == 0, f"{hits} of party 1's mask words predicted from {name}'s opening"


def test_embedding_mask_words_are_party1_prg_output(recorded: dict) -> None:
    """The words party 0 computes are exactly party 1's model-key PRG output (so the clone attack above had real input)."""
    from protocols.providers import InProcessDealer, fixed_mask

    p0 = recorded["p0"]
    enc = _tensor(p0["weights"]["embed.w_t"])
    w1 = enc - _tensor(p0["weight_shares"]["embed.w_t"])
    b1 = w1 - _weight_openings(p0["load_view"], tuple(enc.shape))[0]
    key1 = InProcessDealer(recorded["key"]).model_key(1, p0["model_id"])  # party 1's key of this model load
    assert torch.equal(fixed_mask(key1, p0["fixed_index"]["embed.w_t"], tuple(enc.shape)), b1)


def test_no_received_tensor_is_a_clonable_stream(recorded: dict) -> None:
    """Every tensor either party receives (inference view) resists the MT19937 clone at its start."""
    for party in ("p0", "p1"):
        checked = 0
        for _, t in recorded[party]["infer_view"]:
            words = _tensor(t).reshape(-1).tolist()
            if len(words) < 400:
                continue
            assert predict_words(words[:400], 88) != words[312:400]
            checked += 1
        assert checked > 10


def test_inference_still_correct(recorded: dict) -> None:
    torch.manual_seed(0)
    model = create_model(MODEL).eval()
    with torch.no_grad():
        plain = model(recorded["image"])
    logits = (_tensor(recorded["p0"]["logits"]) + _tensor(recorded["p1"]["logits"])).double() / 2**16
    assert (logits - plain).abs().max() < 0.1


# -- 3. the client's mask -------------------------------------------------------------------------------
SEEDS = 1 << 14  # the attack searched 2^32 seeds; the tests search a slice that contains the seed


def _legacy_split(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    enc = torch.round(x.double() * 2**16).long()
    r = torch.randint(-(2**63), 2**63 - 1, enc.shape, dtype=torch.int64)
    return r, enc - r


def _seed_search(share1: torch.Tensor) -> torch.Tensor | None:
    """Party 1's attack: find a torch seed whose first draws make share1 + r a [0, 1] image."""
    flat = share1.reshape(-1)
    for seed in range(SEEDS):
        g = torch.Generator().manual_seed(seed)
        r = torch.randint(-(2**63), 2**63 - 1, (4,), generator=g)
        enc = flat[:4] + r
        if bool(((enc >= 0) & (enc <= 2**16)).all()):
            r_all = torch.randint(-(2**63), 2**63 - 1, share1.shape, generator=torch.Generator().manual_seed(seed))
            return (share1 + r_all).double() / 2**16
    return None


def test_seed_search_recovers_a_legacy_mask() -> None:
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    _, s1 = _legacy_split(image, seed=SEEDS - 3)
    recovered = _seed_search(s1)
    assert recovered is not None and torch.allclose(recovered.float(), image, atol=2**-16)


def test_seed_search_fails_on_the_client_split() -> None:
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(SEEDS - 3)  # the seed the legacy split would have used: now irrelevant
    s0, s1 = share_fixed_point(image, 16)
    assert _seed_search(s1) is None
    torch.manual_seed(SEEDS - 3)
    again, _ = share_fixed_point(image, 16)
    assert not torch.equal(again, s0)  # the mask does not follow torch's seed
