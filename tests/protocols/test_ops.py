"""Each protocol against its math: the ring matmul, batched Beaver products, GeLU, reciprocal, inv_sqrt, layer norm."""

from __future__ import annotations

import math

import pytest
import torch

from mpcvit.prg import new_key
from protocols.local import run_two_party
from tests.protocols.helpers import run_with_dealer
from protocols.ring import LIMB_BITS, ring_matmul, split_limbs


def test_limb_matmul_is_exact_mod_2_64() -> None:
    g = torch.Generator().manual_seed(0)
    for sa, sb in (((65, 256), (256, 768)), ((2, 4, 65, 64), (2, 4, 64, 65)), ((3, 1500), (1500, 7))):
        a = torch.randint(-(2**63), 2**63 - 1, sa, generator=g)
        b = torch.randint(-(2**63), 2**63 - 1, sb, generator=g)
        assert torch.equal(ring_matmul(a, b, "limbs"), torch.matmul(a, b))  # int64 matmul wraps mod 2^64


def test_limbs_reassemble() -> None:
    x = torch.tensor([0, 1, -1, 2**63 - 1, -(2**63), 123456789012345678])
    x0, x1, x2 = split_limbs(x)
    assert bool((x0.abs() <= 2 ** (LIMB_BITS - 1)).all()) and bool((x1.abs() <= 2 ** (LIMB_BITS - 1)).all())
    back = x0.long() + (x1.long() << LIMB_BITS) + (x2.long() << (2 * LIMB_BITS))
    assert torch.equal(back, x)


def _ops_party(rank: int, mode: str, master_key: bytes) -> dict[str, float]:
    """``mode`` "tfp": the ring circuits with CrypTen's TFP; "dealer": the default runtime (DCF sign gates)."""
    from protocols.config import DEFAULT_CONFIG, apply_config
    from protocols.providers import TFPProvider, install_provider

    if mode == "tfp":
        apply_config(DEFAULT_CONFIG.with_(provider="tfp"))
        install_provider(TFPProvider())
        return _ops_program()
    apply_config(DEFAULT_CONFIG.with_(fss_max_values=1000))  # calls on more values fall back to the ring circuit
    return run_with_dealer(rank, master_key, _ops_program)[0]


