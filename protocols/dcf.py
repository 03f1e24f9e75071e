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
``cryptography`` (ECB over whole numpy arrays of seeds, one call per level).
Measured here: 118,000 points on 31 levels with P = 2 in about 0.2 s on one
core; key generation about 0.5 s per 100,000 keys of 18 levels on one core.
Both split the values over threads (:func:`threads`, ``MPCVIT_DCF_THREADS``)
when there are many: numpy and OpenSSL release the GIL, so two cores
make 233,000 keys in 0.84 s instead of 1.59 s.

Why not a package. The package index has ``sycret`` (OpenMined, Rust with
AES-NI, last release 2021, "not production-ready", a fixed 32-bit domain
and a 1-word output, no vector payloads) and ``fss-crypto`` (2026, CUDA /
C++ sources compiled by torch at first import, which needs a compiler at
run time and pins ``torch>=2.6`` as a dependency). Neither is both
maintained and a plain CPU wheel, and the sign gates need P = 2 payloads,
so the construction is written here on ``cryptography``'s AES, vectorised
with numpy: about 60 lines.
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
# tweaks: child seed left / right, child outputs left / right, leaf conversion (low word, high word 0)
_TWEAK = np.array([[j + 1, 0] for j in range(5)], dtype=U64)
SEED_L, SEED_R, VALUE_L, VALUE_R, LEAF = range(5)
MAX_BITS = 32  # two control bits per level are packed in one 64-bit word
MAX_PAYLOAD = 2  # output words per value: one AES block of output per child


def _hash(inputs: np.ndarray) -> np.ndarray:
    """pi(u) xor u for every 128-bit u (last axis: 2 words), pi = AES-128 under the fixed public key."""
    buf = np.ascontiguousarray(inputs, dtype="<u8")
    raw = np.empty(buf.nbytes + 15, dtype=np.uint8)  # update_into wants room for one more block less a byte
    enc = Cipher(algorithms.AES(_AES_KEY), modes.ECB()).encryptor()
    if buf.size:
        enc.update_into(buf.reshape(-1).view(np.uint8), raw)
    out = raw[: buf.nbytes].view("<u8").reshape(buf.shape)
    out ^= buf
    return out


def _expand(s: np.ndarray, payload: int):  # noqa: ANN202
    """G(s) for the dealer, both children: (seed_L, t_L, seed_R, t_R, v_L, v_R); seeds (..., 2), bits (...), outputs (..., P)."""
    blocks = _hash(s[None] ^ _TWEAK[:4].reshape(4, *([1] * (s.ndim - 1)), 2))
    left, right = blocks[SEED_L], blocks[SEED_R]
    t_left, t_right = left[..., 0] & U64(1), right[..., 0] & U64(1)
    left[..., 0] &= _LOW_CLEAR
    right[..., 0] &= _LOW_CLEAR
    return left, t_left, right, t_right, blocks[VALUE_L][..., :payload], blocks[VALUE_R][..., :payload]


def _child(s: np.ndarray, go_right: np.ndarray, payload: int):  # noqa: ANN202
    """G(s) restricted to the child a party walks to (``go_right`` 0/1 per point): (seed, t, v); 2 AES blocks per point."""
    inputs = np.empty((2, *s.shape), dtype=U64)
    inputs[0] = s
    inputs[1] = s
    inputs[0, ..., 0] ^= go_right + U64(SEED_L + 1)  # the tweaks differ from zero in the low word only
    inputs[1, ..., 0] ^= go_right + U64(VALUE_L + 1)
    blocks = _hash(inputs)
    seed = blocks[0]
    t = seed[..., 0] & U64(1)
    seed[..., 0] &= _LOW_CLEAR
    return seed, t, blocks[1][..., :payload]


def _convert(s: np.ndarray, payload: int) -> np.ndarray:
    return _hash(s ^ _TWEAK[LEAF])[..., :payload]


