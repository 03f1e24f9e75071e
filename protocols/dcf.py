"""Distributed comparison functions (DCF): two keys that share ``x < alpha ? beta : 0`` for a hidden alpha.

A DCF (Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar, Rathee, "Function
Secret Sharing for Mixed-Mode and Fixed-Point Secure Computation",
Eurocrypt 2021, the DCF construction of section 3) splits the function
f(x) = beta if x < alpha else 0 on L-bit inputs (beta in G = (Z_2^64)^P)
into two keys k_0, k_1 with Eval(0, k_0, x) + Eval(1, k_1, x) = f(x) for
every x, while each key alone is pseudorandom: it reveals neither alpha nor
beta. The dealer (``protocols.providers``) makes the keys; a party evaluates
its key at any number of public points without communication. This is what
lets a comparison of a masked value cost a single opening
(``protocols.sign``).

Construction. Each party walks a binary tree along x's bits, most
significant first, holding a 128-bit seed s and a control bit t (party 0
starts with t = 0, party 1 with t = 1). At each level the PRG G expands s
into a left and a right child (seed, control bit, and P output words each).
The key's correction word of the level (a seed, P output words and two
control bits, identical in both keys) makes the two parties' children equal
off alpha's path (so their outputs cancel) and keeps them pseudorandom and
different on it; the output words along the path add up to beta exactly
where x leaves alpha's path to the left (x < alpha). After the last level a
final correction converts the seeds to output shares. Per key and value:
L (128 + 64 P + 2) + 64 P bits, with the root seed drawn from the party's
own PRG stream rather than sent.

The PRG G. G(s) is four blocks H(s xor c_j) with H(u) = pi(u) xor u and pi
AES-128 under one fixed, public key (SHA-256 of a label), the
tweaked Matyas-Meyer-Oseas construction: c_1 and c_2 give the left and
right child seeds (their lowest bit is the child's control bit, then
cleared), c_3 and c_4 the left and right children's output words (up to
two per child: P <= 2), c_5 the leaf conversion. A fixed-key AES as a
correlation-robust hash is the standard choice of FSS implementations (one
key schedule for millions of blocks, AES-NI speed); the key is not a
secret, the seeds are, and every seed comes from the project's
cryptographic PRG (``mpcvit.prg``). Because each child has its own tweak, a
party evaluating at x computes only the child it walks to: 2 AES blocks per
level and point (the dealer computes all 4). AES runs in OpenSSL through
``cryptography`` (ECB over numpy buffers of seeds).

Work. The values are walked down the tree in blocks (``KEYGEN_BLOCK``
values for the dealer, ``EVAL_BLOCK`` points for a party) whose buffers are
allocated once per call and reused by every block and level: each level is
one AES call into an output buffer that already has ``update_into``'s
slack, then numpy steps with ``out=`` and no temporaries. The dealer
computes both parties at once and uses two facts of the path: the parties'
control bits differ on it (only party 0's is kept; party 1's seed is party
0's XOR the children's XOR with the low bit set), and the running output
sum telescopes (v_alpha' = (v_lose,1 - v_lose,0) - (v_keep,1 - v_keep,0)
+ beta [alpha goes right], no multiply). A party evaluates the J shifts of a
value together with the key's level words broadcast over them. Same keys
and shares as the plain per-level version (``tests/protocols/
test_dcf_reference.py`` against a one-value reference), at a third of its
CPU time (about 0.3) for keys and 0.55-0.7 of it for evaluation
(``benchmarks/dcf_speed.py``, ``results/dcf_speed.json``). Measured here
on one thread: 200,000 keys of 19 levels (P = 2) in 0.2 s (AES about 0.06
s of it); 33,280 values at 9 shifts on 9 levels in 0.04 s; 118,000 points
on 31 levels in 0.05 s. Both split the values over threads (:func:`threads`,
``MPCVIT_DCF_THREADS``) when there are many: numpy and OpenSSL release the
GIL (233,000 keys of 19 levels: 0.23 s on one thread, 0.15 s on two of a
busy 2-core machine).

Compiled kernels. Acceptable only as wheels that need no compiler at
install (Python 3.11-3.13, Linux x86-64 / aarch64, macOS). numba has
them (0.68: numba plus llvmlite, about 200 MB installed, no torch) and
was tried with one fused loop per level and AES still in OpenSSL: key
generation came out 0.8x (slower: a scalar loop over interleaved 128-bit
words, against numpy's vectorised passes) and evaluation 1.2x, both
bit-identical, plus about 1 s of compilation at a process's first call.
Far from the 2x that would pay for the dependency, so none is used.
AES itself (OpenSSL, AES-NI) is a third of the dealer's time and a fifth
of a party's; the rest is a few dozen vectorised numpy passes over
buffers in cache, which the scalar compiled loops did not beat.

Why not a package. The package index has ``sycret`` (OpenMined, Rust with
AES-NI, last release 2021, "not production-ready", a fixed 32-bit domain
and a 1-word output, no vector payloads) and ``fss-crypto`` (2026, CUDA /
C++ sources compiled by torch at first import, which needs a compiler at
run time and pins ``torch>=2.6`` as a dependency). Neither is both
maintained and a plain CPU wheel, and the sign gates need P = 2 payloads,
so the construction is written here on ``cryptography``'s AES, vectorised
with numpy.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

U64 = np.uint64
_LOW_CLEAR = U64(0xFFFFFFFFFFFFFFFE)
_AES_KEY = hashlib.sha256(b"mpcvit/dcf/G").digest()[:16]
# tweaks c_1..c_5 (j + 1 in the low word, 0 in the high one): child seed left / right, child outputs left / right, leaf
SEED_L, SEED_R, VALUE_L, VALUE_R, LEAF = range(5)
MAX_BITS = 32  # two control bits per level are packed in one 64-bit word
MAX_PAYLOAD = 2  # output words per value: one AES block of output per child
BIT_PAYLOAD = 0  # the payload code of the one-bit DCF (``keygen_bit``): XOR shares of [x < alpha]
_LOW2_CLEAR = U64(0xFFFFFFFFFFFFFFFC)


def _encryptor():  # noqa: ANN202
    """A fixed-key AES-128 ECB context: ECB keeps no state across whole blocks, so one serves a whole call of one thread."""
    return Cipher(algorithms.AES(_AES_KEY), modes.ECB()).encryptor()


class _Blocks:
    """An AES input buffer (last axis: the 2 words of a block) and the output buffer, allocated once with the slack
    that ``update_into`` wants (one more block less a byte): ``run`` encrypts the first blocks of ``inp`` into ``out``."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.inp = np.empty(shape, dtype=U64)
        self._raw = np.empty(self.inp.nbytes + 16, dtype=np.uint8)
        self._inp_bytes = self.inp.reshape(-1).view(np.uint8)
        self.out = self._raw[: self.inp.nbytes].view(U64).reshape(shape)

    def run(self, enc, blocks: int | None = None) -> None:  # noqa: ANN001
        data = self._inp_bytes if blocks is None else self._inp_bytes[: 16 * blocks]
        if data.size:
            enc.update_into(data, self._raw)


