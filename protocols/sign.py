"""One-round sign tests from the dealer's DCF keys: [x < d_j] for many public d_j, and x [x < d_j], in ONE opening.

The dealer (``protocols.providers.dcf_material``) gives each party, per
value: an additive share r_i of a uniform mask r in Z_2^64, shares of
m (a bit of r, below) and of m r, and a DCF key (``protocols.dcf``). The
parties open c = x + r (ONE round, one ring element per value and party)
and the rest is local.

Math. Fix the ring (n bits, t dropped bits) of the use, as in
``protocols.compare``. For a public shift d (ring units) let
c_d = c - d (mod 2^64), c' = floor(c_d / 2^t) mod 2^n, r' = floor(r / 2^t)
mod 2^n, and y = c' - r' (mod 2^n). Since c_d = (x - d) + r - w 2^64,
y = floor((x - d) / 2^t) + k (mod 2^n) with k = [(x - d mod 2^t) + (r mod
2^t) >= 2^t] in {0, 1}, the carry out of the t dropped bits. y read as a
signed n-bit number is negative exactly when x - d < 0 as long as the
integer floor((x - d) / 2^t) + k does not leave [-2^(n-1), 2^(n-1)), except
that x - d in [-2^t, 0) (floor -1, and k = 1) may read as non-negative (an
error of at most 2^t ring units where it matters). At the top the carry
matters: floor((x - d) / 2^t) = 2^(n-1) - 1 for x - d in
[2^(n-1+t) - 2^t, 2^(n-1+t)), and with k = 1 (probability
(x - d mod 2^t) / 2^t, about 1/2 over that interval) y = 2^(n-1) reads as
negative. So the gate is valid for

    -2^(n-1+t) <= x - d <= 2^(n-1+t) - 2^t,   in particular |x - d| <= 2^(n-1+t) - 2^t

(``valid_bound``; ``tests/protocols/test_sign.py`` checks both edges, and
that values in (2^(n-1+t) - 2^t, 2^(n-1+t)) do fail). Write
c' = p 2^(n-1) + c_lo and r' = m 2^(n-1) + alpha (p, m their top bits):
subtracting the low parts borrows exactly when c_lo < alpha, so

    b_d = MSB(y) = p xor m xor [c_lo < alpha].

The DCF key shares g(z) = (1 - 2m) [z < alpha] (payload 1), or
((1 - 2m) [z < alpha], (1 - 2m) r [z < alpha]) (payload 2), on n-1 bits;
with xor written arithmetically (p public, m and g shared),

    b_d = m (1 - 2p) + p + (1 - 2p) g_0(c_lo),
    r b_d = (m r)(1 - 2p) + p r + (1 - 2p) g_1(c_lo),
    x b_d = c b_d - r b_d              (c public: local),

so [x < d] and, with payload 2, x [x < d] (the ReLU's and the max's
product) come out of the one opening. Every shift d_j reuses the same key:
a DCF key can be evaluated at any number of points.

What each party receives, and why it is uniform: online only c = x + r,
with r uniform on Z_2^64 and independent of everything the receiver holds
(its own r_i is one share; the other is the peer's PRG draw, known to the
dealer alone): c is uniform whatever x is
(``tests/security/test_uniformity.py`` checks it statistically). Offline
each party gets its DCF key, pseudorandom on its own (the FSS security of
the construction: a single key hides alpha, m and r), and party 0 the
corrections of [m] and [m r], uniform because each is masked by a fresh PRG
draw of party 1's.

Costs: 1 round; 8 bytes per value and party online, whatever the number of
shifts; offline ``dcf.key_words(n - 1, P)`` + 2 words per value to party 0
and ``key_words`` to party 1 (the default ReLU / max ring n = 20 with P = 2: 79 words, 632 bytes); local
work: (n - 1) levels of 3 (P = 1) or 4 (P = 2) AES blocks per value and shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from protocols import dcf
from protocols.compare import max_tree, pack_bits, unpack_bits
from protocols.crypten_compat import crypten
from protocols.lockstep import SUM, XOR, Steps, run_one
from protocols.planning import is_offline

import crypten.communicator as comm  # noqa: E402  (after the compat shim)
from crypten.mpc import MPCTensor  # noqa: E402

U64 = np.uint64


def valid_bound(ring_bits: int, drop_bits: int) -> int:
    """The largest |x - d| (ring units) for which the gate's bit is [x < d] (up to its 2^t error just below d).

    2^(n-1+t) - 2^t, not 2^(n-1+t): the carry out of the dropped low t bits
    turns floor((x - d) / 2^t) = 2^(n-1) - 1 into 2^(n-1) (see the module
    docstring). On the negative side -2^(n-1+t) itself is still exact.
    ``protocols.compare.ltz`` has the same symmetric bound (its borrow costs
    the 2^t at the negative end instead).
    """
    return (1 << (ring_bits - 1 + drop_bits)) - (1 << drop_bits)


def check_ring(ring_bits: int, drop_bits: int) -> None:
    """Raise ValueError unless (ring_bits, drop_bits) is usable by the DCF sign gate."""
    if not 2 <= ring_bits <= dcf.MAX_BITS + 1:
        raise ValueError(f"sign gate ring_bits must be in 2..{dcf.MAX_BITS + 1}, got {ring_bits}")
    if not 0 <= drop_bits <= 64 - ring_bits:
        raise ValueError(f"sign gate drop_bits must be in 0..{64 - ring_bits}, got {drop_bits}")


def _split_opened(cd: np.ndarray, ring_bits: int, drop_bits: int) -> tuple[torch.Tensor, np.ndarray]:
    """(p, c_lo) of an opened c - d (uint64): c' = floor(c_d / 2^t) mod 2^n, p its top bit (int64), c_lo its n - 1 low
    bits (uint64, the DCF's input); the parties' side of ``providers._split_mask``."""
    reduced = (cd >> U64(drop_bits)) & U64((1 << ring_bits) - 1)
    return torch.from_numpy((reduced >> U64(ring_bits - 1)).view(np.int64)), reduced & U64((1 << (ring_bits - 1)) - 1)


def sign_steps(x: MPCTensor, shifts: Sequence[int] = (0,), ring_bits: int = 32, drop_bits: int = 4,
               product: bool = False) -> Steps:
    """Step protocol: shares of b_j = [x < d_j] (int64, shape (J, *x.shape), scale 1), and with ``product`` also x b_j.

    ``shifts`` d_j are public ring-unit offsets. ONE round. Returns (bits, products or None). Each b_j is
    right for |x - d_j| <= ``valid_bound(ring_bits, drop_bits)`` except for x - d_j in [-2^t, 0).
    """
    provider = crypten.mpc.get_default_provider()
    if not hasattr(provider, "dcf_rng"):
        raise RuntimeError(f"the {type(provider).__name__} provider has no DCF keys; use comparison='ring'")
    check_ring(ring_bits, drop_bits)
    shape = tuple(x._tensor.share.shape)
    share = x._tensor.share.reshape(-1)
    n = share.numel()
    payload = 2 if product else 1
    mat = provider.dcf_rng(n, ring_bits, drop_bits, payload)
    (c,) = yield [(SUM, share + mat.r)]
    rank = comm.get().get_rank()
    d = torch.tensor(list(shifts), dtype=torch.int64).view(-1, 1)
    p, low = _split_opened((c.view(1, -1) - d).numpy().view(U64), ring_bits, drop_bits)  # (J, n): c - d_j
    if is_offline():  # the planning dry run: the keys are zeros, skip the work
        g = torch.zeros((*low.shape, payload), dtype=torch.int64)
    else:
        g = torch.from_numpy(dcf.evaluate(rank, mat.keys, low).view(np.int64))
    flip = 1 - 2 * p
    bits = mat.m.view(1, -1) * flip + flip * g[..., 0] + (p if rank == 0 else 0)
    prods = None
    if product:
        rb = mat.rm.view(1, -1) * flip + p * mat.r.view(1, -1) + flip * g[..., 1]
        prods = c.view(1, -1) * bits - rb
        prods = prods.reshape(len(shifts), *shape)
    return bits.reshape(len(shifts), *shape), prods


def _like(share: torch.Tensor, x: MPCTensor) -> MPCTensor:
    return MPCTensor.from_shares(share, precision=int(round(math.log2(x.encoder.scale))))


def ltz(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 4) -> MPCTensor:
    """Shares (scale 1) of [x < 0]: one round. Exact unless -2^t <= x < 0 (ring units); valid for |x| <= 2^(n-1+t) - 2^t."""
    bits, _ = run_one(sign_steps(x, (0,), ring_bits, drop_bits))
    return MPCTensor.from_shares(bits[0], precision=0)


def relu_steps(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 4) -> Steps:
    """Step protocol of ``relu``."""
    _, prods = yield from sign_steps(x, (0,), ring_bits, drop_bits, product=True)
    return x - _like(prods[0], x)


def relu(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 4) -> MPCTensor:
    """ReLU(x) = x - x [x < 0] in ONE round (error <= 2^t ring units for x in [-2^t, 0))."""
    return run_one(relu_steps(x, ring_bits, drop_bits))


def relu_select_steps(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 4) -> Steps:
    """Step protocol: ReLU(x) = x - x [x < 0] in TWO rounds from a one-bit DCF key, 0.38x the dealer material.

    Round 1 opens c = x + r as ``sign_steps`` does; the one-bit key
    (``dcf.keygen_bit``: 2 (n - 7) + 3 words per value, the tree stopped 6 levels
    early, against 4 (n - 1) + 3 for the product gate's two payload words) gives XOR shares of
    u = [c_lo < alpha], so b = [x < 0] = p xor m xor u is XOR-shared locally
    (p public, m's XOR shares from the dealer). Round 2 selects: each party
    opens its share of b xor rho (rho a fresh dealer bit, XOR-shared), packed 64
    per word, so e = b xor rho is public and b = e + (1 - 2e) rho, and with the
    dealer's additive shares of rho and r rho,

        [b] = e + (1 - 2e) [rho],   [r b] = e [r] + (1 - 2e) [r rho],   x b = c [b] - [r b]

    (c public; x = c - r). The same window as the one-round gate: exact unless
    x in [-2^t, 0) ring units, valid for |x| <= ``valid_bound(n, t)``.

    What each party receives, and why it is uniform: round 1, c = x + r with r a
    fresh uniform mask on Z_2^64 (as ``sign_steps``); round 2, the peer's bits of
    b xor rho, uniform because rho = rho_0 xor rho_1 is a fresh dealer bit that
    the receiver knows only half of (its own rho_i; the peer's is the peer's PRG
    draw) and used nowhere else; offline, the key (pseudorandom alone) and on
    party 0 m xor m_1, rho - [rho]_1, r rho - [r rho]_1, each masked by a fresh
    PRG draw of party 1's. ``tests/security/test_uniformity.py`` checks both
    openings ("select").

    Costs: 2 rounds; online 8 bytes per value and party, plus one bit; dealer
    2 (n - 7) + 6 words to party 0 and 2 (n - 7) + 3 to party 1 (n = 20: 32 and
    29, against 81 and 79: 0.38x); a party's evaluation walks n - 7 levels of one
    AES block and one leaf block per value (against n - 1 levels of 2).
    """
    provider = crypten.mpc.get_default_provider()
    if not hasattr(provider, "select_rng"):
        raise RuntimeError(f"the {type(provider).__name__} provider has no DCF keys; use comparison='ring'")
    check_ring(ring_bits, drop_bits)
    shape = tuple(x._tensor.share.shape)
    share = x._tensor.share.reshape(-1)
    n = share.numel()
    mat = provider.select_rng(n, ring_bits, drop_bits)
    (c,) = yield [(SUM, share + mat.r)]
    rank = comm.get().get_rank()
    p, low = _split_opened(c.numpy().view(U64), ring_bits, drop_bits)
    if is_offline():  # the planning dry run: the keys are zeros, skip the work
        u = torch.zeros(n, dtype=torch.int64)
    else:
        u = torch.from_numpy(dcf.evaluate_bit(rank, mat.seed, mat.words, ring_bits - 1, low[None])[0].view(np.int64))
    b = u ^ mat.m ^ (p if rank == 0 else 0)  # this party's XOR share of [x < 0]
    (opened,) = yield [(XOR, pack_bits(b ^ mat.rho))]
    e = unpack_bits(opened, n)
    flip = 1 - 2 * e
    bits = flip * mat.rho_a + (e if rank == 0 else 0)
    rb = e * mat.r + flip * mat.rrho
    prods = c * bits - rb  # x [x < 0]
    return x - _like(prods.reshape(shape), x)


def relu_select(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 4) -> MPCTensor:
    """ReLU(x) in TWO rounds with 0.38x the dealer material of ``relu`` (``relu_select_steps``)."""
    return run_one(relu_select_steps(x, ring_bits, drop_bits))


def max_rows(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 4) -> MPCTensor:
    """max over the last dim (keepdim) by a pairwise tree, m = a - (a - b) [a - b < 0]: one round per level.

    ceil(log2 N) rounds. The result is one of the row's values, within 2^t ring
    units of the maximum (a near tie may pick the smaller).
    """
    return max_tree(x, lambda a, b: max_pair(a, b, ring_bits, drop_bits))


def max_pair(a: MPCTensor, b: MPCTensor, ring_bits: int = 32, drop_bits: int = 4) -> MPCTensor:
    """One level of the max tree, a - (a - b) [a - b < 0]: one round."""
    diff = a - b
    _, prods = run_one(sign_steps(diff, (0,), ring_bits, drop_bits, product=True))
    return a - _like(prods[0], diff)


def above(x: MPCTensor, thresholds: Sequence[float], ring_bits: int = 32, drop_bits: int = 2,
          product: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shares of [x >= t_j] (scale 1, shape (J, *x.shape)) for public real thresholds t_j, and x [x >= t_j]: ONE round.

    [x >= t] = 1 - [x < t]; x [x >= t] = x - x [x < t]. Exact unless x lies within
    2^(t-f) below a threshold; valid for |x - t_j| <= 2^(n-1+t-f) - 2^(t-f) (``valid_bound``).
    """
    scale = x.encoder.scale
    shifts = [int(round(t * scale)) for t in thresholds]
    bits, prods = run_one(sign_steps(x, shifts, ring_bits, drop_bits, product=product))
    one = 1 if comm.get().get_rank() == 0 else 0
    ge = one - bits
    ge_x = None if prods is None else x._tensor.share.unsqueeze(0) - prods
    return ge, ge_x
