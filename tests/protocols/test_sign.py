"""The DCF and the one-round sign gates against their math: every point of small domains, the edges, rounds and bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpcvit.prg import PRG, new_key
from protocols import dcf, sign
from protocols.local import run_two_party
from tests.protocols.helpers import run_with_dealer


def _seeds(g: PRG, n: int) -> np.ndarray:
    return g.ring((n, 2)).numpy().view(np.uint64)


@pytest.mark.parametrize("bits,payload", [(1, 1), (4, 1), (6, 2), (31, 2)])
def test_dcf_shares_the_comparison_at_every_point(bits: int, payload: int) -> None:
    g = PRG(new_key())
    n = 64
    alpha = g.ring((n,)).numpy().view(np.uint64) & np.uint64((1 << bits) - 1)
    alpha[:2] = [0, (1 << bits) - 1]  # the edges of the domain
    beta = g.ring((n, payload)).numpy().view(np.uint64)
    s0, s1 = _seeds(g, n), _seeds(g, n)
    words = dcf.keygen(alpha, beta, bits, s0, s1)
    assert words.shape == (dcf.key_words(bits, payload), n)
    k0, k1 = dcf.unpack(s0, words, bits, payload), dcf.unpack(s1, words, bits, payload)
    if bits <= 6:  # every point of the domain
        points = np.tile(np.arange(1 << bits, dtype=np.uint64)[:, None], (1, n))
    else:
        near = [alpha - np.uint64(1), alpha, alpha + np.uint64(1)]
        points = np.stack([p & np.uint64((1 << bits) - 1) for p in near] + [g.ring((n,)).numpy().view(np.uint64) >> np.uint64(64 - bits)])
    got = dcf.evaluate(0, k0, points) + dcf.evaluate(1, k1, points)
    want = beta[None] * (points < alpha[None]).astype(np.uint64)[..., None]
    assert np.array_equal(got, want)


def test_a_single_key_looks_random() -> None:
    """One party's correction words are the same whatever alpha is: their bits are balanced for alpha = 0 and max."""
    g = PRG(new_key())
    n, bits = 4000, 16
    for a in (0, (1 << bits) - 1):
        words = dcf.keygen(np.full(n, a, dtype=np.uint64), np.ones((n, 1), dtype=np.uint64), bits, _seeds(g, n), _seeds(g, n))
        seeds = np.ascontiguousarray(words[: bits * 3].reshape(bits, 3, n)[:, :2])  # the seed corrections
        ones = np.unpackbits(seeds.view(np.uint8)).mean()
        assert abs(ones - 0.5) < 0.01, (a, ones)


def test_bad_dcf_parameters_are_refused() -> None:
    g = PRG(new_key())
    with pytest.raises(ValueError, match="bits"):
        dcf.keygen(np.zeros(2, dtype=np.uint64), np.ones((2, 1), dtype=np.uint64), 40, _seeds(g, 2), _seeds(g, 2))
    with pytest.raises(ValueError, match="words"):
        dcf.unpack(_seeds(g, 2), np.zeros((5, 2), dtype=np.uint64), 4, 1)
    with pytest.raises(ValueError, match="ring_bits"):
        sign.check_ring(40, 0)


def _sign_party(rank: int, master_key: bytes) -> dict:
    from protocols.config import DEFAULT_CONFIG, apply_config

    apply_config(DEFAULT_CONFIG)
    out, plan = run_with_dealer(rank, master_key, _sign_program)
    out["plan_kinds"] = sorted({r.kind for r in plan})
    return out