@dataclass
class DCFKeys:
    """One party's DCF keys for E values: correction words shared by both keys, the root seed its own.

    ``seed`` (E, 2) root seeds; ``levels`` (L, 2 + P, E): per level the seed
    correction (2 words) and the output corrections (P words), level-major so
    that each level is one contiguous block; ``cw_bits`` (E,) the two
    control-bit corrections of level i at bits 2i, 2i+1; ``cw_last`` (P, E).
    All uint64 views of the packed words (no copy).
    """

    seed: np.ndarray
    levels: np.ndarray
    cw_bits: np.ndarray
    cw_last: np.ndarray

    @property
    def bits(self) -> int:
        return int(self.levels.shape[0])

    @property
    def payload(self) -> int:
        return int(self.levels.shape[1]) - 2


def key_words(bits: int, payload: int) -> int:
    """64-bit words of one value's correction words (what the dealer sends to each party: a (words, E) block).

    ``payload`` 0 is the one-bit DCF of ``keygen_bit``: 2 words of seed correction per level above the last
    ``EARLY_BITS``, then the control bits' word, the output bits' word and the leaf's word."""
    if payload == BIT_PAYLOAD:
        return 2 * max(bits - EARLY_BITS, 0) + 3
    return bits * (2 + payload) + 1 + payload


