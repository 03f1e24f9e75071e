"""Shares of the argmax (and of the top K indices) of shared logits: what a ``label`` / ``topk:K`` answer reveals.

Protocol (``argmax_steps``). A tournament over the last dim, adjacent pairs
(2j, 2j + 1) per level, an odd one out at the end waiting for the next
level, each entry carrying a *payload*: its index (or its one-hot row for
``topk``). Per level, for each pair (a, i_a), (b, i_b):

* d = a - b (local); ONE DCF sign gate (``protocols.sign.sign_steps``,
  payload 2) gives shares of the bit s = [d < 0] and of d s in one opening;
* the winner's value a - d s is local (it is exactly one of the pair's
  values: no truncation, no approximation);
* the winner's payload i_a + s (i_b - i_a): at the first level i_a, i_b are
  public (the leaves' indices), so it is local; at later levels it is ONE
  Beaver product of the shared bit s (scale 1) and the shared i_b - i_a
  (scale 1; exact on the ring), run in the same round as the NEXT level's
  sign gate (``protocols.lockstep.parallel``): it does not need that level's
  values, only its bits.

Rounds: L + 1 for L = ceil(log2 C) levels (the last level's payload product
has nothing to ride on); C = 10: 5. Online bytes per row and party:
8 (C - 1) for the C - 1 sign gates and 16 P per payload product after the
first level (P = 1 for an index, C for a one-hot row); C = 10, index:
9 x 8 + 4 x 16 = 136 bytes. Offline per row: C - 1 DCF keys on a 31-bit
domain with payload 2 (``dcf.key_words(31, 2)`` = 127 words each, to each
party) plus 2 words of [m], [m r] corrections, and one Beaver triple per
payload product (party 0's correction).

Ties and exactness: the gate runs on the ring ``ARGMAX_RING`` = (32 bits, 0
dropped), so [d < 0] is exact for |d| <= 2^31 - 1 ring units (2^15 at 16
fraction bits; ``sign.valid_bound``); on a tie (d = 0) the lower index wins,
and since every entry holds a contiguous block of indices with a's block
below b's, the result is the FIRST index of the maximum, as ``torch.argmax``
of the fixed-point logits.

``topk`` runs K argmaxes: after each but the last the found entry is pushed
down by ``MASK_OUT`` ring units (its one-hot payload times a public constant:
local), so the next argmax finds the next one. Rounds K (L + 1); valid while
the logits span at most 2^30 ring units (2^14 at 16 fraction bits).

What each party receives, and why it is uniform: only openings of the
existing kinds. Each sign gate opens c = d + r with r uniform on Z_2^64 from
the dealer (the other half of r is the peer's PRG draw, unknown to the
receiver): uniform whatever d is. Each payload product opens s - a and
(i_b - i_a) - b with a, b the fresh Beaver masks of the batch PRG: uniform.
Nothing else is exchanged; the bits, the winners' values and the payloads
stay shared. ``tests/security/test_uniformity.py`` (kind ``argmax``) checks
the received words statistically.

What the client receives: each party's share of the K indices, re-randomised
by a pseudo-random zero sharing (``rerandomise``: CrypTen's PRZS under the
session's fresh pairwise keys) so that each share alone is uniform and their
sum is the index; nothing of the logits.
"""

from __future__ import annotations

import math

import torch

from protocols import compare, ops, sign
from protocols.crypten_compat import crypten
from protocols.lockstep import Steps, parallel, run_one

import crypten.communicator as comm  # noqa: E402  (after the compat shim)
from crypten.mpc import MPCTensor  # noqa: E402

ARGMAX_RING = (32, 0)  # (ring bits, dropped bits) of the sign gate: exact for |a - b| < 2^31 ring units
MASK_OUT = 1 << 29  # ring units a found entry is pushed down by in ``topk``


def _prec(x: MPCTensor) -> int:
    return int(round(math.log2(x.encoder.scale)))


def _gate_steps(d: torch.Tensor, prec: int) -> Steps:
    """Shares of s = [d < 0] (scale 1) and of d s (d's scale) for the int64 shares ``d``.

    The dealer's one-round DCF gate where it is in effect (``ops.fss_fits``); else the ring circuit's
    arithmetic bit and one Beaver product (more rounds; the TFP provider and the "ring" / "crypten" configs).
    """
    x = MPCTensor.from_shares(d, precision=prec)
    if ops.fss_fits(int(d.numel())):
        bits, prods = yield from sign.sign_steps(x, (0,), *ARGMAX_RING, product=True)
        return bits[0], prods[0]
    bit = yield from compare.ltz_steps(x, *ARGMAX_RING)
    (prod,) = yield from ops.beaver_steps([("mul", bit, x)])
    return bit._tensor.share, prod._tensor.share