def _sign_program() -> dict:
    from protocols.crypten_compat import crypten

    import crypten.communicator as comm

    torch.manual_seed(0)
    out: dict = {}
    edge = [0.0, 1 / 65536, -1 / 65536, -2 / 65536, 3.0, 4.0, -4.0, 2000.0, -2000.0, 32000.0, -32000.0, 0.5]
    x = torch.cat([torch.randn(3000) * 3, torch.randn(3000) * 1000, torch.tensor(edge)]).view(2, -1)
    ex = crypten.cryptensor(x, src=0)
    out["x"] = x.tolist()
    for k, t in ((16, 12), (32, 0), (32, 4), (24, 8)):
        comm.get().reset_communication_stats()
        bit = sign.ltz(ex, k, t)
        stats = comm.get().get_communication_stats()
        out[f"ltz {k},{t}"] = {"bits": bit.get_plain_text().tolist(), "rounds": stats["rounds"],
                               "bytes": stats["bytes"] / x.numel()}
    s = torch.randn(2, 3, 9, 13) * 4
    es = crypten.cryptensor(s, src=0)
    comm.get().reset_communication_stats()
    m = sign.max_rows(es, 32, 4)
    out["max_rounds"] = comm.get().get_communication_stats()["rounds"]
    out["max_err"] = float((m.get_plain_text() - s.max(-1, keepdim=True)[0]).abs().max())
    comm.get().reset_communication_stats()
    r = sign.relu(es, 32, 4)
    out["relu_rounds"] = comm.get().get_communication_stats()["rounds"]
    out["relu_err"] = float((r.get_plain_text() - s.relu()).abs().max())
    v = torch.rand(500) * 100
    ev = crypten.cryptensor(v, src=0)
    thresholds = [0.5, 1.0, 10.0, 50.0, 99.0]
    comm.get().reset_communication_stats()
    ge, ge_x = sign.above(ev, thresholds, 32, 2, product=True)
    out["above_rounds"] = comm.get().get_communication_stats()["rounds"]
    rank = comm.get().get_rank()
    both = [comm.get().all_reduce(t) for t in (ge, ge_x)]
    out["above_bits"] = both[0].tolist()
    out["above_prod"] = (both[1].double() / 65536).tolist()
    out["above_want"] = [(v >= t).double().tolist() for t in thresholds]
    out["v"] = v.tolist()
    del rank
    return out


@pytest.fixture(scope="module")
def signed() -> dict:
    out, _ = run_two_party(_sign_party, new_key(), timeout=240)
    return out


def test_one_round_ltz_is_exact_inside_its_documented_range(signed: dict) -> None:
    x = torch.tensor(signed["x"])
    for k, t in ((16, 12), (32, 0), (32, 4), (24, 8)):
        got = signed[f"ltz {k},{t}"]
        bits = torch.tensor(got["bits"])
        assert set(bits.unique().tolist()) <= {0.0, 1.0}
        xe = torch.trunc(x.double() * 65536)  # the ring units CrypTen's encoder made
        valid = (xe.abs() <= sign.valid_bound(k, t)) & ((xe >= 0) | (xe < -(2**t)))
        assert int(valid.sum()) > 500
        assert torch.equal(bits[valid], (x[valid] < 0).float()), (k, t)
        assert got["rounds"] == 1
        assert got["bytes"] / 16 == 1  # one 64-bit word per value and party (the counter adds sent and received)


def test_one_round_max_and_relu_match_torch(signed: dict) -> None:
    assert signed["relu_rounds"] == 1 and signed["relu_err"] < 2e-3
    assert signed["max_rounds"] == 4 and signed["max_err"] < 2e-3  # ceil(log2 13) levels, one round each
    assert signed["plan_kinds"] == ["dcf"]


def test_many_thresholds_share_one_opening(signed: dict) -> None:
    assert signed["above_rounds"] == 1
    v = torch.tensor(signed["v"], dtype=torch.float64)
    bits = torch.tensor(signed["above_bits"], dtype=torch.float64)
    want = torch.tensor(signed["above_want"], dtype=torch.float64)
    far = torch.stack([(v - t).abs() > 1e-3 for t in (0.5, 1.0, 10.0, 50.0, 99.0)])
    assert torch.equal(bits[far], want[far])
    prod = torch.tensor(signed["above_prod"], dtype=torch.float64)
    assert torch.allclose(prod[far], (want * v)[far], atol=1e-3)


def test_dcf_in_threads_makes_and_evaluates_the_same_keys(monkeypatch) -> None:  # noqa: ANN001
    """Key generation and evaluation split over threads give exactly what one thread gives."""
    import numpy as np

    from protocols import dcf

    rng = np.random.default_rng(5)
    n, bits = 1000, 12
    alpha = rng.integers(0, 2**bits, n, dtype=np.uint64)
    beta = rng.integers(0, 2**63, (n, 2), dtype=np.uint64)
    s0, s1 = (rng.integers(0, 2**63, (n, 2), dtype=np.uint64) for _ in range(2))
    x = rng.integers(0, 2**bits, (3, n), dtype=np.uint64)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("MPCVIT_DCF_THREADS", threads)
        monkeypatch.setattr(dcf, "MIN_CHUNK", 100)
        words = dcf.keygen(alpha, beta, bits, s0, s1)
        results.append((words, dcf.evaluate(0, dcf.unpack(s0, words, bits, 2), x), dcf.evaluate(1, dcf.unpack(s1, words, bits, 2), x)))
    for one, many in zip(*results):
        assert np.array_equal(one, many)
    _, e0, e1 = results[1]
    assert np.array_equal(e0 + e1, (x < alpha[None]).astype(np.uint64)[..., None] * beta[None])