def keygen(alpha: np.ndarray, beta: np.ndarray, bits: int, seed0: np.ndarray, seed1: np.ndarray) -> np.ndarray:
    """Correction words of DCF keys for f_i(x) = beta_i [x < alpha_i] on ``bits``-bit inputs, packed (key_words, E).

    ``alpha`` (E,) uint64 in [0, 2^bits), ``beta`` (E, P) uint64, ``seed0``/``seed1``
    (E, 2) uint64 the parties' root seeds (from their PRG streams).
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"DCF input bits must be in 1..{MAX_BITS}, got {bits}")
    alpha = np.asarray(alpha, dtype=U64)
    beta = np.asarray(beta, dtype=U64)
    if not 1 <= beta.shape[1] <= MAX_PAYLOAD:
        raise ValueError(f"DCF payload must be 1..{MAX_PAYLOAD} words, got {beta.shape[1]}")
    n, payload = alpha.shape[0], beta.shape[1]
    out = np.empty((key_words(bits, payload), n), dtype=U64)  # filled level by level: the packed layout of ``pack``
    _in_chunks(n, lambda lo, hi: _keygen_into(out[:, lo:hi], alpha[lo:hi], beta[lo:hi], bits, seed0[lo:hi], seed1[lo:hi]))
    return out


KEYGEN_BLOCK = 8192  # values walked at once: numpy's per-call cost small, the buffers (0.5 KB a value) in the last-level cache


class _KeygenWork:
    """Buffers of ``_keygen_block`` for blocks of ``b`` values (allocated once per call, reused by every block and level)."""

    def __init__(self, b: int, payload: int) -> None:
        self.b, self.payload = b, payload
        self.aes = _Blocks((4, 2, b, 2))  # tweak (seed L, seed R, value L, value R), party, value, word
        self.tweaks = np.zeros((4, 2, b, 2), dtype=U64)  # XORed into both parties' seeds: the 4 tweaks (low word)
        for j in range(4):
            self.tweaks[j, :, :, 0] = j + 1
        self.seeds = np.empty((2, b, 2), dtype=U64)  # both parties' seeds on alpha's path; word 0's low bit: t
        self.t0 = np.empty((b, 2), dtype=U64)  # -t of party 0, in both words (party 1's t is 1 - t0 on the path)
        self.alpha = np.empty((b, 2), dtype=U64)  # alpha in both words
        self.mask = np.empty((b, 2), dtype=U64)  # all ones where alpha's path goes right at this level
        self.x = np.empty((2, b, 2), dtype=U64)  # left / right children: party 0 xor party 1
        self.e = np.empty((b, 2), dtype=U64)
        self.keep = np.empty((b, 2), dtype=U64)
        self.cw = np.empty((b, 2), dtype=U64)
        self.tmp = np.empty((b, 2), dtype=U64)
        self.v = np.empty((4, b, payload), dtype=U64)
        self.v_alpha = np.empty((b, payload), dtype=U64)
        self.lowbits = np.empty((2 * MAX_BITS, b), dtype=U64)


def _keygen_into(out: np.ndarray, alpha: np.ndarray, beta: np.ndarray, bits: int, seed0: np.ndarray, seed1: np.ndarray) -> None:
    """``keygen`` of one chunk of values, written into ``out`` (key_words, chunk): blocks of ``KEYGEN_BLOCK`` values."""
    n, payload = alpha.shape[0], beta.shape[1]
    enc = _encryptor()
    work: dict[int, _KeygenWork] = {}
    for lo in range(0, n, KEYGEN_BLOCK):
        hi = min(n, lo + KEYGEN_BLOCK)
        w = work.get(hi - lo) or work.setdefault(hi - lo, _KeygenWork(hi - lo, payload))
        _keygen_block(w, enc, out[:, lo:hi], alpha[lo:hi], beta[lo:hi], bits, seed0[lo:hi], seed1[lo:hi])


def _keygen_block(w: _KeygenWork, enc, out: np.ndarray, alpha: np.ndarray, beta: np.ndarray, bits: int,  # noqa: ANN001
                  seed0: np.ndarray, seed1: np.ndarray) -> None:
    """The dealer's walk down alpha's path for one block of values, both parties at once.

    On the path the parties' control bits always differ (t_1 = 1 - t_0), so
    only party 0's is kept, and their new seeds differ by a known word (the
    xor of the two children, with the control bit set): party 1's seed is
    party 0's xor that. The output correction's running sum v_alpha telescopes:
    v_alpha' = (v_lose,1 - v_lose,0) - (v_keep,1 - v_keep,0) + beta [alpha goes right].
    Every step writes into the preallocated buffers (``out=``).
    """
    b, payload = w.b, w.payload
    width = 2 + payload
    seeds, t0, mask, x, e, keep, cw, tmp = w.seeds, w.t0, w.mask, w.x, w.e, w.keep, w.cw, w.tmp
    inp, h = w.aes.inp, w.aes.out
    seeds[0], seeds[1] = seed0, seed1
    t0.fill(0)
    w.alpha[...] = alpha[:, None]
    w.v_alpha.fill(0)
    lowbits = w.lowbits[: 2 * bits]  # per level: the two control-bit corrections (bit 0)
    mask_i, t0_i = mask.view(np.int64), t0.view(np.int64)
    m_p, t0_p = mask[:, :payload], t0[:, :payload]
    d_l, d_r, y, q = w.v
    for i in range(bits):
        if i:  # the control bit out of the seed: t0 <- -t (both words), clear it in both parties' seeds
            np.left_shift(seeds[0, :, 0], U64(63), out=t0[:, 0])
            np.right_shift(t0_i[:, 0], 63, out=t0_i[:, 0])
            t0[:, 1] = t0[:, 0]
            np.bitwise_and(seeds[:, :, 0], _LOW_CLEAR, out=seeds[:, :, 0])
        np.left_shift(w.alpha, U64(64 - bits + i), out=mask)  # alpha's bit (bits - 1 - i) to the top ...
        np.right_shift(mask_i, 63, out=mask_i)  # ... and spread (arithmetic shift): 0 or all ones
        np.bitwise_xor(seeds[None], w.tweaks, out=inp)
        w.aes.run(enc)
        np.bitwise_xor(h, inp, out=h)
        # seeds: x = [L_0 ^ L_1, R_0 ^ R_1]; the kept side's xor, and the lost side's (the correction)
        np.bitwise_xor(h[0:2, 0], h[0:2, 1], out=x)
        np.bitwise_xor(x[0], x[1], out=e)
        np.bitwise_xor(x[:, :, 0], mask[None, :, 0], out=lowbits[2 * i : 2 * i + 2])  # t_cw_L ^ 1, t_cw_R (bit 0)
        np.bitwise_and(e, mask, out=tmp)
        np.bitwise_xor(x[0], tmp, out=keep)  # keep_0 ^ keep_1
        e[:, 0] |= U64(1)
        np.bitwise_xor(keep, e, out=cw)  # lose_0 ^ lose_1; bit 0: t_cw of the kept side (keep_0 ^ keep_1 ^ 1)
        np.bitwise_and(cw[:, 0], _LOW_CLEAR, out=out[i * width])
        out[i * width + 1] = cw[:, 1]
        # outputs: d = party 1 - party 0 of each side; lose / keep sides by the mask
        np.subtract(h[2, 1, :, :payload], h[2, 0, :, :payload], out=d_l)
        np.subtract(h[3, 1, :, :payload], h[3, 0, :, :payload], out=d_r)
        np.bitwise_xor(d_l, d_r, out=y)
        y &= m_p
        np.bitwise_xor(d_r, y, out=q)  # v_lose,1 - v_lose,0
        np.bitwise_and(beta, m_p, out=d_r)
        q += d_r  # + beta where x leaves the path to the left (x < alpha)
        np.subtract(q, w.v_alpha, out=d_r)
        d_r ^= t0_p
        for p in range(payload):  # (1 - 2 t_1) z = (2 t_0 - 1) z
            np.subtract(t0[:, 0], d_r[:, p], out=out[i * width + 2 + p])
        d_l ^= y  # v_keep,1 - v_keep,0
        np.subtract(q, d_l, out=w.v_alpha)
        # party 0's kept child, corrected where t_0 = 1; party 1's differs from it by e (bit 0 set: t_1 = 1 - t_0)
        np.bitwise_xor(h[0, 0], h[1, 0], out=tmp)
        tmp &= mask
        np.bitwise_xor(h[0, 0], tmp, out=seeds[0])
        np.bitwise_and(cw, t0, out=tmp)
        seeds[0] ^= tmp
        np.bitwise_xor(seeds[0], e, out=seeds[1])
    # the leaf: cw_last = (1 - 2 t_1) (convert(s_1) - convert(s_0) - v_alpha)
    np.left_shift(seeds[0, :, 0], U64(63), out=t0[:, 0])
    np.right_shift(t0_i[:, 0], 63, out=t0_i[:, 0])
    t0[:, 1] = t0[:, 0]
    np.bitwise_and(seeds[:, :, 0], _LOW_CLEAR, out=seeds[:, :, 0])
    inp[0] = seeds
    inp[0, :, :, 0] ^= U64(LEAF + 1)
    w.aes.run(enc, 2 * b)
    np.bitwise_xor(h[0], inp[0], out=h[0])
    np.subtract(h[0, 1, :, :payload], h[0, 0, :, :payload], out=d_l)
    d_l -= w.v_alpha
    d_l ^= t0_p
    for p in range(payload):
        np.subtract(t0[:, 0], d_l[:, p], out=out[bits * width + 1 + p])
    lowbits[0::2] ^= U64(1)
    lowbits &= U64(1)
    lowbits <<= np.arange(2 * bits, dtype=U64)[:, None]
    np.bitwise_or.reduce(lowbits, axis=0, out=out[bits * width])


def pack(cw_seed: np.ndarray, cw_value: np.ndarray, cw_bits: np.ndarray, cw_last: np.ndarray) -> np.ndarray:
    """(key_words, E) uint64, level-major: per level [seed (2 rows), values (P rows)], then the control bits, then cw_last."""
    bits, n, payload = cw_value.shape
    levels = np.concatenate([cw_seed, cw_value], axis=2).transpose(0, 2, 1).reshape(bits * (2 + payload), n)
    return np.ascontiguousarray(np.concatenate([levels, cw_bits[None], cw_last.T], axis=0))


def unpack(seed: np.ndarray, words: np.ndarray, bits: int, payload: int) -> DCFKeys:
    """A party's ``DCFKeys`` from its root seeds (E, 2) and the packed correction words (key_words, E): views."""
    words = np.asarray(words, dtype=U64)
    if words.ndim != 2 or words.shape[0] != key_words(bits, payload):
        raise ValueError(f"DCF key has {words.shape[0]} words, expected {key_words(bits, payload)}")
    n = words.shape[1]
    width = bits * (2 + payload)
    return DCFKeys(
        seed=np.asarray(seed, dtype=U64),
        levels=words[:width].reshape(bits, 2 + payload, n),
        cw_bits=words[width],
        cw_last=words[width + 1 :],
    )


