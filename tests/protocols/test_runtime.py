"""The secure forward of every variant matches the plaintext model (logits and top-1) on digits."""

from __future__ import annotations

import pytest
import torch

from mpcvit.models.registry import VARIANTS, create_model
from protocols.config import DEFAULT_CONFIG
from protocols.evaluate import evaluate_private
from protocols.runtime import prepare_weights
from tests.protocols.helpers import NORMALISATION, digits, meta, trained

VARIANT_NAMES = [f"{v}_2_4_8" for v in VARIANTS] + ["mpcvitplus_tokens_2_4_8"]
LOGIT_TOLERANCE = 0.25  # max |secure - plaintext| logit over the digits test set (logits span ~ +-15)


def _model(name: str):  # noqa: ANN202
    if name == "mpcvitplus_tokens_2_4_8":  # MPCViT+ with per-token GeLU: the class token and 4 patches keep it
        base = trained("mpcvitplus_2_4_8")
        m = create_model("mpcvitplus_2_4_8", act=("gelu", "gelu"), act_tokens=((0, 1, 5, 9, 16), None))
        m.load_state_dict(base.state_dict())
        return m.eval()
    return trained(name)


def test_folding_is_exact() -> None:
    """Norm / normalisation / scale folding, head permutation and MLP fusion change no logit (float64)."""
    from protocols.runtime import head_order

    torch.manual_seed(0)
    for name in ("mpcvit_2_4_8", "thex_2_4_8", "mpcvitplus_2_4_8"):
        m = create_model(name).double().eval()
        p = prepare_weights(m, m.spec, meta())
        assert set(p) >= {"embed.w_t", "embed.pos", "head.w_t", "head.b"}
        for l in range(m.spec.depth):
            order, slices = head_order(m.spec, l)
            assert sorted(order) == list(range(m.spec.num_heads))
            assert sum(n for _, _, n in slices) == m.spec.num_heads
        assert ("b1.fused.w_t" in p) == m.spec.mlp_is_linear(1)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_secure_matches_plaintext(name: str) -> None:
    model = _model(name)
    x, y = digits("test")
    # the dealer path (dry-run plan + prefetched corrections) on two models; TFP (same online protocol) on the rest
    provider = "dealer" if name in ("vit_2_4_8", "mpcvitplus_tokens_2_4_8") else "tfp"
    config = DEFAULT_CONFIG.with_(provider=provider)
    result = evaluate_private(model, meta(), x, y, batch_size=len(x), config=config, timeout=500)
    assert result["max_abs_logit_error"] < LOGIT_TOLERANCE, result["max_abs_logit_error"]
    assert result["agreement"] >= 0.99, result["agreement"]
    assert result["plaintext_accuracy"] > (0.5 if "tokens" in name else 0.7)  # the per-token model reuses weights
    assert result["rounds"] == result["per_batch"]["rounds"]  # one forward
    assert result["provider"] == provider and (result["dealer_bytes"] > 0) == (provider == "dealer")
    assert sum(c["rounds"] for c in result["per_op"].values()) == result["rounds"]


FOLDED = ["vit_2_4_8", "mpcvitplus_tokens_2_4_8", "vit_2_4_8-avg", "vit_2_4_8-avg-fc_norm", "thex_2_4_8"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", FOLDED)
def test_secure_folded_matches_plaintext(name: str) -> None:
    """``fold_products``: every LayerNorm and the linear after it (qkv, fc1 or the fused MLP, the head) in 3 rounds.

    ``pool = "avg"`` (the final norm on every token, then the mean: unfolded, the fine start, 3 rounds; or
    ``-fc_norm``: the norm of the mean, folded into the head) uses vit_2_4_8's weights as they are, so only the
    logits are compared. THE-X's affine norm has no LayerNorm: nothing to fold.
    """
    base, _, pool = name.partition("-")
    if pool:
        model = create_model(base, pool="avg", norm_after_pool=pool == "avg-fc_norm")
        model.load_state_dict(trained(base).state_dict())
        model.eval()
    else:
        model = _model(name)
    x, y = digits("test")
    config = DEFAULT_CONFIG.with_(fold_products=True)
    result = evaluate_private(model, meta(), x, y, batch_size=len(x), config=config, timeout=500)
    assert result["max_abs_logit_error"] < LOGIT_TOLERANCE, result["max_abs_logit_error"]
    if not pool:
        assert result["agreement"] >= 0.99, result["agreement"]
    rounds = {k: c["rounds"] for k, c in result["per_op"].items()}
    if model.spec.norm == "layernorm":  # 2 per block and the final one, 3 rounds each (was 5 + the linear's 1)
        final_norm = 3 if pool == "avg" else 0  # the norm of every token before the mean: a lone LayerNorm
        assert rounds["norm"] == 3 * 2 * model.spec.depth + final_norm, rounds
        assert rounds["head"] == (1 if pool == "avg" else 3), rounds  # folded: the final norm with the head
    else:
        assert rounds.get("norm", 0) == 0 and rounds["head"] == 1
    assert sum(c["rounds"] for c in result["per_op"].values()) == result["rounds"]
