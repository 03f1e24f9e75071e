"""Numeric safety: comparison ranges and the products' truncation (catastrophic-error chance), against the math."""

from __future__ import annotations

import math

import torch

from protocols.local import run_two_party


def _party(rank: int) -> dict:
    from protocols import ops
    from protocols.config import DEFAULT_CONFIG, apply_config
    from protocols.crypten_compat import crypten
    from protocols.probe import Probe, probing
    from protocols.providers import TFPProvider, install_provider

    install_provider(TFPProvider())
    torch.manual_seed(0)
    out: dict = {}
    # GeLU far outside the old 16-bit ring's range (|x| < 2048 with 12 dropped bits): the range test is right
    x = torch.tensor([3000.0, -3000.0, 8000.0, -8000.0, 5.0, -5.0, 3.9, -3.9, 0.3, 100.0])
    want = torch.nn.functional.gelu(x)
    out["gelu_far"] = (ops.gelu(crypten.cryptensor(x, src=0)).get_plain_text() - want).abs().tolist()
    apply_config(DEFAULT_CONFIG.with_(gelu_compare=(16, 12)))
    out["gelu_far_old"] = ops.gelu(crypten.cryptensor(x, src=0)).get_plain_text().tolist()
    apply_config(DEFAULT_CONFIG)
    # lowered products: the same values as plaintext, and the probe sees products 2^lower_bits smaller
    a, w = torch.randn(2, 7, 64) * 3, torch.randn(64, 48) * 0.1
    h = torch.randn(2, 9, 64) * 5
    s = torch.randn(2, 4, 9, 9) * 3
    results = {}
    for name, cfg in (("after", DEFAULT_CONFIG), ("before", DEFAULT_CONFIG.with_(lower_bits=0, exp_offsets=False))):
        apply_config(cfg)
        probe = Probe()
        with probing(probe):
            lin = ops.linear(crypten.cryptensor(a, src=0), crypten.cryptensor(w, src=0), None).get_plain_text()
            ln = ops.layernorm(crypten.cryptensor(h, src=0), 1e-5).get_plain_text()
            sm = ops.softmax_rows(crypten.cryptensor(s, src=0)).get_plain_text()
            ex = ops.exp_nonpositive(crypten.cryptensor(-s.abs(), src=0)).get_plain_text()
        results[name] = {
            "linear": float((lin - a @ w).abs().max()),
            "layernorm": float((ln - torch.nn.functional.layer_norm(h, (64,))).abs().max()),
            "softmax": float((sm - s.softmax(-1)).abs().max()),
            "exp": float((ex - (-s.abs()).exp()).abs().max()),
            "expected": sum(v.expected_failures for v in probe.truncations.values()),
        }
    apply_config(DEFAULT_CONFIG)
    out["products"] = results
    return out


def test_gelu_far_out_and_lowered_products_match_plaintext() -> None:
    out, _ = run_two_party(_party, timeout=240)
    assert max(out["gelu_far"]) < 3e-3  # (16, 14): valid for |x| <= 8192 - 2^-2
    old = out["gelu_far_old"]
    assert abs(old[0] - 3000.0) > 100  # the old (16, 12) ring wraps at 2048: gelu(3000) came out 0
    after, before = out["products"]["after"], out["products"]["before"]
    # exp: a 1-ulp truncation error of 1 + x / 256 grows 256-fold over the 8 squarings (up to ~4e-3 near x = 0)
    for key, tol in (("linear", 2e-3), ("layernorm", 2e-3), ("softmax", 5e-3), ("exp", 8e-3)):
        assert after[key] < tol, (key, after[key])
        assert before[key] < tol, (key, before[key])
    assert after["expected"] < before["expected"] / 8  # the truncated products are far smaller


def _lower_party(rank: int) -> list[float]:
    from protocols import ops
    from protocols.crypten_compat import crypten

    import crypten.communicator as comm

    crypten.cfg.communicator.verbose = True
    x = torch.tensor([1.5, -2.25, 1000.0, -0.001, 0.0])
    ex = crypten.cryptensor(x, src=0)
    comm.get().reset_communication_stats()
    low = ops.lower(ex, 4)
    assert comm.get().get_communication_stats()["rounds"] == 0
    assert low.encoder.scale == 2**12
    return (low.get_plain_text() - x).abs().tolist()


def test_lower_is_a_local_truncation() -> None:
    errs, _ = run_two_party(_lower_party, timeout=120)
    assert max(errs) <= 2 * 2.0**-12 + 1e-9
    assert math.isfinite(sum(errs))