def evaluate(rank: int, keys: DCFKeys, points: np.ndarray) -> np.ndarray:
    """This party's shares (M, E, P) uint64 of beta_i [x_ji < alpha_i] at public ``points`` x (M, E) uint64.

    The two parties' outputs add up (mod 2^64) to beta_i where x_ji < alpha_i and to 0 elsewhere.
    """
    points = np.asarray(points, dtype=U64)
    m, n = points.shape
    out = np.empty((m, n, keys.payload), dtype=U64)
    _in_chunks(n, lambda lo, hi: _evaluate_into(out[:, lo:hi], rank, DCFKeys(
        keys.seed[lo:hi], keys.levels[:, :, lo:hi], keys.cw_bits[lo:hi], keys.cw_last[:, lo:hi]), points[:, lo:hi]))
    return out


EVAL_BLOCK = 16384  # points (values times shifts) walked at once, for the same reason (about 0.15 KB a point)


class _EvalWork:
    """Buffers of ``_evaluate_block`` for blocks of (m points, b values), reused by every block and level."""

    def __init__(self, m: int, b: int, payload: int) -> None:
        self.m, self.b = m, b
        self.aes = _Blocks((2, m, b, 2))  # (seed, value) block, point, value, word
        self.x, self.tweak, self.t, self.t_raw, self.mask, self.tmp, self.lo, self.hi = np.empty((8, m, b), dtype=U64)
        self.acc = np.empty((m, b, payload), dtype=U64)  # the output blocks (interleaved, as AES writes them)
        self.acc_cw = np.empty((payload, m, b), dtype=U64)  # the corrections (word-major, as the key holds them)