def _ops_program() -> dict[str, float]:
    from protocols import ops
    from protocols.crypten_compat import crypten

    import crypten.communicator as comm

    crypten.cfg.communicator.verbose = True
    torch.manual_seed(0)
    err: dict[str, float] = {}
    a, b = torch.randn(3, 5, 8), torch.randn(8, 4)
    c, d = torch.randn(6), torch.randn(6)
    ea, eb, ec, ed = (crypten.cryptensor(t, src=0) for t in (a, b, c, d))
    comm.get().reset_communication_stats()
    mm, mu = ops.beaver_products([("matmul", ea, eb), ("mul", ec, ed)])
    err["beaver_rounds"] = comm.get().get_communication_stats()["rounds"]
    err["matmul"] = float((mm.get_plain_text() - a @ b).abs().max())
    # the right operand of a product of two shared tensors is lowered to 2^-(f - lower_bits) first (ops.lower):
    # each of its entries moves by < 2^-12, so the product by < K max|a| 2^-12, plus the truncations' ulps
    err["matmul_bound"] = float(a.shape[-1] * a.abs().max() * 2**-12 + 2**-13)
    err["mul"] = float((mu.get_plain_text() - c * d).abs().max())
    x = torch.linspace(-8, 8, 801)
    err["gelu"] = float((ops.gelu(crypten.cryptensor(x, src=0)).get_plain_text() - torch.nn.functional.gelu(x)).abs().max())
    # the spline's knots and their windows just below, and +-100 (the spline gate holds to |x| <= 122.25)
    xg = torch.cat([x, torch.tensor([-100.0, -5.2, -5.0, -4.0, -3.1, -1e-3, 0.0, 1e-3, 4.0, 5.3, 5.5, 100.0])])
    comm.get().reset_communication_stats()
    exg = crypten.cryptensor(xg, src=0)
    comm.get().reset_communication_stats()
    g = ops.ACTIVATIONS["gelu"](exg)
    err["gelu_configured_rounds"] = comm.get().get_communication_stats()["rounds"]
    g = g.get_plain_text()
    err["gelu_configured"] = float((g - torch.nn.functional.gelu(xg)).abs().max())
    if hasattr(crypten.mpc.get_default_provider(), "dcf_rng"):  # the 4-round fss GeLU holds much further out (fss1)
        xf = torch.cat([x, torch.tensor([-3000.0, -4.0, -1e-3, 0.0, 1e-3, 4.0, 3000.0])])
        comm.get().reset_communication_stats()
        gf = ops.gelu_fss(crypten.cryptensor(xf, src=0))
        err["gelu_fss_rounds"] = comm.get().get_communication_stats()["rounds"]
        err["gelu_fss"] = float((gf.get_plain_text() - torch.nn.functional.gelu(xf)).abs().max())
    v = torch.logspace(-3, 3, 25)
    rec = ops.reciprocal_nr(crypten.cryptensor(v, src=0)).get_plain_text()
    err["reciprocal_rel"] = float((rec * v - 1)[v <= 100].abs().max())  # above, 1/v is a few ulps (2^-16)
    err["reciprocal_abs"] = float((rec - 1 / v)[v > 100].abs().max())
    err["inv_sqrt_rel"] = float((ops.inv_sqrt_nr(crypten.cryptensor(v, src=0)).get_plain_text() * v.sqrt() - 1).abs().max())
    h = torch.randn(2, 9, 32) * 2
    h[0, 0] *= 1e-2  # a nearly constant token
    h[1, 0] *= 10  # var = 400: (4^2) var is near the top of inv_sqrt_range
    comm.get().reset_communication_stats()
    ln = ops.layernorm(crypten.cryptensor(h, src=0), 1e-5)
    err["layernorm_rounds"] = comm.get().get_communication_stats()["rounds"]
    err["layernorm"] = float((ln.get_plain_text() - torch.nn.functional.layer_norm(h, (32,))).abs().max())
    s = torch.randn(2, 3, 9, 9) * 3
    err["softmax"] = float((ops.softmax_rows(crypten.cryptensor(s, src=0)).get_plain_text() - s.softmax(-1)).abs().max())
    r = torch.relu(s)
    want = r / (r.sum(-1, keepdim=True) + 0.01)
    err["relu_rows"] = float((ops.relu_rows(crypten.cryptensor(s, src=0), 0.01).get_plain_text() - want).abs().max())
    q = (s + 5) ** 2
    err["quad_rows"] = float((ops.quad_rows(crypten.cryptensor(s, src=0), 5.0).get_plain_text() - q / q.sum(-1, keepdim=True)).abs().max())
    from protocols.config import current_config

    cap = current_config().fss_max_values
    for n in (900, 1100):  # below and above fss_max_values (1000 in the dealer run)
        r = torch.randn(n)
        comm.get().reset_communication_stats()
        got = ops.relu(crypten.cryptensor(r, src=0))
        err[f"relu_{n}_rounds"] = comm.get().get_communication_stats()["rounds"]
        err[f"relu_{n}"] = float((got.get_plain_text() - r.relu()).abs().max())
    err["cap"] = cap
    e = torch.relu(1 + s / 4) ** 4
    err["thex_rows"] = float((ops.thex_rows(crypten.cryptensor(s, src=0), 4, 0.01).get_plain_text()
                              - e / (e.sum(-1, keepdim=True) + 0.01)).abs().max())
    return err


@pytest.mark.parametrize("mode", ["tfp", "dealer"])
def test_ops_match_their_math(mode: str) -> None:
    err, _ = run_two_party(_ops_party, mode, new_key(), timeout=240)
    assert err["beaver_rounds"] == 1  # a matmul and a mul opened together
    assert err["matmul"] < err["matmul_bound"] and err["mul"] < 1e-3
    assert err["gelu"] < 3e-3  # poly GeLU on [-8, 8]
    assert err["reciprocal_rel"] < 1e-2 and err["inv_sqrt_rel"] < 1e-2
    assert err["reciprocal_abs"] < 1e-4  # a few ulps of 2^-16
    assert err["layernorm"] < 1e-2
    assert err["gelu_configured"] < 3e-3  # also out to +-100 and at the spline's knots and windows
    if mode == "dealer":  # one-round sign gate, linear start, the last Newton step folded into the output
        assert err["layernorm_rounds"] == 5
        assert err["gelu_configured_rounds"] == 2  # the cubic spline: one gate (with x^2 beside it), one product
        assert err["gelu_configured"] < 1.2e-3  # the fit's 8.5e-4 plus x^2's resolution and ulps
        assert err["gelu_fss_rounds"] == 4 and err["gelu_fss"] < 3e-3  # ReLU minus the clamped gap polynomial, +-3000
        assert err["relu_900_rounds"] == 1 and err["relu_1100_rounds"] == 7  # over fss_max_values: the (20, 6) circuit
    else:
        assert err["layernorm_rounds"] == 1 + 7 + 3 + 3
        assert err["gelu_configured_rounds"] == 6
    assert err["relu_900"] < 2e-3 and err["relu_1100"] < 2e-3
    assert err["softmax"] < 1e-2 and err["relu_rows"] < 1e-2 and err["quad_rows"] < 1e-2 and err["thex_rows"] < 1e-2
    assert math.isfinite(sum(err.values()))
