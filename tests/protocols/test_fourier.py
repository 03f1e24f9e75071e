"""The Fourier GeLU against its math, its material against the dealer's, and the certificate that guards its range.

``ops.gelu_fourier`` is right only for |x| <= 24 (the series of period 64 turns
round past 27); the runtime runs it only on layers whose inputs the owner
certifies below that from the weights (``runtime.certified_gelu_bounds``). The
last test attacks that guard: a model whose first GeLU layer really sees inputs
above 32 must still match the plaintext model, and does not when the guard is
bypassed.
"""

from __future__ import annotations

import math

import pytest
import torch

from mpcvit.prg import PRG, new_key
from protocols import ops
from protocols.local import run_two_party
from protocols.providers import Request, all_corrections
from tests.protocols.helpers import run_with_dealer


def test_frozen_coefficients_are_the_documented_fit() -> None:
    assert ops.gelu_fourier_error() < 5e-4  # the docstring's 4.7e-4 on |x| <= 24
    refit = ops.gelu_fourier_fit(iterations=60)
    assert len(refit) == len(ops.FOURIER_COEFFICIENTS)
    assert ops.gelu_fourier_error(coefficients=refit) < 6e-4  # the fit is reproducible, not a lucky constant
    assert ops.gelu_fourier_error(bound=28.0) < 4e-3  # it degrades past the range ...
    assert ops.gelu_fourier_error(bound=36.0) > 10  # ... and turns round past 32: the guard is needed


def test_trig_material_is_the_table_of_the_shared_mask() -> None:
    """Party 0's correction plus party 1's draws is round(2^f [cos k theta_r; sin k theta_r]) of r = r_0 + r_1."""
    keys = (new_key(), new_key())
    n, k, period, frac, step = 5000, 16, 22, 16, 2
    req = Request("trig", (n,), kwargs=(("frac", frac), ("harmonics", k), ("period", period), ("step", step)))
    corr = all_corrections(keys, [req], (0,))[0][0]
    assert tuple(corr.shape) == (2 * k, n) == req.output_size(0) and req.output_size(1) == (0,)
    g0, g1 = PRG(keys[0]), PRG(keys[1])
    r = g0.ring((n,)) + g1.ring((n,))
    table = corr + g1.ring((2 * k, n))
    theta = (r & ((1 << period) - 1)).double() * 2 * math.pi / 2**period
    j = torch.arange(1, 2 * k, 2, dtype=torch.float64).view(-1, 1)
    want = torch.cat([torch.cos(j * theta), torch.sin(j * theta)]) * 2**frac
    assert (table.double() - want).abs().max() <= 0.5
    for bad in ((("frac", 16), ("harmonics", 0), ("period", 21), ("step", 1)),
                (("frac", 40), ("harmonics", 4), ("period", 21), ("step", 1)),
                (("frac", 16), ("harmonics", 4), ("period", 21), ("step", 3)), (("harmonics", 4), ("period", 21))):
        with pytest.raises(ValueError, match="trig"):
            Request("trig", (n,), kwargs=bad)


def _fourier_party(rank: int, master_key: bytes) -> dict:
    import crypten.communicator as comm
    from crypten.mpc import MPCTensor

    from protocols.config import apply_config

    apply_config()
    x = torch.cat([torch.linspace(-24, 24, 4801), torch.tensor([-24.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 24.0, 36.0, -36.0])])
    enc = torch.round(x * 2**16).long()
    share = enc if rank == 0 else torch.zeros_like(enc)

    def program():  # noqa: ANN202
        comm.get().reset_communication_stats()
        y = ops.gelu_fourier(MPCTensor.from_shares(share, precision=16))
        stats = comm.get().get_communication_stats()
        return y.get_plain_text(), stats["rounds"], stats["bytes"]

    (y, rounds, nbytes), plan = run_with_dealer(rank, master_key, program)
    err = (y.double() - torch.nn.functional.gelu(x.double())).abs()
    return {"err_in": float(err[:-2].max()), "err_13": float(err[:-2][x[:-2].abs() <= 13].max()),
            "rms": float(err[:-2].pow(2).mean().sqrt()), "err_out": float(err[-2:].min()), "rounds": rounds,
            "plan": [(r.kind, r.correction_bytes(rank)) for r in plan], "n": len(x)}