def _sign(t: np.ndarray) -> np.ndarray:
    """(-1)^t in Z_2^64 for control bits t (as a column to broadcast against output words)."""
    return (U64(1) - U64(2) * t)[..., None]


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
    """64-bit words of one value's correction words (what the dealer sends to each party: a (words, E) block)."""
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


def _keygen_into(out: np.ndarray, alpha: np.ndarray, beta: np.ndarray, bits: int, seed0: np.ndarray, seed1: np.ndarray) -> None:
    """``keygen`` of one chunk of values, written into ``out`` (key_words, chunk)."""
    n, payload = alpha.shape[0], beta.shape[1]
    width = 2 + payload
    seeds = np.stack([np.asarray(seed0, dtype=U64), np.asarray(seed1, dtype=U64)])  # (2, n, 2): both parties at once
    t = np.stack([np.zeros(n, dtype=U64), np.ones(n, dtype=U64)])
    v_alpha = np.zeros((n, payload), dtype=U64)
    cw_bits = np.zeros(n, dtype=U64)
    for i in range(bits):
        a = (alpha >> U64(bits - 1 - i)) & U64(1)
        m = U64(0) - a  # all ones where alpha's path goes right (keep R, lose L): selections are masks, not np.where
        mc = m[:, None]
        left_s, t_left, right_s, t_right, v_left, v_right = _expand(seeds, payload)  # each (2, n, ...)
        flip_s = (left_s ^ right_s) & mc
        lose = right_s ^ flip_s
        s_cw = lose[0] ^ lose[1]
        sign = _sign(t[1])
        flip_v = (v_left ^ v_right) & mc
        v_lose = v_right ^ flip_v
        v_keep = v_left ^ flip_v
        v_cw = sign * (v_lose[1] - v_lose[0] - v_alpha)
        v_cw += sign * (beta & mc)  # leaving alpha's path to the left: x < alpha
        v_alpha -= v_keep[1]
        v_alpha += v_keep[0]
        v_alpha += sign * v_cw
        t_cw_l = t_left[0] ^ t_left[1] ^ a ^ U64(1)
        t_cw_r = t_right[0] ^ t_right[1] ^ a
        cw_bits |= (t_cw_l << U64(2 * i)) | (t_cw_r << U64(2 * i + 1))
        t_cw_keep = t_cw_l ^ ((t_cw_l ^ t_cw_r) & m)
        seeds = left_s ^ flip_s  # the kept child
        seeds ^= s_cw & (U64(0) - t)[..., None]
        t_keep = t_left ^ ((t_left ^ t_right) & m)
        t = t_keep ^ (t & t_cw_keep)
        out[i * width : i * width + 2] = s_cw.T
        out[i * width + 2 : (i + 1) * width] = v_cw.T
    cw_last = _sign(t[1]) * (_convert(seeds[1], payload) - _convert(seeds[0], payload) - v_alpha)
    out[bits * width] = cw_bits
    out[bits * width + 1 :] = cw_last.T


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


def _evaluate_into(result: np.ndarray, rank: int, keys: DCFKeys, points: np.ndarray) -> None:
    """``evaluate`` of one chunk of values, written into ``result`` (M, chunk, P)."""
    bits, payload = keys.bits, keys.payload
    m, n = points.shape
    s = np.broadcast_to(keys.seed, (m, n, 2)).copy()
    t = np.full((m, n), rank, dtype=U64)
    out = np.zeros((m, n, payload), dtype=U64)
    for i in range(bits):
        x = (points >> U64(bits - 1 - i)) & U64(1)
        seed, t_next, v = _child(s, x, payload)
        on = (U64(0) - t)[..., None]  # all ones where t = 1
        level = keys.levels[i]
        seed ^= level[:2].T & on
        t_next ^= t & (keys.cw_bits >> (U64(2 * i) + x))
        t_next &= U64(1)
        v += level[2:].T & on
        out += v
        s, t = seed, t_next
    out += _convert(s, payload) + keys.cw_last.T * t[..., None]
    result[...] = (U64(0) - out) if rank == 1 else out


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