# -- the gate's valid range: |x - d| <= 2^(n-1+t) - 2^t, not 2^(n-1+t) ---------------------------------
def _model_bits(z: np.ndarray, r_low: np.ndarray, n: int, t: int) -> np.ndarray:
    """MSB of y = floor(c_d / 2^t) - floor(r / 2^t) (mod 2^n), c_d = z + r: what the gate opens, per z (rows) and r."""
    z, r = z[:, None].astype(object), r_low[None, :].astype(object)
    y = ((z + r) // (1 << t) - r // (1 << t)) % (1 << n)
    return (y >> (n - 1)).astype(np.int64)


@pytest.mark.parametrize("n,t", [(4, 0), (4, 2), (5, 3), (6, 4)])
def test_the_exact_domain_of_the_gate_math_is_the_valid_bound(n: int, t: int) -> None:
    """Every z around both edges, every low part of r: the bit is [z < 0] for ALL r exactly on
    -2^(n-1+t) <= z <= 2^(n-1+t) - 2^t, apart from z in [-2^t, 0) (the documented error next to 0)."""
    top, bound = 1 << (n - 1 + t), sign.valid_bound(n, t)
    assert bound == top - (1 << t)
    z = np.arange(-top - (4 << t), top + (4 << t))
    r = np.arange(1 << (n + t))  # y depends on r mod 2^(n+t) only
    right = (_model_bits(z, r, n, t) == (z < 0)[:, None]).all(axis=1)
    near_zero = (z >= -(1 << t)) & (z < 0)
    assert np.array_equal(right[~near_zero], ((z >= -top) & (z <= bound))[~near_zero])
    if t:  # above the bound the carry out of the dropped bits flips the bit with probability (z mod 2^t) / 2^t
        old = (z > bound) & (z < top)
        rate = (_model_bits(z[old], r, n, t) == 1).mean(axis=1)
        assert np.allclose(rate, (z[old] % (1 << t)) / (1 << t))


def _edge_party(rank: int, master_key: bytes, rings: list) -> dict:
    from protocols.config import DEFAULT_CONFIG, apply_config

    apply_config(DEFAULT_CONFIG)

    def program() -> dict:
        import crypten.communicator as comm
        from crypten.mpc import MPCTensor

        from protocols.lockstep import run_one

        out = {}
        for n, t, values, shifts in rings:
            v = torch.tensor(values, dtype=torch.int64)  # ring units; party 1's share is 0 (the mask r hides nothing here)
            x = MPCTensor.from_shares(v if rank == 0 else torch.zeros_like(v), precision=16)
            bits, prods = run_one(sign.sign_steps(x, shifts, n, t, product=True))
            out[f"{n},{t}"] = (comm.get().all_reduce(bits).tolist(), comm.get().all_reduce(prods).tolist())
        return out

    out, _ = run_with_dealer(rank, master_key, program)
    return out


# (n, t): the rings of the runtime (ReLU / max (20, 6), the fss GeLU (24, 6), the Newton starts (32, 2)), a small
# one where the old top region is a large part of the range, and t = 0 (no carry, the bound is 2^(n-1) - 1)
EDGE_RINGS = [(20, 6), (24, 6), (32, 2), (8, 4), (12, 0)]
COPIES = 48  # each value this many times: a fresh mask r each, so the carry out of the dropped bits varies


def _edge_values(n: int, t: int, d: int, g: np.random.Generator) -> tuple[list[int], list[int]]:
    """Values x - d inside the corrected range (edges included), and in the old region (bound, 2^(n-1+t))."""
    top, bound = 1 << (n - 1 + t), sign.valid_bound(n, t)
    inside = [bound, bound - 1, bound - (1 << t) + 1, -bound, -bound - 1, -top, -top + 1, 0, 1, 1 << t,
              -(1 << t) - 1, -(2 << t), top // 2, -top // 2]
    inside += g.integers(-top, bound + 1, 64).tolist()
    old = [top - 1] * 8 + g.integers(bound + 1, top, 48).tolist() if t else []
    return [d + z for z in inside for _ in range(COPIES)], [d + z for z in old for _ in range(COPIES)]


def test_one_round_gate_is_exact_up_to_the_corrected_bound_and_not_above() -> None:
    """The real gate (dealer keys, two parties): exact for every x - d in [-2^(n-1+t), 2^(n-1+t) - 2^t] outside
    [-2^t, 0), for the shift 0 and a nonzero one, and x [x < d] too; in (2^(n-1+t) - 2^t, 2^(n-1+t)), the range the
    docstrings claimed before, the bit is wrong for about half the values (so the stated bound may not drift back)."""
    g = np.random.default_rng(11)
    rings, cases = [], []
    for n, t in EDGE_RINGS:
        d = (1 << (n - 2 + t)) + 3  # a shift: the bound is on x - d
        per_shift = [_edge_values(n, t, shift, g) for shift in (0, d)]
        # one tensor per ring: every shift's values, each evaluated at both shifts (only its own shift is checked)
        values = [v for inside, old in per_shift for v in inside + old]
        rings.append((n, t, values, [0, d]))
        cases.append((n, t, d, per_shift))
    out, _ = run_two_party(_edge_party, new_key(), rings, timeout=240)
    for (n, t, d, per_shift), (_, _, values, shifts) in zip(cases, rings):
        bits, prods = (torch.tensor(a) for a in out[f"{n},{t}"])
        x = torch.tensor(values, dtype=torch.int64)
        start = 0
        for j, (inside, old) in enumerate(per_shift):
            ni, no = len(inside), len(old)
            xi, bi, pi = x[start : start + ni], bits[j, start : start + ni], prods[j, start : start + ni]
            want = (xi < shifts[j]).long()
            assert torch.equal(bi, want), (n, t, shifts[j], xi[bi != want][:5].tolist())
            assert torch.equal(pi, xi * want), (n, t, shifts[j])  # x [x < d], exact in ring units
            if no:
                wrong = float((bits[j, start + ni : start + ni + no] == 1).double().mean())  # x - d > 0: want 0
                assert 0.25 < wrong < 0.75, (n, t, wrong)
            start += ni + no


@pytest.mark.parametrize("bits", [1, 5, 6, 7, 12])
def test_one_bit_dcf_shares_the_comparison_at_every_point(bits: int) -> None:
    """``dcf.keygen_bit``'s keys: XOR shares of [x < alpha] at every point of the domain (the tree stops 6 levels
    early: 2 (L - 6) + 3 words a key)."""
    g = PRG(new_key())
    n = 100
    alpha = g.ring((n,)).numpy().view(np.uint64) & np.uint64((1 << bits) - 1)
    alpha[:2] = [0, (1 << bits) - 1]
    s0, s1 = _seeds(g, n), _seeds(g, n)
    words = dcf.keygen_bit(alpha, bits, s0, s1)
    assert words.shape == (dcf.key_words(bits, dcf.BIT_PAYLOAD), n) == (2 * max(bits - 6, 0) + 3, n)
    points = np.tile(np.arange(1 << bits, dtype=np.uint64)[:, None], (1, n))
    got = dcf.evaluate_bit(0, s0, words, bits, points) ^ dcf.evaluate_bit(1, s1, words, bits, points)
    assert np.array_equal(got, (points < alpha[None]).astype(np.uint64))
    with pytest.raises(ValueError, match="words"):
        dcf.evaluate_bit(0, s0, words[1:], bits, points)
    with pytest.raises(ValueError, match="bits"):
        dcf.keygen_bit(alpha, dcf.MAX_BITS + 1, s0, s1)


def test_a_single_one_bit_key_looks_random() -> None:
    """A one-bit key's correction words look the same whatever alpha is: balanced seed and output bits."""
    g = PRG(new_key())
    n, bits = 4000, 16
    for a in (0, (1 << bits) - 1):
        words = dcf.keygen_bit(np.full(n, a, dtype=np.uint64), bits, _seeds(g, n), _seeds(g, n))
        levels = bits - 6
        seed_ones = np.unpackbits(np.ascontiguousarray(words[: 2 * levels]).view(np.uint8)).mean()
        out_ones = np.mean([(words[2 * levels + 1] >> np.uint64(i)) & np.uint64(1) for i in range(levels)])
        leaf_ones = np.unpackbits(np.ascontiguousarray(words[2 * levels + 2]).view(np.uint8)).mean()
        assert abs(seed_ones - 0.5) < 0.01 and abs(out_ones - 0.5) < 0.02 and abs(leaf_ones - 0.5) < 0.01, (a, seed_ones, out_ones)


def _select_program() -> dict:
    from protocols.crypten_compat import crypten

    import crypten.communicator as comm

    x = torch.cat([torch.randn(4000) * 3, torch.randn(2000) * 100,
                   torch.tensor([0.0, 1 / 65536, -1 / 65536, -2 / 65536, 511.0, -511.0, 2.0**-10, -(2.0**-10) - 2**-16])])
    ex = crypten.cryptensor(x.view(2, -1), src=0)
    comm.get().reset_communication_stats()
    y = sign.relu_select(ex, 20, 6)
    stats = comm.get().get_communication_stats()
    return {"x": x.tolist(), "y": y.get_plain_text().reshape(-1).tolist(), "rounds": stats["rounds"], "bytes": stats["bytes"]}


def _select_party(rank: int, master_key: bytes) -> dict:
    from protocols.config import DEFAULT_CONFIG, apply_config

    apply_config(DEFAULT_CONFIG)
    out, plan = run_with_dealer(rank, master_key, _select_program)
    out["material"] = [(r.kind, r.dcf_params, r.correction_bytes(rank)) for r in plan]
    return out


def test_select_relu_matches_torch_in_two_rounds_with_half_the_material() -> None:
    r0, r1 = run_two_party(_select_party, new_key(), timeout=240)
    x, y = torch.tensor(r0["x"]), torch.tensor(r0["y"])
    err = (y - x.relu()).abs()
    window = (x < 0) & (x >= -(2.0**-10))  # the (20, 6) gate's window below 0: x instead of 0 at worst
    assert float(err[~window].max()) < 2e-5 and float(err[window].max()) <= 2.0**-10
    assert r0["rounds"] == 2
    n = len(r0["x"])
    assert r0["bytes"] == 2 * (8 * n + 8 * -(-n // 64))  # x + r, then one bit a value packed 64 per word (the counter: both ways)
    (kind, params, b0), = r0["material"]
    (_, _, b1), = r1["material"]
    assert kind == "dcf" and params == (20, 6, 0)
    assert b0 == 8 * n * (2 * 13 + 6) and b1 == 8 * n * (2 * 13 + 3)  # one-round gate: 81 and 79 words a value


def _select_opening_program() -> dict:
    """The select ReLU driven by hand, keeping what both parties learn in its second round: e = b xor rho."""
    from protocols.compare import unpack_bits
    from protocols.crypten_compat import crypten
    from protocols.lockstep import open_all

    x = torch.randn(8000) * 3  # about half negative: b = [x < 0] is far from constant
    steps = sign.relu_select_steps(crypten.cryptensor(x, src=0), 20, 6)
    second = open_all(steps.send(open_all(steps.send(None))))
    with pytest.raises(StopIteration):
        steps.send(second)
    return {"negative": (x < 0).tolist(), "e": unpack_bits(second[0], x.numel()).tolist()}


def _select_opening_party(rank: int, master_key: bytes) -> dict:
    from protocols.config import DEFAULT_CONFIG, apply_config

    apply_config(DEFAULT_CONFIG)
    return run_with_dealer(rank, master_key, _select_opening_program)[0]


def test_the_select_round_opens_nothing_about_the_sign() -> None:
    """The attack: both parties see e, the select round's opening. Were it b = [x < 0] itself (the dealer's rho
    left out), e would match the sign of every x; with rho it is a fair coin, unrelated to the sign."""
    r0, r1 = run_two_party(_select_opening_party, new_key(), timeout=240)
    assert r0["e"] == r1["e"]  # one public opening
    e, negative = torch.tensor(r0["e"]), torch.tensor(r0["negative"], dtype=torch.int64)
    n = e.numel()
    sigma = (0.25 / n) ** 0.5
    assert abs(float(e.double().mean()) - 0.5) < 6 * sigma  # balanced
    assert abs(float((e == negative).double().mean()) - 0.5) < 6 * sigma  # independent of the sign