def test_fourier_gelu_matches_gelu_on_its_range_in_two_rounds() -> None:
    res, res1 = run_two_party(_fourier_party, new_key(), timeout=240)
    # the fit's 4.7e-4 plus roundings that depend on the masks (each run draws fresh ones): over 7 runs the
    # largest error was 1.8-2.1e-3 on |x| <= 24 and 0.95-1.1e-3 on |x| <= 13, the RMS 3.9e-4 every time
    assert res["err_in"] < 3e-3 and res["err_13"] < 1.6e-3 and res["rms"] < 5e-4
    assert res["err_out"] > 10  # |x| = 36: the series has turned round (why the runtime certifies the range)
    assert res["rounds"] == 2  # x + r, then the product
    n = res["n"]
    kinds = dict((k, b) for k, b in res["plan"] if k == "trig")
    assert kinds["trig"] == 8 * 32 * n  # 32 words per value, party 0 only
    assert all(b == 0 for k, b in res1["plan"] if k == "trig")
    assert "dcf" not in dict(res["plan"])  # no comparison at all


def _guard_party(rank: int, master_key: bytes, bypass: bool) -> dict:
    from mpcvit.models.registry import create_model
    from mpcvit.prg import derive_key
    from protocols import runtime
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT, certified_gelu_bounds, prepare_weights

    torch.manual_seed(3)
    model = create_model("vit_2_4_8").eval()
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.mul_(120.0)  # layer 0's GeLU inputs reach well past the range
    bounds = certified_gelu_bounds(prepare_weights(model, model.spec), model.spec)
    if bypass:  # an owner that skips the certificate: every GeLU layer on the Fourier GeLU
        runtime.certified_gelu_bounds = lambda plain, spec: {l: 0.0 for l in range(spec.depth)}
    install_provider(DealerProvider(rank))
    secure = SecureViT.share(model if rank == 0 else None, model.spec, None, owner=0,
                             batch_source=InProcessDealer(derive_key(master_key, "model/0")))
    x = torch.rand(4, *model.spec.input_shape, generator=torch.Generator().manual_seed(0))
    enc = torch.round(x * 2**16).long()
    out, _ = secure.forward_shares(enc if rank == 0 else torch.zeros_like(enc))
    seen = []
    hook = model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.abs().max()))
    with torch.no_grad():
        ref = model(x)
    hook.remove()
    return {"share": out.tolist(), "ref": ref.tolist(), "bounds": bounds, "fourier": secure.fourier_layers,
            "max_input": float(seen[0])}


@pytest.mark.parametrize("bypass", [False, True])
def test_a_layer_past_the_range_runs_the_spline_and_stays_right(bypass: bool) -> None:
    r0, r1 = run_two_party(_guard_party, new_key(), bypass, timeout=300)
    assert r0["max_input"] > 34  # the attack: real GeLU inputs beyond the series' range
    assert r0["bounds"][0] >= r0["max_input"] and r0["bounds"][1] * ops.FOURIER_MARGIN <= ops.FOURIER_RANGE
    logits = (torch.tensor(r0["share"]) + torch.tensor(r1["share"])).double() / 2**16
    err = float((logits - torch.tensor(r0["ref"], dtype=torch.float64)).abs().max())
    if bypass:
        assert r0["fourier"] == (0, 1)
        assert err > 0.05  # unguarded, the answer is wrong: the guard is what keeps it right
    else:
        assert r0["fourier"] == r1["fourier"] == (1,)  # the owner's marks, announced to party 1
        assert err < 0.05


def test_the_fourier_gelu_has_its_own_cap_on_values_per_call() -> None:
    """A call over ``fss_max_values`` (the DCF gates' cap) still runs the Fourier GeLU up to ``fourier_max_values``
    (ViT-B/16's 605,184 MLP values per layer), and falls back above it: a shape-only rule, the same on both parties."""
    from protocols.config import DEFAULT_CONFIG, apply_config, current_config
    from protocols.providers import DealerProvider, current_provider, install_provider

    before_provider, before_config = current_provider(), current_config()
    install_provider(DealerProvider(0))
    try:
        apply_config(DEFAULT_CONFIG)
        assert DEFAULT_CONFIG.fss_max_values < 197 * 3072 <= DEFAULT_CONFIG.fourier_max_values
        assert ops.gelu_fourier_fits(torch.empty(197 * 3072))
        assert not ops.gelu_fourier_fits(torch.empty(DEFAULT_CONFIG.fourier_max_values + 1))
        apply_config(DEFAULT_CONFIG.with_(fourier_max_values=100))
        assert ops.gelu_fourier_fits(torch.empty(100)) and not ops.gelu_fourier_fits(torch.empty(101))
        with pytest.raises(ValueError, match="fourier_max_values"):
            DEFAULT_CONFIG.with_(fourier_max_values=-1)
    finally:
        install_provider(before_provider)
        apply_config(before_config)