def _select_steps(bit: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor, odd: torch.Tensor) -> Steps:
    """Shares of pa + s (pb - pa) for shared bits s (one per pair) and shared payloads: ONE Beaver product.

    Everything is at scale 1, so the product is exact on the ring. ``odd`` (the odd one out) is appended.
    """
    s = MPCTensor.from_shares(bit.unsqueeze(-1).expand_as(pa).contiguous(), precision=0)
    diff = MPCTensor.from_shares((pb - pa).contiguous(), precision=0)
    (prod,) = yield from ops.beaver_steps([("mul", s, diff)])
    return torch.cat([pa + prod._tensor.share, odd], dim=-2)


def argmax_steps(x: MPCTensor, onehot: bool = False) -> Steps:
    """Step protocol: shares (int64, scale 1) of the argmax over the last dim of ``x``: shape (*lead, 1),
    or with ``onehot`` its one-hot row (*lead, C). Rounds ceil(log2 C) + 1 (see the module docstring)."""
    rank = comm.get().get_rank()
    prec = _prec(x)
    v = x._tensor.share
    lead, C = tuple(v.shape[:-1]), int(v.shape[-1])
    leaves = torch.eye(C, dtype=torch.int64) if onehot else torch.arange(C, dtype=torch.int64).view(C, 1)
    public = leaves.expand(*lead, *leaves.shape)  # the leaves' payloads, known to both parties
    pay = public.clone() if rank == 0 else torch.zeros_like(public)  # as shares: party 0 holds them
    first = True
    pending: tuple[torch.Tensor, ...] | None = None
    while v.shape[-1] > 1:
        n = int(v.shape[-1])
        h = n // 2
        a, b, v_odd = v[..., 0 : 2 * h : 2], v[..., 1 : 2 * h : 2], v[..., 2 * h :]
        protocols = [_gate_steps((a - b).contiguous(), prec)]
        if pending is not None:
            protocols.append(_select_steps(*pending))
        results = yield from parallel(*protocols)
        bit, prod = results[0]
        if pending is not None:
            pay = results[1]
        v = torch.cat([a - prod, v_odd], dim=-1)
        pa, pb, p_odd = pay[..., 0 : 2 * h : 2, :], pay[..., 1 : 2 * h : 2, :], pay[..., 2 * h :, :]
        if first:  # the leaves' payloads are public: i_a + s (i_b - i_a) is local
            pub = public[..., : 2 * h, :]
            step = bit.unsqueeze(-1) * (pub[..., 1::2, :] - pub[..., 0::2, :])
            pay = torch.cat([pa + step, p_odd], dim=-2)
            first = False
        else:
            pending = (bit, pa, pb, p_odd)
    if pending is not None:
        pay = yield from _select_steps(*pending)
    return pay[..., 0, :]


def argmax(x: MPCTensor) -> torch.Tensor:
    """Shares (int64, scale 1, shape (*lead,)) of the first index of the maximum over the last dim."""
    return run_one(argmax_steps(x))[..., 0]


def topk(x: MPCTensor, k: int) -> torch.Tensor:
    """Shares (int64, scale 1, shape (*lead, k)) of the indices of the k largest values over the last dim, largest
    first (ties: the lower index first). Rounds k (ceil(log2 C) + 1)."""
    C = int(x.size(-1))
    if not 1 <= k <= C:
        raise ValueError(f"topk needs 1 <= k <= {C}, got {k}")
    prec = _prec(x)
    v = x._tensor.share
    found = []
    for i in range(k):
        if i == k - 1:
            found.append(run_one(argmax_steps(MPCTensor.from_shares(v, precision=prec)))[..., 0])
            break
        hot = run_one(argmax_steps(MPCTensor.from_shares(v, precision=prec), onehot=True))  # (*lead, C)
        found.append((hot * torch.arange(C, dtype=torch.int64)).sum(-1))
        v = v - hot * MASK_OUT  # the found entry drops below every other one (a public multiple of a share: local)
    return torch.stack(found, dim=-1)


def rerandomise(shares: torch.Tensor) -> torch.Tensor:
    """``shares`` plus this party's half of a pseudo-random zero sharing (no communication; the session's PRZS keys).

    After it each party's share alone is uniform on Z_2^64, and the two still add up to the same value.
    """
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor

    zero = ArithmeticSharedTensor.PRZS(tuple(shares.shape)).share
    return shares + zero