def _evaluate_into(result: np.ndarray, rank: int, keys: DCFKeys, points: np.ndarray) -> None:
    """``evaluate`` of one chunk of values, written into ``result`` (M, chunk, P): blocks of about ``EVAL_BLOCK`` points."""
    m, n = points.shape
    step = max(1, EVAL_BLOCK // max(m, 1))
    enc = _encryptor()
    work: dict[int, _EvalWork] = {}
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        w = work.get(hi - lo) or work.setdefault(hi - lo, _EvalWork(m, hi - lo, keys.payload))
        _evaluate_block(w, enc, result[:, lo:hi], rank, keys.seed[lo:hi], keys.levels[:, :, lo:hi], keys.cw_bits[lo:hi],
                        keys.cw_last[:, lo:hi], points[:, lo:hi])


def _evaluate_block(w: _EvalWork, enc, result: np.ndarray, rank: int, root: np.ndarray, levels: np.ndarray,  # noqa: ANN001
                    cw_bits: np.ndarray, cw_last: np.ndarray, points: np.ndarray) -> None:
    """One party's walk for a block of values, all M points of a value at once (the key's words broadcast over M).

    After each level's AES the next level's inputs are made in one go: the
    child seed (its control bit cleared, the correction words added where
    t = 1) XOR the tweak of the side the next bit takes. The output words
    and the output corrections are summed apart, each in its own layout.
    """
    bits, payload = levels.shape[0], levels.shape[1] - 2
    inp, h = w.aes.inp, w.aes.out
    x, tweak, t, t_raw, mask, tmp, lo, hi = w.x, w.tweak, w.t, w.t_raw, w.mask, w.tmp, w.lo, w.hi
    acc, acc_cw = w.acc, w.acc_cw
    t.fill(rank)
    acc.fill(0)
    acc_cw.fill(0)
    seed_lo, seed_hi = root[:, 0], root[:, 1]  # (b,): broadcast over the M points at the root
    for i in range(bits):
        np.right_shift(points, U64(bits - 1 - i), out=x)
        x &= U64(1)
        np.add(x, U64(SEED_L + 1), out=tweak)  # SEED_L + 1 + x: the seed tweak of the side taken
        np.bitwise_xor(seed_lo, tweak, out=inp[0, :, :, 0])
        tweak += U64(VALUE_L - SEED_L)
        np.bitwise_xor(seed_lo, tweak, out=inp[1, :, :, 0])
        inp[:, :, :, 1] = seed_hi
        w.aes.run(enc)
        np.bitwise_xor(h, inp, out=h)
        level = levels[i]
        np.bitwise_and(h[0, :, :, 0], U64(1), out=t_raw)
        np.negative(t, out=mask)  # all ones where t = 1: add the corrections
        np.right_shift(cw_bits >> U64(2 * i), x, out=tmp)  # t_cw of the side taken
        tmp &= t
        np.bitwise_xor(t_raw, tmp, out=t)
        acc += h[1, :, :, :payload]
        for p in range(payload):
            np.bitwise_and(level[2 + p], mask, out=tmp)
            acc_cw[p] += tmp
        np.bitwise_xor(h[0, :, :, 0], t_raw, out=lo)  # the child seed, control bit cleared ...
        np.bitwise_and(level[0], mask, out=tmp)
        lo ^= tmp  # ... and corrected
        np.bitwise_and(level[1], mask, out=tmp)
        np.bitwise_xor(h[0, :, :, 1], tmp, out=hi)
        seed_lo, seed_hi = lo, hi
    # the leaf: convert(s) + cw_last t
    np.bitwise_xor(seed_lo, U64(LEAF + 1), out=inp[0, :, :, 0])
    inp[0, :, :, 1] = seed_hi
    w.aes.run(enc, w.m * w.b)
    np.bitwise_xor(h[0], inp[0], out=h[0])
    acc += h[0, :, :, :payload]
    np.negative(t, out=mask)
    for p in range(payload):
        np.bitwise_and(cw_last[p], mask, out=tmp)
        acc_cw[p] += tmp
    acc += acc_cw.transpose(1, 2, 0)
    if rank == 1:
        np.negative(acc, out=result)
    else:
        result[...] = acc


# -- threads: values are independent, and numpy and OpenSSL release the GIL ---------

MIN_CHUNK = 16_384  # values per thread at least (smaller calls run in the caller's thread)
_pool: list[tuple[int, ThreadPoolExecutor]] = []  # (its threads, the pool)
_pool_lock = threading.Lock()


def threads() -> int:
    """Threads for key generation and evaluation: ``MPCVIT_DCF_THREADS``, else the CPUs this process may use."""
    configured = os.environ.get("MPCVIT_DCF_THREADS")
    if configured:
        return max(1, int(configured))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _in_chunks(n: int, fn: Callable[[int, int], None]) -> None:
    """``fn(lo, hi)`` over slices of ``range(n)``: several threads when ``n`` is large (results are the same)."""
    k = min(threads(), n // MIN_CHUNK)
    if k <= 1:
        fn(0, n)
        return
    with _pool_lock:
        if not _pool or _pool[0][0] < k:  # grow the pool when asked for more threads
            _pool[:] = [(k, ThreadPoolExecutor(max_workers=k, thread_name_prefix="dcf"))]
        pool = _pool[0][1]
    cuts = np.linspace(0, n, k + 1).astype(int)
    for done in [pool.submit(fn, int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:])]:
        done.result()


# -- the one-bit DCF: XOR shares of [x < alpha], about a third of the key -----------------------
#
# The same tree over Z_2 (BCG+21's DCF with the group Z_2), for a gate whose product comes from a second
# round (``protocols.sign.relu_select_steps``) instead of a second payload word. A child's AES block gives
# its seed (the low two bits cleared), its control bit t (bit 0) and its output bit v (bit 1): one block per
# child, so the dealer computes 4 blocks per level and value (the P = 2 keys: 8) and a party 1 per level and
# point (2). Per level the key holds the seed correction (2 words) and three bits: the two control-bit
# corrections and the output correction. The tree stops ``EARLY_BITS`` = 6 levels early (early termination,
# BGI16 / BCG+21): the last 6 bits of x index a 64-bit leaf, the first word of H(s xor c_5), corrected by one
# word. A key is 2 (L - 6) + 3 words (L = 19: 29), against L (2 + P) + 1 + P = 79 for P = 2. A party's output
# is the XOR along its path of v and t V_cw, then the leaf's bit and t times the leaf correction's: off
# alpha's path the two parties hold equal seeds and control bits, so their outputs cancel; on it their
# control bits differ, so exactly one adds each correction, and the correction of the level where x leaves
# the path (or the leaf's, for x in alpha's last 64) makes the XOR 1 exactly where x < alpha. Each key
# alone is pseudorandom by the same argument as the P-word keys (its correction words are XORs of PRG
# outputs of seeds the holder does not know).

EARLY_BITS = 6  # the last bits of x index the leaf's 64 output bits


def _bit_levels(bits: int) -> int:
    return max(bits - EARLY_BITS, 0)


def _aes_hash(enc, inp: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """H(u) = AES(u) xor u over the blocks of ``inp`` (..., 2) uint64 (a new array)."""
    inp = np.ascontiguousarray(inp, dtype=U64)
    raw = np.empty(inp.nbytes + 16, dtype=np.uint8)
    enc.update_into(inp.reshape(-1).view(np.uint8), raw)
    out = raw[: inp.nbytes].view(U64).reshape(inp.shape)
    out ^= inp
    return out


def _children(enc, seeds: np.ndarray, side: np.ndarray | None = None) -> np.ndarray:  # noqa: ANN001
    """H(s xor c) for the left and right child tweaks ((2, *shape)) or, with ``side`` (0 / 1 per seed), the one
    child each seed walks to (shape). ``seeds`` (..., 2) uint64."""
    if side is None:
        inp = np.empty((2, *seeds.shape), dtype=U64)
        inp[0], inp[1] = seeds, seeds
        inp[0, ..., 0] ^= U64(SEED_L + 1)
        inp[1, ..., 0] ^= U64(SEED_R + 1)
    else:
        inp = np.array(seeds, dtype=U64, copy=True)
        inp[..., 0] ^= side + U64(SEED_L + 1)  # SEED_R = SEED_L + 1
    return _aes_hash(enc, inp)


def _leaf_word(enc, seeds: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """The leaf's 64 output bits: the first word of H(s xor c_5), shape ``seeds.shape[:-1]``."""
    inp = np.array(seeds, dtype=U64, copy=True)
    inp[..., 0] ^= U64(LEAF + 1)
    return _aes_hash(enc, inp)[..., 0]


BIT_KEYGEN_BLOCK = 16_384  # values walked at once by ``keygen_bit`` (about 0.3 KB a value in flight)


def _even_blocks(n: int, most: int) -> list[slice]:
    """``range(n)`` in blocks of at most ``most``, of equal sizes (no short tail block paying a level's fixed costs)."""
    k = max(1, -(-n // most))
    cuts = [round(j * n / k) for j in range(k + 1)]
    return [slice(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]


def keygen_bit(alpha: np.ndarray, bits: int, seed0: np.ndarray, seed1: np.ndarray) -> np.ndarray:
    """Correction words (``key_words(bits, 0)``, E) of one-bit DCF keys for [x < alpha_i] on ``bits``-bit inputs.

    ``alpha`` (E,) uint64 in [0, 2^bits); ``seed0``/``seed1`` (E, 2) uint64 the parties' root seeds (from their
    PRG streams). Rows: per level (``bits - EARLY_BITS`` of them) the seed correction (2 words), then the
    control-bit corrections (bits 2i, 2i + 1 for level i's left and right child), the output corrections (bit i
    for level i) and the leaf's correction (bit z for the last bits z of x).
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"one-bit DCF input bits must be in 1..{MAX_BITS}, got {bits}")
    alpha = np.asarray(alpha, dtype=U64)
    out = np.empty((key_words(bits, BIT_PAYLOAD), alpha.shape[0]), dtype=U64)
    _in_chunks(alpha.shape[0], lambda lo, hi: _keygen_bit_into(out[:, lo:hi], alpha[lo:hi], bits, seed0[lo:hi], seed1[lo:hi]))
    return out


def _keygen_bit_into(out: np.ndarray, alpha: np.ndarray, bits: int, seed0: np.ndarray, seed1: np.ndarray) -> None:
    enc = _encryptor()
    one = U64(1)
    levels = _bit_levels(bits)
    for sl in _even_blocks(alpha.shape[0], BIT_KEYGEN_BLOCK):
        a_all, b = alpha[sl], alpha[sl].shape[0]
        s = np.stack([seed0[sl], seed1[sl]]).astype(U64)  # (party, b, 2) seeds on alpha's path
        t = np.stack([np.zeros(b, dtype=U64), np.ones(b, dtype=U64)])  # control bits (they differ on the path)
        v_alpha = np.zeros(b, dtype=U64)  # the XOR of both parties' outputs so far, on the path
        t_bits, v_bits = np.zeros(b, dtype=U64), np.zeros(b, dtype=U64)
        for i in range(levels):  # sides picked by masks (all ones where alpha goes right), not np.where
            a = (a_all >> U64(bits - 1 - i)) & one  # alpha's bit: the side kept (0 left, 1 right)
            right = U64(0) - a
            h = _children(enc, s)  # (child, party, b, 2)
            w0 = h[..., 0]
            tt, vv = w0 & one, (w0 >> one) & one  # (child, party, b)
            w0 &= _LOW2_CLEAR
            d = h[0] ^ h[1]
            d &= right[None, :, None]
            seed_lose = h[1] ^ d  # (party, b, 2)
            s_cw = seed_lose[0] ^ seed_lose[1]
            vx, tx = vv[:, 0] ^ vv[:, 1], tt[:, 0] ^ tt[:, 1]  # (child, b): both parties' XOR
            v_flip = (vx[0] ^ vx[1]) & right
            tl_cw, tr_cw = tx[0] ^ a ^ one, tx[1] ^ a
            v_cw = vx[1] ^ v_flip ^ v_alpha ^ a  # lost side's; where alpha goes right, leaving left means x < alpha
            v_alpha ^= vx[0] ^ v_flip ^ v_cw  # + kept side's
            t_cw_keep = tl_cw ^ ((tl_cw ^ tr_cw) & right)
            t_keep = tt[0] ^ ((tt[0] ^ tt[1]) & right)  # (party, b)
            mask = U64(0) - t  # all ones where t = 1
            s = h[0] ^ d  # the kept side's seeds ...
            s ^= s_cw[None] & mask[..., None]  # ... corrected where t = 1
            t = t_keep ^ (t & t_cw_keep)
            out[2 * i : 2 * i + 2, sl] = s_cw.T
            t_bits |= (tl_cw << U64(2 * i)) | (tr_cw << U64(2 * i + 1))
            v_bits |= v_cw << U64(i)
        # the leaf: bit z of (leaf_0 ^ leaf_1 ^ cw) is v_alpha ^ [z < alpha's last bits], so the XOR is [x < alpha]
        leaf = _leaf_word(enc, s)
        low = a_all & U64((1 << (bits - levels)) - 1)
        below = (one << low) - one  # bits z < low set (low <= 63)
        out[2 * levels, sl] = t_bits
        out[2 * levels + 1, sl] = v_bits
        out[2 * levels + 2, sl] = leaf[0] ^ leaf[1] ^ (U64(0) - v_alpha) ^ below


def evaluate_bit(rank: int, seed: np.ndarray, words: np.ndarray, bits: int, points: np.ndarray) -> np.ndarray:
    """This party's XOR shares (M, E) uint64 in {0, 1} of [x_ji < alpha_i] at public ``points`` (M, E) uint64.

    ``seed`` (E, 2) its root seeds, ``words`` (``key_words(bits, 0)``, E) the key's correction words.
    """
    words = np.asarray(words, dtype=U64)
    if words.ndim != 2 or words.shape[0] != key_words(bits, BIT_PAYLOAD):
        raise ValueError(f"one-bit DCF key has {words.shape[0]} words, expected {key_words(bits, BIT_PAYLOAD)}")
    points = np.asarray(points, dtype=U64)
    out = np.empty(points.shape, dtype=U64)
    _in_chunks(points.shape[1], lambda lo, hi: _evaluate_bit_into(out[:, lo:hi], rank, seed[lo:hi], words[:, lo:hi], bits,
                                                                  points[:, lo:hi]))
    return out


def _evaluate_bit_into(out: np.ndarray, rank: int, seed: np.ndarray, words: np.ndarray, bits: int, points: np.ndarray) -> None:
    enc = _encryptor()
    one = U64(1)
    levels = _bit_levels(bits)
    m, n = points.shape
    for sl in _even_blocks(n, max(1, EVAL_BLOCK // max(m, 1))):
        s = np.broadcast_to(np.asarray(seed[sl], dtype=U64)[None], (m, sl.stop - sl.start, 2))
        t = np.full((m, sl.stop - sl.start), rank, dtype=U64)
        v = np.zeros_like(t)
        t_bits, v_bits, leaf_cw = words[2 * levels, sl], words[2 * levels + 1, sl], words[2 * levels + 2, sl]
        for i in range(levels):
            x = (points[:, sl] >> U64(bits - 1 - i)) & one
            h = _children(enc, s, x)
            t_raw = h[..., 0] & one
            v ^= ((h[..., 0] >> one) & one) ^ (t & ((v_bits >> U64(i)) & one))
            h[..., 0] &= _LOW2_CLEAR
            mask = np.zeros_like(t) - t
            h[..., 0] ^= words[2 * i, sl] & mask
            h[..., 1] ^= words[2 * i + 1, sl] & mask
            t = t_raw ^ (t & ((t_bits >> (U64(2 * i) + x)) & one))
            s = h
        z = points[:, sl] & U64((1 << (bits - levels)) - 1)
        out[:, sl] = v ^ ((_leaf_word(enc, s) >> z) & one) ^ (t & ((leaf_cw >> z) & one))
