"""The vectorised DCF against a plain, one-value-at-a-time reading of the construction: bit-identical keys and shares.

The reference below follows the module docstring of ``protocols.dcf`` (the DCF
of Boyle et al. 2021, section 3) with Python integers, one AES block at a
time: both parties walk alpha's path, the correction word of each level is
the xor of the lost children, the output correction makes the path's sum
beta where x leaves it to the left, and the control-bit corrections keep the
parties' bits different on the path. Blocks and the number of values per
thread are made small so that the block edges and a short last block are
crossed.
"""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols import dcf

MOD = 1 << 64
_ENC = Cipher(algorithms.AES(dcf._AES_KEY), modes.ECB()).encryptor()


def _h(seed: tuple[int, int], tweak: int) -> tuple[int, int]:
    """H(s xor c) = AES(u) xor u for u = s xor c; a block is word 0 then word 1, each little-endian."""
    u = (seed[0] ^ tweak, seed[1])
    raw = _ENC.update(u[0].to_bytes(8, "little") + u[1].to_bytes(8, "little"))
    return int.from_bytes(raw[:8], "little") ^ u[0], int.from_bytes(raw[8:], "little") ^ u[1]


def _child(seed: tuple[int, int], side: int) -> tuple[tuple[int, int], int]:
    """The seed (low bit cleared) and control bit of child ``side`` (0 left, 1 right)."""
    w0, w1 = _h(seed, 1 + side)
    return (w0 & ~1 & (MOD - 1), w1), w0 & 1


def _value(seed: tuple[int, int], side: int, payload: int) -> list[int]:
    return list(_h(seed, 3 + side)[:payload])


def _convert(seed: tuple[int, int], payload: int) -> list[int]:
    return list(_h(seed, 5)[:payload])


def _xor(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] ^ b[0], a[1] ^ b[1]


def ref_keygen(alpha: int, beta: list[int], bits: int, root0: tuple[int, int], root1: tuple[int, int]) -> list[int]:
    """One value's correction words, in ``dcf.pack``'s order (per level: seed words, output words; control bits; last)."""
    payload = len(beta)
    seeds, ts = [root0, root1], [0, 1]
    v_alpha = [0] * payload
    cw_bits, words = 0, []
    for i in range(bits):
        a = (alpha >> (bits - 1 - i)) & 1
        kids = [[_child(seeds[b], side) for side in (0, 1)] for b in (0, 1)]
        vals = [[_value(seeds[b], side, payload) for side in (0, 1)] for b in (0, 1)]
        keep, lose = a, 1 - a  # alpha's path goes right when its bit is 1
        s_cw = _xor(kids[0][lose][0], kids[1][lose][0])
        sign = (1 - 2 * ts[1]) % MOD
        v_cw = [sign * (vals[1][lose][p] - vals[0][lose][p] - v_alpha[p] + (beta[p] if a else 0)) % MOD for p in range(payload)]
        v_alpha = [(v_alpha[p] - vals[1][keep][p] + vals[0][keep][p] + sign * v_cw[p]) % MOD for p in range(payload)]
        t_cw = [kids[0][0][1] ^ kids[1][0][1] ^ a ^ 1, kids[0][1][1] ^ kids[1][1][1] ^ a]
        cw_bits |= t_cw[0] << (2 * i) | t_cw[1] << (2 * i + 1)
        for b in (0, 1):
            seed, t = kids[b][keep]
            seeds[b] = _xor(seed, s_cw) if ts[b] else seed
            ts[b] = t ^ (ts[b] & t_cw[keep])
        words += [*s_cw, *v_cw]
    sign = (1 - 2 * ts[1]) % MOD
    last = [sign * (c1 - c0 - v) % MOD for c0, c1, v in zip(_convert(seeds[0], payload), _convert(seeds[1], payload), v_alpha)]
    return [*words, cw_bits, *last]


def ref_evaluate(rank: int, root: tuple[int, int], words: list[int], bits: int, payload: int, x: int) -> list[int]:
    """One party's share of beta [x < alpha] from its root seed and the value's correction words."""
    width = 2 + payload
    cw_bits, last = words[bits * width], words[bits * width + 1 :]
    seed, t, out = root, rank, [0] * payload
    for i in range(bits):
        side = (x >> (bits - 1 - i)) & 1
        level = words[i * width : (i + 1) * width]
        child, t_child = _child(seed, side)
        v = _value(seed, side, payload)
        if t:
            child = _xor(child, (level[0], level[1]))
            v = [(v[p] + level[2 + p]) % MOD for p in range(payload)]
        t = t_child ^ (t & (cw_bits >> (2 * i + side)) & 1)
        out = [(o + vp) % MOD for o, vp in zip(out, v)]
        seed = child
    out = [(o + c + (last[p] if t else 0)) % MOD for p, (o, c) in enumerate(zip(out, _convert(seed, payload)))]
    return [(-o) % MOD for o in out] if rank == 1 else out


@pytest.fixture
def small_blocks(monkeypatch):  # noqa: ANN001, ANN201
    """Blocks of a few values (and a short last one), and threads over chunks of a few values."""
    monkeypatch.setattr(dcf, "KEYGEN_BLOCK", 7)
    monkeypatch.setattr(dcf, "EVAL_BLOCK", 10)
    monkeypatch.setattr(dcf, "MIN_CHUNK", 16)
    monkeypatch.setenv("MPCVIT_DCF_THREADS", "2")


@pytest.mark.parametrize("bits,payload,shifts", [(1, 1, 2), (5, 2, 3), (13, 1, 1), (23, 2, 4), (32, 2, 2)])
def test_keys_and_shares_match_the_reference(small_blocks, bits: int, payload: int, shifts: int) -> None:  # noqa: ANN001
    rng = np.random.default_rng(bits * 10 + payload)
    n = 37
    alpha = rng.integers(0, 1 << bits, n, dtype=np.uint64)
    alpha[:2] = [0, (1 << bits) - 1]
    beta = rng.integers(0, MOD, (n, payload), dtype=np.uint64)
    roots = [rng.integers(0, MOD, (n, 2), dtype=np.uint64) for _ in range(2)]
    words = dcf.keygen(alpha, beta, bits, roots[0], roots[1])
    want = np.array([ref_keygen(int(alpha[e]), [int(b) for b in beta[e]], bits, tuple(map(int, roots[0][e])),
                                tuple(map(int, roots[1][e]))) for e in range(n)], dtype=np.uint64).T
    assert np.array_equal(words, want)
    points = rng.integers(0, 1 << bits, (shifts, n), dtype=np.uint64)
    points[0, :3] = [alpha[2], alpha[2] - np.uint64(alpha[2] > 0), (alpha[2] + np.uint64(1)) % np.uint64(1 << bits)]
    garbage = rng.integers(0, MOD, words.shape, dtype=np.uint64)  # any key words: evaluation is the same function of them
    for key_words in (words, garbage):
        cols = [[int(w) for w in key_words[:, e]] for e in range(n)]
        for rank in (0, 1):
            got = dcf.evaluate(rank, dcf.unpack(roots[rank], key_words, bits, payload), points)
            want_shares = [[ref_evaluate(rank, tuple(map(int, roots[rank][e])), cols[e], bits, payload, int(points[j, e]))
                            for e in range(n)] for j in range(shifts)]
            assert np.array_equal(got, np.array(want_shares, dtype=np.uint64))
