"""The small-ring comparison and the lockstep scheduler against their math: signs, ReLU, max, shared rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpcvit.prg import new_key
from protocols import compare
from protocols.local import run_two_party
from tests.protocols.helpers import run_with_dealer


def _compare_party(rank: int, provider: str, master_key: bytes) -> dict:
    from protocols.config import DEFAULT_CONFIG, apply_config
    from protocols.crypten_compat import crypten
    from protocols.providers import TFPProvider, install_provider

    apply_config(DEFAULT_CONFIG)
    crypten.cfg.communicator.verbose = True
    if provider == "tfp":
        install_provider(TFPProvider())
        return _compare_program()
    return run_with_dealer(rank, master_key, _compare_program)[0]


def _compare_program() -> dict:
    from protocols import lockstep, ops
    from protocols.crypten_compat import crypten

    import crypten.communicator as comm

    torch.manual_seed(0)
    out: dict = {"ltz": {}}
    edge = [0.0, 1 / 65536, -1 / 65536, 4.0, -4.0, 2000.0, -2000.0, 32000.0, -32000.0, 0.5]
    x = torch.cat([torch.randn(3000) * 3, torch.randn(3000) * 1000, torch.tensor(edge)]).view(2, -1)
    ex = crypten.cryptensor(x, src=0)
    for k, t in ((16, 12), (32, 0), (32, 4), (12, 8)):
        comm.get().reset_communication_stats()
        bit = compare.ltz(ex, k, t)
        stats = comm.get().get_communication_stats()
        out["ltz"][f"{k},{t}"] = {"bits": bit.get_plain_text().tolist(), "rounds": stats["rounds"],
                                  "words": stats["bytes"] / 16 / x.numel(), "scale": bit.encoder.scale}
    s = torch.randn(2, 3, 9, 13) * 4
    es = crypten.cryptensor(s, src=0)
    comm.get().reset_communication_stats()
    m = compare.max_rows(es, 32, 4)
    out["max_rounds"] = comm.get().get_communication_stats()["rounds"]
    out["max_err"] = float((m.get_plain_text() - s.max(-1, keepdim=True)[0]).abs().max())
    comm.get().reset_communication_stats()
    r = compare.relu(es, 32, 4)
    out["relu_rounds"] = comm.get().get_communication_stats()["rounds"]
    out["relu_err"] = float((r.get_plain_text() - s.relu()).abs().max())
    # bitmul: XOR-shared bits times shared values in one round
    bits = (torch.arange(s.numel()) % 3 == 0).long()
    rank = comm.get().get_rank()
    mask = torch.randint(0, 2, bits.shape, generator=torch.Generator().manual_seed(9))
    own = bits ^ mask if rank == 0 else mask  # XOR shares of bits
    comm.get().reset_communication_stats()
    prod = lockstep.run_one(compare.bitmul_steps(own, es))
    out["bitmul_rounds"] = comm.get().get_communication_stats()["rounds"]
    out["bitmul_err"] = float((prod.get_plain_text() - bits.view(s.shape) * s).abs().max())
    # lockstep: a Beaver product (2 rounds apart) and a comparison share their rounds; results unchanged
    a, b = torch.randn(50), torch.randn(50)
    ea, eb = crypten.cryptensor(a, src=0), crypten.cryptensor(b, src=0)
    comm.get().reset_communication_stats()
    prod, sign = lockstep.run(ops.beaver_steps([("mul", ea, eb)]), compare.ltz_steps(ea, 32, 0))
    out["lockstep_rounds"] = comm.get().get_communication_stats()["rounds"]
    out["lockstep_prod_err"] = float((prod[0].get_plain_text() - a * b).abs().max())
    out["lockstep_sign_ok"] = bool(torch.equal(sign.get_plain_text(), (a < 0).float()))
    comm.get().reset_communication_stats()
    (sq,) = lockstep.run_one(ops.square_steps([ea]))
    out["square_rounds"] = comm.get().get_communication_stats()["rounds"]
    out["square_err"] = float((sq.get_plain_text() - a * a).abs().max())
    out["x"] = x.tolist()
    return out


@pytest.fixture(scope="module", params=["tfp", "dealer"])
def compared(request: pytest.FixtureRequest) -> dict:
    out, _ = run_two_party(_compare_party, request.param, new_key(), timeout=240)
    return out


def test_ltz_is_exact_inside_its_documented_range(compared: dict) -> None:
    x = torch.tensor(compared["x"])
    for key, got in compared["ltz"].items():
        k, t = (int(v) for v in key.split(","))
        bits = torch.tensor(got["bits"])
        assert set(bits.unique().tolist()) <= {0.0, 1.0}, key
        xe = torch.trunc(x.double() * 65536)  # the ring units CrypTen's encoder made
        valid = (xe.abs() <= compare.valid_bound(k, t)) & ((xe < 0) | (xe >= 2**t))
        assert int(valid.sum()) > 500, key
        assert torch.equal(bits[valid], (x[valid] < 0).float()), key
        assert got["rounds"] == compare.rounds(k), key
        assert got["scale"] == 1


def test_ltz_opens_the_documented_words(compared: dict) -> None:
    for key, got in compared["ltz"].items():
        k = int(key.split(",")[0])
        lanes = 64 // k
        levels = compare.levels(k)
        want = (2 + 4 * (levels - 1) + 2) / lanes + 1 / 64
        assert got["words"] == pytest.approx(want, rel=0.02), key


def test_max_and_relu_match_torch(compared: dict) -> None:
    assert compared["max_err"] < 2e-3  # within 2^-12 of the max, plus fixed-point
    assert compared["max_rounds"] == 4 * compare.rounds(32)  # ceil(log2 13) levels, each sign bits + bitmul
    assert compared["relu_rounds"] == compare.rounds(32)
    assert compared["relu_err"] < 2e-3


def test_bitmul_is_one_round(compared: dict) -> None:
    assert compared["bitmul_rounds"] == 1
    assert compared["bitmul_err"] < 1e-4


def test_lockstep_shares_rounds_without_changing_results(compared: dict) -> None:
    assert compared["lockstep_rounds"] == compare.rounds(32)  # the product rides in the comparison's first round
    assert compared["lockstep_prod_err"] < 1e-3
    assert compared["lockstep_sign_ok"]
    assert compared["square_rounds"] == 1 and compared["square_err"] < 1e-3


@pytest.mark.parametrize("bits", [(3, 0), (33, 0), (32, 33), (16, -1)])
def test_bad_rings_are_refused(bits: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="comparison"):
        compare.check_ring(*bits)
    from protocols.config import SecureConfig

    with pytest.raises(ValueError):
        SecureConfig(gelu_compare=bits)


def _crypten_comparison_party(rank: int) -> dict:
    from protocols import ops
    from protocols.config import DEFAULT_CONFIG, apply_config
    from protocols.crypten_compat import crypten
    from protocols.providers import TFPProvider, install_provider

    import crypten.communicator as comm

    install_provider(TFPProvider())
    out = {}
    torch.manual_seed(3)
    x = torch.linspace(-8, 8, 401)
    s = torch.randn(2, 9, 9) * 3
    for mode in ("crypten", "ring"):
        apply_config(DEFAULT_CONFIG.with_(comparison=mode))
        crypten.cfg.communicator.verbose = True
        comm.get().reset_communication_stats()
        g = ops.gelu(crypten.cryptensor(x, src=0))
        rounds = comm.get().get_communication_stats()["rounds"]
        out[mode] = {
            "gelu": float((g.get_plain_text() - torch.nn.functional.gelu(x)).abs().max()),
            "gelu_rounds": rounds,
            "softmax": float((ops.softmax_rows(crypten.cryptensor(s, src=0)).get_plain_text() - s.softmax(-1)).abs().max()),
            "relu": float((ops.relu(crypten.cryptensor(s, src=0)).get_plain_text() - s.relu()).abs().max()),
        }
    apply_config(DEFAULT_CONFIG)
    return out


def test_crypten_comparison_setting_still_matches_the_math() -> None:
    out, _ = run_two_party(_crypten_comparison_party, timeout=240)
    for mode in ("crypten", "ring"):
        assert out[mode]["gelu"] < 3e-3 and out[mode]["softmax"] < 1e-2 and out[mode]["relu"] < 2e-3, mode
    assert out["ring"]["gelu_rounds"] == 6 and out["crypten"]["gelu_rounds"] > out["ring"]["gelu_rounds"]


@pytest.mark.parametrize("k,t", [(4, 0), (4, 2), (5, 3), (6, 4)])
def test_the_exact_domain_of_the_reduced_sign_is_the_valid_bound(k: int, t: int) -> None:
    """Step 1-2's math for every x around both edges and every share s_0 (mod 2^(k+t), all that matters):
    MSB of floor(s_0 / 2^t) + floor(s_1 / 2^t) (mod 2^k) is [x < 0] for ALL s_0 exactly on
    -(2^(k-1+t) - 2^t + 1) <= x < 2^(k-1+t), apart from x in [0, 2^t): the borrow costs (almost) 2^t at the
    negative end, so the symmetric bound is the sign gate's, |x| <= 2^(k-1+t) - 2^t (``valid_bound``)."""
    mod, top, bound = 1 << (k + t), 1 << (k - 1 + t), compare.valid_bound(k, t)
    assert bound == top - (1 << t)
    x = np.arange(-top - (4 << t), top + (4 << t)).astype(object)[:, None]
    s0 = np.arange(mod).astype(object)[None, :]
    y = (s0 // (1 << t) + ((x - s0) % mod) // (1 << t)) % (1 << k)
    right = ((y >> (k - 1)) == (x < 0)).all(axis=1)
    x = x[:, 0]
    near_zero = (x >= 0) & (x < (1 << t))
    assert np.array_equal(right[~near_zero], ((x >= -bound - 1) & (x < top))[~near_zero].astype(bool))