def _wrap_party(rank: int) -> dict:
    from protocols import ops
    from protocols.config import DEFAULT_CONFIG, apply_config
    from protocols.crypten_compat import crypten
    from protocols.probe import Probe, probing
    from protocols.providers import TFPProvider, install_provider

    install_provider(TFPProvider())
    apply_config(DEFAULT_CONFIG.with_(lower_bits=0))
    n = 32000
    x = torch.full((n,), 2.0**13)
    probe = Probe()
    with probing(probe):
        (z,) = ops.beaver_products([("mul", crypten.cryptensor(x, src=0), crypten.cryptensor(x, src=0))])
    wrong = int(((z.get_plain_text().double() - 2.0**26).abs() > 1.0).sum())
    apply_config(DEFAULT_CONFIG)
    (site,) = probe.truncations.values()
    return {"wrong": wrong, "wraps": site.wraps, "expected": site.expected_failures, "n": n}


def test_truncation_fails_at_the_predicted_rate() -> None:
    """x y = 2^26 at scale 2^32 is z = 2^58: the shares wrap with probability 2^58 / 2^64 = 1/64."""
    out, _ = run_two_party(_wrap_party, timeout=120)
    assert abs(out["expected"] - out["n"] / 64) < 1e-6 * out["n"]
    assert out["wrong"] == out["wraps"]  # every wrap is a catastrophic error, and only those
    assert 0.8 * out["expected"] < out["wraps"] < 1.2 * out["expected"]  # 500 expected: +-20 % is > 4 sigma


def _range_probe_party(rank: int, master_key: bytes) -> dict:
    from protocols import compare, sign
    from protocols.config import DEFAULT_CONFIG, apply_config
    from protocols.crypten_compat import crypten
    from protocols.planning import is_offline
    from protocols.probe import Probe, probing
    from tests.protocols.helpers import run_with_dealer

    apply_config(DEFAULT_CONFIG)
    probe = Probe()
    # ring units: inside / at / just past the corrected bound 2^(k-1+t) - 2^t of (20, 6), and past 2^(k-1+t) itself
    top, bound = 2**25, sign.valid_bound(20, 6)
    x = torch.tensor([0, 5, -5, bound, -bound, bound + 1, top - 1, -top - 1, 3 * top], dtype=torch.float64) / 65536

    def program() -> None:
        ex = crypten.cryptensor(x, src=0)
        if is_offline():  # the dry run records the randomness plan; the probe opens values, so only the real run
            sign.ltz(ex, 20, 6)
            compare.ltz(ex, 20, 6)
            return
        with probing(probe):
            sign.ltz(ex, 20, 6)
            compare.ltz(ex, 20, 6)

    run_with_dealer(rank, master_key, program)
    return {k: v.to_dict() for k, v in probe.compares.items()}


def test_the_probe_sees_both_sign_tests_against_the_corrected_bound() -> None:
    """The probe records the one-round sign gate's inputs as well as the circuit's, and counts as out of range
    what lies past 2^(k-1+t) - 2^t (4 of these 9 values), not only what lies past 2^(k-1+t)."""
    from mpcvit.prg import new_key

    out, _ = run_two_party(_range_probe_party, new_key(), timeout=120)
    gate = [v for k, v in out.items() if k.endswith("[gate]")]
    circuit = [v for k, v in out.items() if not k.endswith("[gate]")]
    assert len(gate) == 1 and len(circuit) == 1, out
    for site in gate + circuit:
        assert site["values"] == 9 and site["ring"] == [20, 6]
        assert site["bound"] == (2**25 - 2**6) / 65536  # 512 - 2^-10 real units
        assert site["out_of_range"] == 4  # bound + 1, top - 1, -top - 1, 3 top


def _spline_probe_party(rank: int, master_key: bytes) -> dict:
    from protocols import ops
    from protocols.config import DEFAULT_CONFIG, apply_config
    from protocols.crypten_compat import crypten
    from protocols.planning import is_offline
    from protocols.probe import Probe, probing
    from tests.protocols.helpers import run_with_dealer

    apply_config(DEFAULT_CONFIG)
    probe = Probe()
    x = torch.linspace(-6, 6, 200)

    def program() -> None:
        ex = crypten.cryptensor(x, src=0)
        if is_offline():  # the probe opens values: the real run only
            ops.gelu_spline(ex)
            return
        with probing(probe):
            ops.gelu_spline(ex)

    run_with_dealer(rank, master_key, program)
    return {k: v.to_dict() for k, v in probe.truncations.items()}


def test_the_probe_sees_the_splines_own_truncations() -> None:
    """The spline scales shares itself (``ops.truncate_shares``): those sites are measured, not only the products'."""
    from mpcvit.prg import new_key

    sites, _ = run_two_party(_spline_probe_party, new_key(), timeout=120)
    own = {k: v for k, v in sites.items() if k.startswith("gelu_spline:")}
    assert len(own) >= 4  # x lowered for x^2, the slope terms, sum m_j x e_j, the cubic terms (and the product)
    assert all(v["elements"] == 200 and v["wraps"] == 0 for v in own.values())
    # the coarse grids: sum m_j x e_j is truncated from 2^(f + 4), the slope terms from 2^(f + 14)
    assert {v["divisor"] for v in own.values()} >= {2**4, 2**14}
