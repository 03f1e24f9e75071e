"""Secure ops on CrypTen MPC tensors: batched Beaver products, the attentions, norms and activations.

Every op takes and returns ``crypten.mpc.MPCTensor`` (arithmetic shares of
fixed-point values, scale 2^f). "Rounds" below are the communicator's
collective calls of one op on party 0, the same for any batch size; c(x) is
the rounds of one comparison ``x < 0``: 1 with the dealer's DCF sign gate
(``protocols.sign``, the default ``comparison = "fss"``), 6-7 with the
small-ring circuit (``protocols.compare.ltz``: 6 rounds on 16 bits, 7 on
32), 8 with CrypTen's 64-bit circuit; r_exp, r_rec, r_isqrt are the rounds
of the iterative approximations configured in ``protocols.config``.

Rounds per op at the defaults (fss) and with ``SecureConfig.circuits()``:
LayerNorm 5 / 14 (15 before its last Newton step was folded; 3 with
``fold_products``, and LayerNorm + the linear after it 3 instead of 6:
``layernorm_linear``), ReLU 1 / 7,
softmax's max over N 7 levels x 1 / 7 x 7 (N = 65), the reciprocal 4 / 10,
GeLU 4 / 6, a linear layer 1 / 1 (with its weight's mask opened once at
model load under fss: the activation's mask only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from protocols import compare, sign
from protocols.config import current_config
from protocols.lockstep import SUM, Steps, parallel, run, run_one
from protocols.crypten_compat import crypten
from protocols.ring import ring_matmul

import crypten.communicator as comm  # noqa: E402  (after the compat shim)
from crypten.mpc import MPCTensor  # noqa: E402

Product = tuple[str, MPCTensor, MPCTensor]  # ("matmul" | "mul", x, y)


# -- Beaver products ------------------------------------------------------------
def beaver_products(items: Sequence[Product]) -> list[MPCTensor]:
    """Several independent products x_i * y_i (elementwise "mul" or "matmul") in ONE round.

    Math (Beaver): with a triple [a], [b], [c = a . b] from the provider, both
    parties open eps = x - a and delta = y - b (all items' eps and delta in
    one batched all_reduce: 1 round, 2 (|x| + |y|) ring elements per party),
    then locally

        [z] = [c] + eps . [b] + [a] . delta + eps . delta   (party 0 adds eps . delta)

    computed as party 0: c_0 + eps . b_0 + (a_0 + eps) . delta and party 1:
    c_1 + eps . b_1 + a_1 . delta (2 ring products each, ``ring_matmul`` for
    matmul), and z / 2^f by local truncation of each share (CrypTen's 2PC
    truncation: error <= 1 ulp except with probability |z| / 2^63).
    Rounds: 1.
    """
    return run_one(beaver_steps(items))


def beaver_steps(items: Sequence[Product]) -> Steps:
    """Step protocol of ``beaver_products`` (for ``protocols.lockstep.run`` beside other protocols)."""
    if not items:
        return []
    provider = crypten.mpc.get_default_provider()
    bits = current_config().lower_bits
    full = 2 ** crypten.cfg.encoder.precision_bits
    triples = []
    masked: list[torch.Tensor] = []
    items = list(items)
    for i, (op, x, y) in enumerate(items):
        if op not in ("mul", "matmul"):
            raise ValueError(f"unknown product {op!r}")
        if op == "matmul" and x.encoder.scale == full and y.encoder.scale == full:
            y = lower(y, bits)  # an attention product: see ``lower``
            items[i] = (op, x, y)
        a, b, c = provider.generate_additive_triple(x.size(), y.size(), op, device=None)
        triples.append((a.share, b.share, c.share))
        masked += [x._tensor.share - a.share, y._tensor.share - b.share]
    opened = yield [(SUM, t) for t in masked]
    rank = comm.get().get_rank()
    out = []
    for i, ((op, x, y), (a, b, c)) in enumerate(zip(items, triples)):
        eps, delta = opened[2 * i], opened[2 * i + 1]
        f = ring_matmul if op == "matmul" else torch.mul
        z = c + f(eps, b) + f(a + eps if rank == 0 else a, delta)
        out.append(_rescale(z, x, y))
    return out


def square_steps(xs: Sequence[MPCTensor], lowered: bool = False) -> Steps:
    """Step protocol: [x^2] for each x in one round with the provider's square pairs (r, r^2).

    Math: open eps = x - r (1 ring element per value and party, half a Beaver
    product's), x^2 = r^2 + 2 eps r + eps^2 (party 0 adds eps^2), then local truncation.
    With ``lowered`` each x is first taken to 2^(f - lower_bits) (``lower``), so
    the square is truncated from 2^(2f - 2 lower_bits): 2^(2 lower_bits) times
    less likely to fail (``square``); the GeLU polynomial (coefficients up to
    53) and ``exp_nonpositive`` need every bit and keep x as it is.
    """
    provider = crypten.mpc.get_default_provider()
    if lowered:
        xs = [lower(x, current_config().lower_bits) for x in xs]
    pairs = [provider.square(x.size()) for x in xs]
    opened = yield [(SUM, x._tensor.share - r.share) for x, (r, _) in zip(xs, pairs)]
    rank = comm.get().get_rank()
    out = []
    for x, (r, r2), eps in zip(xs, pairs, opened):
        z = r2.share + 2 * eps * r.share
        if rank == 0:
            z = z + eps * eps
        out.append(_rescale(z, x, x))
    return out


def _rescale(z: torch.Tensor, x: MPCTensor, y: MPCTensor) -> MPCTensor:
    """Shares of a product at scale s_x s_y -> an MPCTensor at scale 2^f (local truncation; kept if s_x s_y <= 2^f).

    The truncation fails (an error of about 2^(64 - f) ulp) when the two
    shares of z wrap around 2^64: probability |z| / 2^64 for z in ring units,
    which is why the products' operands are lowered (``lower``) where they can be.
    """
    sx, sy = x.encoder.scale, y.encoder.scale
    full = 2 ** crypten.cfg.encoder.precision_bits
    scale = min(sx * sy, full)
    divisor = (sx * sy) // scale
    if divisor > 1:
        z = z.div_(divisor, rounding_mode="trunc")
    bits = int(round(math.log2(scale)))
    return MPCTensor.from_shares(z, precision=bits)


def truncate_shares(share: torch.Tensor, divisor: "int | torch.Tensor") -> torch.Tensor:
    """Each party's share of z divided by a public divisor (per element where a tensor), rounding to zero.

    The local truncation of the ops that scale shares themselves (``range_start``'s lines,
    ``gelu_spline``'s coefficients): it fails as ``_rescale``'s does, with probability |z| / 2^64
    for z in ring units. Kept as one function so that ``protocols.probe`` measures these sites too.
    """
    return share.div(divisor, rounding_mode="trunc")


def lower(x: MPCTensor, bits: int) -> MPCTensor:
    """x at scale 2^(f - bits) instead of 2^f: a local truncation of each share (no communication).

    Why: a product of x and y at scales 2^f each is truncated from 2^(2f),
    and that local truncation fails with probability |x y| 2^(2f) / 2^64 per
    element (the catastrophic error of CrypTen-style 2PC truncation). With x
    lowered, the product is truncated from 2^(2f - bits): 2^bits times less
    likely to fail, at the cost of x's resolution (2^-(f - bits)). Lowering
    itself truncates x 2^f, failing with probability |x| 2^f / 2^64 (2^-48 |x|
    at f = 16): negligible. Which operand of each product is lowered is listed
    in ``protocols.config`` (``lower_bits``). bits <= 0 returns x unchanged.
    """
    if bits <= 0:
        return x
    prec = int(round(math.log2(x.encoder.scale)))
    if prec - bits < 1:
        raise ValueError(f"cannot lower a value at scale 2^{prec} by {bits} bits")
    return MPCTensor.from_shares(truncate_shares(x._tensor.share, 2**bits), precision=prec - bits)


def square(x: MPCTensor) -> MPCTensor:
    """[x^2] (x lowered first, see ``square_steps``). Rounds: 1."""
    return run_one(square_steps([x], lowered=True))[0]


def matmul(x: MPCTensor, y: MPCTensor) -> MPCTensor:
    """[x] @ [y] with the project's ring matmul. Rounds: 1."""
    return beaver_products([("matmul", x, y)])[0]


def linear(x: MPCTensor, weight_t: "MPCTensor | FixedWeight", bias: MPCTensor | None) -> MPCTensor:
    """[x] @ [W^T] + [b] on the last dimension (shared weight, shared bias). Rounds: 1.

    The activation x is lowered by ``lower_bits`` first (``lower``; the weights keep
    their 2^-f resolution, which matters more for them than for the activations).
    A ``FixedWeight`` (mask opened at model load) opens only the activation's mask.
    """
    *lead, cin = x.size()
    xl = lower(x.reshape(-1, cin), current_config().lower_bits)
    if isinstance(weight_t, FixedWeight):
        y = run_one(fixed_linear_steps(xl, weight_t))
    else:
        y = matmul(xl, weight_t)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, y.size(-1))


@dataclass
class FixedWeight:
    """A shared weight W (in, out) whose Beaver mask b is fixed for the model's lifetime (``linear``).

    ``mask``: this party's share b_i (from its model key, ``DealerProvider.weight_mask``);
    ``opened``: D = W - b, opened once at model load (``open_weight_masks``), public to both parties.
    """

    weight: MPCTensor
    model_id: int
    index: int
    mask: torch.Tensor
    opened: torch.Tensor


def open_weight_masks(weights: Sequence[tuple[MPCTensor, int, int]]) -> list[FixedWeight]:
    """At model load: for each (W, model id, index) open D = W - b with this party's fixed mask b_i: ONE round.

    What each party receives: the other's W_j - b_j, with b_j the other
    party's PRG output under its own model key (known to the dealer, never to
    the receiver): uniform, whatever W is. b is a one-time pad of W used
    exactly once (only D is ever revealed); every later product with W opens
    only x - a with a fresh a from the batch PRG (``linear``).
    """
    provider = crypten.mpc.get_default_provider()
    masks = [provider.weight_mask(model, index, tuple(w.size())) for w, model, index in weights]
    opened = run_one(_open_steps([w._tensor.share - b for (w, _, _), b in zip(weights, masks)]))
    return [FixedWeight(w, model, index, b, d) for (w, model, index), b, d in zip(weights, masks, opened)]


def _open_steps(values: Sequence[torch.Tensor]) -> Steps:
    opened = yield [(SUM, v) for v in values]
    return opened


def fixed_linear_steps(x: MPCTensor, fw: FixedWeight) -> Steps:
    """Step protocol: [x] @ W for a ``FixedWeight`` (2-d x): open only eps = x - a (fresh a), 1 round.

    Math: with the dealer's [a], [c = a b] for the fixed b (``fixed_triple``),
    x W = (eps + a)(D + b) = eps D + eps b + a D + a b, so party i's share is
    c_i + eps b_i + (a_i + eps) D (party 0) or c_i + eps b_i + a_i D (party 1):
    2 ring matmuls each, as a Beaver matmul, and |x| ring elements opened per
    party instead of |x| + |W|.
    """
    provider = crypten.mpc.get_default_provider()
    a, c = provider.fixed_triple(tuple(x.size()), tuple(fw.mask.shape), fw.model_id, fw.index)
    (eps,) = yield [(SUM, x._tensor.share - a)]
    left = a + eps if comm.get().get_rank() == 0 else a
    z = c + ring_matmul(eps, fw.mask) + ring_matmul(left, fw.opened)
    return _rescale(z, x, fw.weight)


def public_zeros(*size: int) -> MPCTensor:
    """Shares of zero (no communication): party 0 holds 0, party 1 holds 0."""
    return MPCTensor.from_shares(torch.zeros(size, dtype=torch.long), precision=crypten.cfg.encoder.precision_bits)


# -- comparisons -------------------------------------------------------------------
def effective() -> tuple[str, str, int]:
    """(comparison, range_start, inv_sqrt_iters) as run: with a provider that makes no DCF keys (CrypTen's TFP)
    "fss" runs the ring circuits, and a linear start a midpoint start with one more Newton step."""
    cfg = current_config()
    if cfg.comparison == "fss" and not hasattr(crypten.mpc.get_default_provider(), "dcf_rng"):
        return "ring", "step", cfg.inv_sqrt_iters + (cfg.range_start == "linear")
    return cfg.comparison, cfg.range_start, cfg.inv_sqrt_iters


def fss_fits(values: int) -> bool:
    """Whether a sign test on ``values`` values uses the DCF gate: fss is in effect and ``values <= fss_max_values``.

    Each value compared costs each party a DCF key (about 0.6 KB at the
    default rings) fetched before the forward, so the biggest tensors (the
    first levels of a long row's max tree, ReLU attention at N = 257) fall back
    to the ring circuits to bound the dealer's material; a shape-only rule, the
    same on both parties. Each such fallback is counted in ``GATE_FALLBACKS`` (this process), so a
    caller can tell that a batch ran partly on the circuits (``protocols.evaluate`` reports it).
    """
    global GATE_FALLBACKS
    if effective()[0] != "fss":
        return False
    if values > current_config().fss_max_values:
        GATE_FALLBACKS += 1
        return False
    return True


GATE_FALLBACKS = 0  # calls of ``fss_fits`` that fell back to the ring circuit (planning passes included)


def ltz(x: MPCTensor, use: str) -> MPCTensor:
    """Shares (scale 1) of [x < 0]; ``use`` ("gelu", "relu" or "range") picks the config's small ring.

    ``SecureConfig.comparison``: "fss" the dealer's one-round DCF sign gate
    (``protocols.sign``), "ring" the small-ring circuit (``protocols.compare``),
    "crypten" CrypTen's 64-bit circuit. Rounds: c(x).
    """
    cfg, kind = current_config(), effective()[0]
    if kind == "crypten":
        return x._ltz()
    if kind == "fss" and fss_fits(x.nelement()):
        return sign.ltz(x, *getattr(cfg, f"{use}_compare"))
    return compare.ltz(x, *getattr(cfg, f"{use}_compare"))


def relu(x: MPCTensor, select: bool = False) -> MPCTensor:
    """ReLU(x) = x - [x < 0] x. Rounds: 1 with "fss" (the product comes out of the sign gate), c(x) with "ring".

    ``select``: with "fss", the two-round gate of ``sign.relu_select`` (a one-bit DCF key and a select round:
    0.38x the dealer material and half the AES per level of the one-round gate), for the ReLU-softmax heads.
    """
    cfg, kind = current_config(), effective()[0]
    if kind == "crypten":
        return x.relu()
    if kind == "fss" and fss_fits(x.nelement()):
        if select:
            return sign.relu_select(x, *cfg.relu_compare)
        return sign.relu(x, *cfg.relu_compare)
    return compare.relu(x, *cfg.relu_compare)


def max_last(x: MPCTensor) -> MPCTensor:
    """max over the last dim (keepdim) by a pairwise tree. Rounds: ceil(log2 N) (fss), ceil(log2 N) c(x) (ring)."""
    cfg, kind = current_config(), effective()[0]
    if kind == "crypten":
        return x.max(-1, keepdim=True)[0]
    if kind != "fss":
        return compare.max_rows(x, *cfg.relu_compare)

    def level(a: MPCTensor, b: MPCTensor) -> MPCTensor:  # the DCF gate where the level fits, else the circuit
        if fss_fits(a.nelement()):
            return sign.max_pair(a, b, *cfg.max_compare)
        return compare.max_pair(a, b, *cfg.relu_compare)

    return compare.max_tree(x, level)


# -- reciprocal and inverse square root with a range-finding start ---------------------
START_FUNCTIONS = {"reciprocal": lambda t: 1.0 / t, "inv_sqrt": lambda t: t**-0.5}
SLOPE_BITS = 11  # significant bits of each bucket's slope multiplier
LINEAR_QUANTISATION = 2.0**-6  # a bucket is linear only where x's resolution costs < this relative error


@lru_cache(maxsize=None)
def start_table(name: str, lo: int, hi: int, per: int, frac_bits: int, extra_bits: int = 0,
                window_bits: int = -1, slope_bits: int = SLOPE_BITS) -> tuple[list[int], list[int], list[int]]:
    """Per bucket k = 0 .. K (K = (hi - lo) per thresholds t_j = 2^(lo + j / per)): (A_k, M_k, S_k) of y = A + (M x) / 2^S.

    Bucket 0 is x < t_0 and bucket K is x >= t_(K-1) (to 2^hi); bucket k in
    between is [t_(k-1), t_k). Each bucket's line is the chord of f scaled by
    2 / (2 + delta), delta the chord's largest relative excess over the
    bucket (f convex), so its relative error is within +-delta / (2 + delta);
    A_k is its intercept at scale 2^f, M_k / 2^S_k its slope with
    ``SLOPE_BITS`` significant bits. Where x's own resolution 2^-f times the
    slope would exceed ``LINEAR_QUANTISATION`` of f (the lowest octaves of
    1/x and 1/sqrt(x)), the bucket is a step at f of its geometric middle (M = 0).
    x is at scale 2^frac_bits; y comes out at 2^(frac_bits + extra_bits) (A_k at
    that scale, M_k / 2^S_k the slope times 2^extra_bits): ``layernorm_linear``
    takes its 1/sqrt with 4 more bits than x has. ``window_bits`` t >= 0 fits
    each line k >= 1 over [t_(k-1) - 2^(t - frac_bits), t_k] instead of its
    bucket (the sign gate with t dropped bits may put x that far below t_(k-1)
    into bucket k), and bucket 0 then takes line 1 too: x within the window below
    t_0 falls into bucket 0 or 1 by the gate's chance, and with bucket 0 at
    f(2^(lo - 1/(2 per))) the two answers differed by up to 1/(4 per) relative
    (2.2 % at per = 8: a nearly constant LayerNorm row whose v sat just below
    2^-8 was off by 0.03 in about a third of runs); line 1 continued below t_0
    also stays nearer f, convex and decreasing, than any constant.
    ``slope_bits`` replaces ``SLOPE_BITS``. The defaults are the
    table of ``reciprocal_nr`` and ``inv_sqrt_nr``.
    """
    f = START_FUNCTIONS[name]
    k_count = (hi - lo) * per
    edges = [2.0 ** (lo + j / per) for j in range(k_count)] + [2.0**hi]
    scale = 2**frac_bits
    out = 2.0 ** (frac_bits + extra_bits)
    amps, mults, shifts = [int(round(f(2.0 ** (lo - 0.5 / per)) * out))], [0], [0]
    for k in range(1, k_count + 1):
        a, b = edges[k - 1], edges[k]
        if window_bits >= 0:  # the gate may put x up to 2^(window_bits - f) below t_(k-1) into bucket k
            a = max(a - 2.0 ** (window_bits - frac_bits), a / 2)
        slope = (f(b) - f(a)) / (b - a)
        if abs(slope) / scale > LINEAR_QUANTISATION * min(abs(f(a)), abs(f(b))):
            amps.append(int(round(f(math.sqrt(a * b)) * out)))
            mults.append(0)
            shifts.append(0)
            continue
        grid = torch.linspace(a, b, 257, dtype=torch.float64)
        chord = f(a) + slope * (grid - a)
        delta = float((chord / f(grid) - 1).abs().max())
        shrink = 2.0 / (2.0 + delta)
        intercept, slope = (f(a) - slope * a) * shrink, slope * shrink * 2**extra_bits
        shift = max(0, slope_bits - 1 - math.floor(math.log2(abs(slope))))
        amps.append(int(round(intercept * out)))
        mults.append(int(round(slope * 2**shift)))
        shifts.append(shift)
    if window_bits >= 0:  # x just below t_0 lands in bucket 0 or 1 by the gate's chance: both take line 1
        amps[0], mults[0], shifts[0] = amps[1], mults[1], shifts[1]
    return amps, mults, shifts


def range_start(x: MPCTensor, lo: int, hi: int, name: str, per: int | None = None,
                ring: tuple[int, int] | None = None, extra_bits: int = 0, fit_window: bool = False,
                slope_bits: int = SLOPE_BITS) -> MPCTensor:
    """A start y0 ~ f(x) (f = 1/x or 1/sqrt(x), ``name``) for x in [2^lo, 2^hi] from ONE batched comparison.

    Thresholds t_j = 2^(lo + j/p), p = ``per`` (default ``range_per_octave``), j = 0 .. (hi - lo) p - 1,
    compared on ``ring`` (default ``range_compare``). The linear start can
    come out with ``extra_bits`` more fraction bits than x (``start_table``),
    fit each bucket's line over the gate's window below its lower threshold
    (``fit_window``: 2^(t - f) for t dropped bits, see ``layernorm_linear``)
    and keep ``slope_bits`` significant bits of each slope.

    * ``range_start = "linear"`` (needs ``comparison = "fss"``): the sign gate
      gives [x >= t_j] and x [x >= t_j] in its one round, so the bucket
      indicators e_k = [x >= t_(k-1)] - [x >= t_k] and x e_k are local, and
      y0 = sum_k e_k A_k + sum_k trunc((x e_k) M_k / 2^S_k) is the piecewise-
      linear start of ``start_table``: with p = 2 within 1.6 % of 1/sqrt(x)
      (1/x: 2.2 %) where x's resolution allows (above about 2^-10), within f(2^(1/(2p)))
      below. Only the bucket holding x has a non-zero x e_k, so the other
      terms truncate shares of zero, which is exact; the one that does not
      carries the usual local-truncation risk of its value, |x M_k| 2^f / 2^64.
    * ``"step"``: y0 = f(m_0) + sum_j [x > t_j] (f(m_(j+1)) - f(m_j)), m_j the
      geometric middle of bucket j: within f(2^(1/(2p))) of the truth, with any comparison.

    Rounds: c(x) (one comparison; 1 with fss).
    """
    cfg = current_config()
    kind, start, _ = effective()
    per = cfg.range_per_octave if per is None else per
    ring = cfg.range_compare if ring is None else ring
    scale_bits = crypten.cfg.encoder.precision_bits
    exps = [lo + j / per for j in range((hi - lo) * per)]
    rank = comm.get().get_rank()
    view = (-1, *([1] * x.dim()))
    if kind == "fss" and start == "linear":
        table = start_table(name, lo, hi, per, scale_bits, extra_bits, ring[1] if fit_window else -1, slope_bits)
        amps, mults, shifts = (torch.tensor(v, dtype=torch.long).view(view) for v in table)
        ge, ge_x = sign.above(x, [2.0**e for e in exps], *ring, product=True)
        first = torch.full_like(ge[:1], 1 if rank == 0 else 0)
        ge = torch.cat([first, ge, torch.zeros_like(first)])
        ge_x = torch.cat([x._tensor.share.unsqueeze(0), ge_x, torch.zeros_like(first)])
        e, ex = ge[:-1] - ge[1:], ge_x[:-1] - ge_x[1:]
        share = (e * amps).sum(0) + truncate_shares(ex * mults, 2**shifts).sum(0)
        return MPCTensor.from_shares(share, precision=scale_bits + extra_bits)
    if extra_bits or fit_window:
        raise ValueError("extra_bits and fit_window need the linear start (comparison fss)")
    f = START_FUNCTIONS[name]
    if kind == "fss":
        ge, _ = sign.above(x, [2.0**e for e in exps], *ring)
    else:
        ge = ltz(crypten.stack([float(2.0**k) - x for k in exps]), "range")._tensor.share  # (K, ...) 1 where x > t_j
    mids = [f(2.0 ** (lo + (j - 0.5) / per)) for j in range(len(exps) + 1)]
    steps = torch.tensor([mids[i + 1] - mids[i] for i in range(len(exps))], dtype=torch.float64).view(view)
    scale = 2**scale_bits
    share = (ge * torch.round(steps * scale).long()).sum(0)  # local: public integers times bit shares
    if rank == 0:
        share = share + int(round(mids[0] * scale))
    return MPCTensor.from_shares(share, precision=scale_bits)


def reciprocal_nr(x: MPCTensor, lo: int = -12, hi: int = 12, iters: int = 2) -> MPCTensor:
    """1 / x for x in [2^lo, 2^hi]: range start, then Goldschmidt's form of Newton's iteration.

    Math: e_0 = 1 - x y_0 (1 round), then per step y <- y (1 + e), e <- e^2
    (both products in one round), so y_n = y_0 (1 + e_0) ... (1 + e_0^(2^(n-1)))
    = (1 - e_0^(2^n)) / x: the same values as Newton's y (2 - x y) in 1 round
    per step instead of 2. With 2 thresholds per octave |e_0| <= 2^(1/4) - 1 = 0.19:
    0.19 -> 0.036 -> 1.3e-3 -> 1.7e-6. Rounds: c(x) + 1 + iters.
    """
    y = range_start(x, lo, hi, "reciprocal")
    return _goldschmidt(y, 1.0 - x * y, iters)


def _goldschmidt(p: MPCTensor, e: MPCTensor, iters: int) -> MPCTensor:
    """p (1 + e)(1 + e^2) ... (1 + e^(2^(iters-1))): per step p <- p + p e and e <- e^2 in one round (no e^2 in the last).

    p + p e, not p (1 + e): the same opening and the same ulp, but the local truncation
    fails with probability |p e| 2^(2f) / 2^64 instead of |p (1 + e)| 2^(2f) / 2^64, and
    |e| <= 2.2 % after the linear start: about 45x fewer catastrophic errors at the
    step's site (``benchmarks/numeric_safety.py``; with ``times_reciprocal`` p has the
    numerator's size, 100,000 values a forward at 7_4_32).
    """
    for i in range(iters):
        if i == iters - 1:
            (pe,) = beaver_products([("mul", p, e)])
        else:
            pe, e = beaver_products([("mul", p, e), ("mul", e, e)])
        p = p + pe
    return p


def inv_sqrt_nr(x: MPCTensor, lo: int = -14, hi: int = 14, iters: int = 2) -> MPCTensor:
    """1 / sqrt(x) for x in [2^lo, 2^hi]: range start, then Newton y <- y (3 - x y^2) / 2.

    Starts (``range_start``): linear within 1.6 % (p = 2), or midpoints within
    2^(1/8) (e = 0.09). Relative error e -> 3 e^2 / 2: 0.016 -> 3.9e-4 -> 2e-7;
    0.09 -> 0.012 -> 2.2e-4. Rounds: c(x) + 3 iters (``layernorm`` folds the last step into its product).
    """
    y = range_start(x, lo, hi, "inv_sqrt")
    for _ in range(iters):
        y = y * (3.0 - (x * y) * y) * 0.5  # (x y) y keeps more bits than x (y^2) for small y
    return y


# -- normalisations of attention scores --------------------------------------------
def softmax_rows(s: MPCTensor) -> MPCTensor:
    """softmax(s) over the last dim: e = exp(s - max_j s), e / sum_j e.

    max by a pairwise tree (``max_last``: ceil(log2 N) levels, each c(x)), exp as (1 + x / 2^k)^(2^k)
    (``exp_nonpositive``, k = exp_iterations rounds),
    1 / sum by ``reciprocal_nr`` on [1/2, 2^(log2 N + 1)] (the sum lies in [1, N]),
    1 round for the product. Rounds: ceil(log2 N) c(x) + k + c(x) + 1 + r + 1 (r = ``reciprocal_iters``).
    """
    e = exp_nonpositive(s - max_last(s))
    n = int(s.size(-1))
    cfg = current_config()
    if cfg.fold_products and effective()[1] == "linear":  # the sum lies in [1, n e^shortfall]: the linear start's part
        if folds(e):
            return times_reciprocal(e, e.sum(-1, keepdim=True), lo=-1, hi=softmax_sum_octaves(n), iters=1)
        return e * reciprocal_nr(e.sum(-1, keepdim=True), lo=-1, hi=softmax_sum_octaves(n), iters=1)
    return e * reciprocal_nr(e.sum(-1, keepdim=True), lo=-1, hi=softmax_sum_octaves(n), iters=cfg.reciprocal_iters)


def folds(num: MPCTensor) -> bool:
    """Whether a reciprocal's product with ``num`` is folded into Goldschmidt's steps (``times_reciprocal``).

    Folding saves a round but opens a num-sized tensor once more per step; a
    round is worth about 1 MB on the WAN link (20 ms at 400 Mbit/s) and far
    less on a LAN, so only tensors of at most ``fold_max_values`` values
    (2^17: 1 MiB per opening) fold: every attention of the 7_4_32 shape (at
    most 16,900 scores per call), none of the 257-token shape's (792,588).
    A shape-only rule, the same on both parties.
    """
    cfg = current_config()
    return cfg.fold_products and num.nelement() <= cfg.fold_max_values


def times_reciprocal(num: MPCTensor, den: MPCTensor, lo: int, hi: int, iters: int) -> MPCTensor:
    """num / den (den broadcast over num, den in [2^lo, 2^hi]) with the product folded into Goldschmidt's steps.

    Math: with the range start y_0 ~ 1 / den and e_0 = 1 - den y_0,
    num / den = num y_0 (1 + e_0)(1 + e_0^2) ... (1 - e_0^(2^n)); so P = num y_0
    is computed in the round of e_0 (both products of y_0 are independent),
    then each step multiplies P by (1 + e) (and squares e, but for the last):
    ``reciprocal_nr`` followed by a product takes one round more.
    Rounds: c(x) + 1 + iters. The relative error is that of ``reciprocal_nr``
    with the same start and steps: e_0^(2^iters) (linear start at 2 per
    octave: |e_0| <= 2.2 %, so 4.8e-4 after one step, 2.3e-7 after two), plus
    the products' truncations. The bytes: P has num's size, so each step
    opens num-sized tensors where ``reciprocal_nr`` opens den-sized ones.
    """
    y = range_start(den, lo, hi, "reciprocal")
    p, dy = beaver_products([("mul", num, y), ("mul", den, y)])
    return _goldschmidt(p, 1.0 - dy, iters)


def max_shortfall(n: int) -> float:
    """How far below the true maximum ``max_last`` may land on a row of n (real units): depth x the gate's window.

    Each level of the tree may keep the smaller of two values less than
    2^(t-16) apart (``sign.max_pair``), so after ceil(log2 n) levels the result
    is within that many windows of the maximum; 0 for the circuits (their
    error is on the other side, see ``compare.max_pair``), where it is 2^(t-16) at most per level too.
    """
    cfg = current_config()
    _, drop = cfg.max_compare if effective()[0] == "fss" else cfg.relu_compare
    return math.ceil(math.log2(max(n, 2))) * 2.0 ** (drop - crypten.cfg.encoder.precision_bits)


def softmax_sum_octaves(n: int) -> int:
    """log2 of the top of the softmax sum's reciprocal domain: sum exp(s - m) <= n e^(shortfall), plus one octave."""
    return max(2, math.ceil(math.log2(n) + max_shortfall(n) * math.log2(math.e)) + 1)


def exp_nonpositive(x: MPCTensor) -> MPCTensor:
    """exp(x) for x <= 0 as CrypTen's (1 + x / 2^n)^(2^n) (n = exp_iterations squarings), squaring offsets.

    Math: v_0 = 1 + x / 2^n, v_(k+1) = v_k^2, exp(x) ~ v_n. CrypTen squares
    v_k itself: each square is truncated from v_k^2 2^(2f), and with v_k near 1
    (x / 2^(n-k) small) every square risks the local truncation's failure
    (probability v_k^2 2^(2f) / 2^64). Here the squared quantity is
    u_k = v_k - c_k with a public offset: c_k = 1 (w = 1 - v: w' = 2 w - w^2) for
    k < n - 2 and c_k = 1/2 for the last two steps (v^2 = u^2 + u + 1/4, so
    u' = u^2 + u - 1/4); the linear parts are exact on the ring, so the values,
    rounds (n, one square each) and bytes are CrypTen's, but the truncated
    squares are small: |u_k| <= max(c_k, 1 - c_k) for v_k in [0, 1], and on the
    attention scores of the trained vit_4_4_28 the sum of u_k^2 is 20x smaller
    than that of v_k^2 (5.8 -> 0.29 per score; 0.5 when x ~ 0).
    Valid for x >= -2^(n+1) (like CrypTen's). With ``exp_offsets`` False, CrypTen's own exp.
    """
    cfg = current_config()
    if not cfg.exp_offsets:
        return x.exp()
    n = cfg.exp_iterations
    switch = max(n - 2, 0)
    w = (-x).div(2**n)  # 1 - v_0 >= 0; division by a public integer: truncation of |x| 2^f only
    u = None
    for k in range(n):
        if k < switch:
            (w2,) = run_one(square_steps([w]))
            w = w * 2 - w2
        else:
            if u is None:
                u = 0.5 - w
            (u2,) = run_one(square_steps([u]))
            u = u2 + u - 0.25
    return 1.0 - w if u is None else u + 0.5


def times_reciprocal_positive(num: MPCTensor, x: MPCTensor, scale: float = 1.0) -> MPCTensor:
    """num / x for x > 0 in [2^lo scale, 2^hi scale] (config: reciprocal_*): folded (``times_reciprocal``) when
    ``fold_products``, else ``num * reciprocal_positive(x, scale)``. Rounds: c(x) + 1 + iters (+ 1 unfolded)."""
    cfg = current_config()
    if not folds(num):
        return num * reciprocal_positive(x, scale)
    lo, hi = cfg.reciprocal_range
    if scale == 1.0:
        return times_reciprocal(num, x, lo, hi, cfg.reciprocal_iters)
    return _divide(times_reciprocal(num, _divide(x, scale), lo, hi, cfg.reciprocal_iters), scale)


def reciprocal_positive(x: MPCTensor, scale: float = 1.0) -> MPCTensor:
    """1 / x for x > 0 in [2^lo scale, 2^hi scale]: reciprocal_nr(x / scale) / scale (config: reciprocal_*).

    Rounds: c(x) + 1 + iters.
    """
    cfg = current_config()
    lo, hi = cfg.reciprocal_range
    if scale == 1.0:
        return reciprocal_nr(x, lo, hi, cfg.reciprocal_iters)
    return _divide(reciprocal_nr(_divide(x, scale), lo, hi, cfg.reciprocal_iters), scale)


def _divide(x: MPCTensor, d: float) -> MPCTensor:
    """x / d for a public d: a division of each share when d is an integer (truncating x 2^f, not x 2^(2f) / d)."""
    if float(d).is_integer() and d >= 1:
        return x.div(int(d)) if d > 1 else x
    return x * (1.0 / d)


def relu_rows(s: MPCTensor, eps: float) -> MPCTensor:
    """ReLU-softmax: r = ReLU(s), r / (sum_j r + eps). Rounds: c(x) (ReLU: 2 on the default select gate,
    ``relu_softmax_gate``) + r_rec + 1."""
    r = relu(s, select=current_config().relu_softmax_gate == "select")
    return times_reciprocal_positive(r, r.sum(-1, keepdim=True) + eps)


def quad_rows(s: MPCTensor, c: float) -> MPCTensor:
    """2Quad: q = (s + c)^2, q / sum_j q; the sum is divided by N (public) before Newton. Rounds: 1 + r_rec + 1."""
    q = square(s + c)
    n = s.size(-1)
    return times_reciprocal_positive(q, q.sum(-1, keepdim=True), scale=float(n))


def thex_rows(s: MPCTensor, order: int, eps: float) -> MPCTensor:
    """THE-X: e = ReLU(1 + s / n)^n (n = 2^k: ReLU then k squarings), e / (sum_j e + eps).

    Rounds: c(x) + log2(n) + r_rec + 1.
    """
    e = relu(_divide(s, order) + 1.0)
    for _ in range(int(math.log2(order))):
        e = square(e)
    n = s.size(-1)
    return times_reciprocal_positive(e, e.sum(-1, keepdim=True) + eps, scale=float(n))


# -- norms and activations ---------------------------------------------------------
LN_SLOPE_BITS = 14  # the fine start's slopes (11 bits added ~2e-4 to its error)


def folds_layernorm() -> bool:
    """Whether LayerNorm takes the fine start with no Newton step and folds 1/sigma into the next linear:
    ``fold_products`` with the fss linear start in effect (otherwise, e.g. under TFP, today's ``layernorm``)."""
    kind, start, _ = effective()
    return current_config().fold_products and kind == "fss" and start == "linear"


def _centred(x: MPCTensor) -> MPCTensor:
    """xk = k (x - mean) over the last dim, k = ``ln_prescale``: local (a sum, a division by C, an integer multiple)."""
    c = x.size(-1)
    xc = x - _divide(x.sum(-1, keepdim=True), c)
    return xc * current_config().ln_prescale  # integer multiple of a share: exact, no truncation


def _fine_inv_sqrt(xk2: MPCTensor, eps: float, extra_bits: int | None = None) -> MPCTensor:
    """y ~ 1 / sqrt(var' + k^2 eps) from the squares of xk (ONE round: the sign gate of the fine start).

    y comes out at scale 2^(f + lower_bits) (``start_table``'s extra bits): y is
    as small as 2^-7 at the top of ``ln_range``, where 2^-f would cost 2e-3 of
    it. See ``layernorm_linear`` for the start's error.
    """
    cfg = current_config()
    k = cfg.ln_prescale
    v = _divide(xk2.sum(-1, keepdim=True), xk2.size(-1)) + eps * k**2
    return range_start(v, *cfg.ln_range, "inv_sqrt", per=cfg.ln_per_octave, ring=cfg.ln_compare,
                       extra_bits=cfg.lower_bits if extra_bits is None else extra_bits, fit_window=True,
                       slope_bits=LN_SLOPE_BITS)


def layernorm(x: MPCTensor, eps: float) -> MPCTensor:
    """(x - mean) / sqrt(var + eps) over the last dim; gamma and beta are folded into the next linear.

    mean and centring are local; the centred values are multiplied by the public
    integer k = ``ln_prescale`` (exact, local) before squaring, so var' = k^2 var keeps 4 more
    bits; LN = k xc / sqrt(var' + k^2 eps) with the range start of ``inv_sqrt_nr`` over
    ``inv_sqrt_range`` and ``inv_sqrt_iters`` Newton steps, the last folded into the output:
    with a = v y, b = (xk) y (round A, one batched product), c = a y (round B),
    LN = b (3 - c) / 2 (round C), which is xk times Newton's y (3 - v y^2) / 2
    without its own product. The square and b take xk lowered by ``lower_bits`` (``lower``).
    Rounds: 1 (square) + c(x) + 3 (iters - 1) + 3: 5 with the fss sign gate and 1 step (was 15).

    With ``fold_products`` (and the fss linear start; ``folds_layernorm``) no
    Newton step: the fine start y of ``layernorm_linear`` and one product
    LN = lower(xk) y (y at 2^(f + lower_bits), xk at 2^(f - lower_bits): truncated
    from 2^(2f), as the Newton form's output product). Rounds: 3 (square, gate,
    product); used where no linear follows directly (``pool = "avg"`` before the mean).
    """
    cfg = current_config()
    if folds_layernorm():
        xk = _centred(x)
        (xk2,) = run_one(square_steps([xk], lowered=True))
        y = _fine_inv_sqrt(xk2, eps)
        return beaver_products([("mul", lower(xk, cfg.lower_bits), y)])[0]
    c, k = x.size(-1), cfg.ln_prescale
    xc = x - _divide(x.sum(-1, keepdim=True), c)
    xk = xc * k  # integer multiple of a share: exact, no truncation
    var = _divide(square(xk).sum(-1, keepdim=True), c)
    v = var + eps * k**2
    y = inv_sqrt_nr(v, *cfg.inv_sqrt_range, iters=effective()[2] - 1)
    a, b = beaver_products([("mul", v, y), ("mul", lower(xk, cfg.lower_bits), y)])
    (c3,) = beaver_products([("mul", a, y)])
    return beaver_products([("mul", b, (3.0 - c3).div(2))])[0]


LN_FOLD_SPLIT = 2  # layernorm_linear's y at 2^(f + 2), z at 2^(f - 2): see its docstring


def layernorm_linear(x: MPCTensor, eps: float, weight_t: "MPCTensor | FixedWeight",
                     bias: MPCTensor | None) -> MPCTensor:
    """``linear(layernorm(x, eps), weight_t, bias)`` in 3 rounds (6 unfolded) with ``fold_products``.

    Math: LN(x) W + b = y (xk W) + b with xk = k (x - mean) (local, k =
    ``ln_prescale``) and y = 1 / sqrt(var' + k^2 eps), var' = mean(xk^2), a scalar per
    row, so 1/sigma can be applied after the linear:

    * round 1: xk^2 (``square_steps``) and z = xk W (``linear``'s form: xk
      lowered by ``lower_bits``; a ``FixedWeight`` opens only xk's mask) share the round;
    * round 2: y from ONE sign gate, no Newton step (``_fine_inv_sqrt``):
      ``ln_per_octave`` = 8 linear pieces per octave of v = var' + k^2 eps over
      ``ln_range`` = [2^-8, 2^14] (var in [2^-12, 2^10] at k = 4) on ring ``ln_compare``;
    * round 3: one Beaver "mul" of y (rows, 1) by lower(z) (rows, out), broadcast
      (the triple is a (rows, 1), b (rows, out), c = a b), plus the bias.

    The start's error (each bucket's chord scaled by 2 / (2 + delta), slopes
    with 14 significant bits, y at 2^-(f + lower_bits); measured on the ring
    values of v, every gate offset below: ``test_ops.test_fine_start_table_error``):
    relative 3.7e-4 to 4.2e-4 over v in [2^-5, 2^12] (the chords' own bound
    is delta / (2 + delta) = 3.5e-4; 11-bit slopes gave 5.6e-4), 4.4e-4 and
    5.4e-4 in the top two octaves (y's own resolution 2^-20 there).
    The gate's window: with t dropped bits the gate compares x + r_lo with
    each threshold, r_lo < 2^(t - f) the mask's low bits (one r_lo for all
    thresholds of a value, so the bits stay monotone: ``protocols.sign``), so a
    value within 2^(t - f) below t_j takes a line of a bucket above its own.
    That costs little where buckets are wider than the window: each scaled
    chord is within delta / (2 + delta) of f at both its ends, so neighbouring
    lines nearly meet, and a line followed a distance h past its end adds only
    f'' h (h + width) / 2. Each line is therefore fitted over
    [t_(j-1) - 2^(t - f), t_j] (``start_table``'s window), which also covers the
    narrow buckets at the bottom. Measured with ``ln_compare`` (28, 4) (window
    2^-12): 4.2e-4 for v in [2^-5, 2^-4], 4.9e-4 in [2^-6, 2^-5], 6.5e-4 in
    [2^-7, 2^-6], 1.1e-3 in [2^-8, 2^-7] (fitted over the bucket alone: 6.0e-4,
    8.2e-4, 1.5e-3, 3.1e-3). With (26, 6) (window 2^-10, buckets narrower than
    it below v = 2^-6.5): 6.5e-4, 1.1e-3, 2.1e-3, 5.9e-3 (unfitted 1.6e-3,
    3.3e-3, 7.6e-3, 2.0e-2); at and above 2^-2 the window makes no difference.
    At k = 4, v = 16 var + 1.6e-4: var = 1e-2 is v = 2^-2.6, var = 4e-4 is 2^-7.2.
    Below 2^-8 (var < 2.4e-4: a nearly constant row) y is the lowest line continued
    (``start_table``: 0.1 % off at 2^-8, 12 % low at 2^-9, 32 % at 2^-10, where bucket 0's
    constant was 2.2 %, 28 % and 49 % off; the committed checkpoints' smallest v is 0.07);
    above 2^14 (var > 1024) the last line goes on, below 1/sqrt(v) (1.3 % at
    v = 1.13 2^14): unlike the Newton form, nothing corrects it.

    Truncation safety (local truncation fails with probability |value| / 2^64 per
    element in ring units, ``_rescale``): z = xk W is k sigma times the
    unfolded linear's output LN(x) W, truncated from the same 2^(2f - 4), so it
    fails k sigma times as often (|z| 2^-36 per element); the last product is
    truncated from 2^(2f) (y at 2^(f + 2), z lowered to 2^(f - 2), ``LN_FOLD_SPLIT``): |LN(x) W| 2^-32
    per element, as the unfolded LayerNorm's own last product (|LN(x)| 2^-32).
    The split of those 2f bits: y's 2^-(f + 2) matters at large var (y = 1/(4 sigma)
    down to 2^-7: 2^-11 of it at the top of ``ln_range``), z's 2^-(f - 2) at small var
    (z = 4 sigma LN(x) W, y = 1/(4 sigma)): on a nearly constant row (sigma = 0.02,
    the class token of a random model's first block) the output's error was 4.1e-3
    with 4 and 4 bits (y at 2^(f + 4), z at 2^(f - 4)) and is 1.3e-3 or so with 2 and 2,
    against 1.6e-3 for the unfolded LayerNorm and linear; the start's own
    per-row truncation (x e_k) M_k / 2^S_k is of v 2^f M_k < v 2^30: 2^-20 per row at v = 2^14.
    The gate's keys: ``ln_compare`` (28, 4) has 27 DCF levels, 111 words per row and party.
    Without ``folds_layernorm`` (TFP, or ``fold_products`` False): the unfolded ops.
    """
    if not folds_layernorm():
        return linear(layernorm(x, eps), weight_t, bias)
    bits = current_config().lower_bits
    *lead, cin = x.size()
    xk = _centred(x).reshape(-1, cin)
    xl = lower(xk, bits)  # both the square's and the linear's operand (square_steps' lowered=True is this)
    if isinstance(weight_t, FixedWeight):
        (xk2,), z = run(square_steps([xl]), fixed_linear_steps(xl, weight_t))
    else:
        (xk2,), (z,) = run(square_steps([xl]), beaver_steps([("matmul", xl, weight_t)]))
    split = LN_FOLD_SPLIT  # y keeps `split` extra bits and z drops as many: the product is truncated from 2^(2f)
    y = _fine_inv_sqrt(xk2, eps, extra_bits=split)  # (rows, 1)
    (out,) = beaver_products([("mul", y, lower(z, split))])
    if bias is not None:
        out = out + bias
    return out.reshape(*lead, out.size(-1))


def gelu_erf(x: MPCTensor) -> MPCTensor:
    """x / 2 (1 + erf(x / sqrt 2)) with CrypTen's Taylor erf. Diverges for |x| > ~2 (kept for comparison)."""
    return x * (x * (1.0 / math.sqrt(2.0))).erf().add(1.0).mul(0.5)


GELU_T = 4.0
GELU_DEGREE = 7
GELU_GRID = 8  # c_1 .. c_7 are multiples of 2^-8


@lru_cache(maxsize=None)
def gelu_coefficients(t: float = GELU_T, degree: int = GELU_DEGREE, grid: int = GELU_GRID) -> tuple[float, ...]:
    """Least-squares fit of q(x) = (x / 2) erf(x / sqrt 2) on [0, t] as a polynomial in v = (x / t)^2.

    c_1 .. c_degree lie on the grid 2^-grid (c_degree rounded first, the lower
    ones refitted each time), so ``times_public`` multiplies by them at scale
    2^(f + grid), not 2^(2f): the products' truncations fail 2^(f - grid) times
    less often. Max error on [0, 4]: 5.0e-4 (unconstrained: 5.0e-4). c_0 is added, not multiplied.
    """
    x = torch.linspace(0.0, t, 4001, dtype=torch.float64)
    return _grid_fit((x / t) ** 2, x / 2 * torch.special.erf(x / math.sqrt(2.0)), degree, grid)


def _grid_fit(v: torch.Tensor, target: torch.Tensor, degree: int, grid: int) -> tuple[float, ...]:
    """Least squares of ``target`` as a polynomial in ``v`` with c_1 .. c_degree on the grid 2^-grid.

    c_degree is rounded first, the lower ones refitted each time (c_0 stays free: it is added, not multiplied).
    """
    A = torch.stack([v**k for k in range(degree + 1)], dim=1)
    fixed: dict[int, float] = {}
    for top in range(degree, -1, -1):
        free = [k for k in range(degree + 1) if k not in fixed]
        rhs = target - sum((c * v**k for k, c in fixed.items()), torch.zeros_like(target))
        sol = dict(zip(free, torch.linalg.lstsq(A[:, free], rhs.unsqueeze(1)).solution.squeeze(1).tolist()))
        fixed[top] = sol[top] if top == 0 else round(sol[top] * 2**grid) / 2**grid
    return tuple(fixed[k] for k in range(degree + 1))


def times_public(x: MPCTensor, c: float, grid: int = GELU_GRID) -> MPCTensor:
    """x c for a public c on the grid 2^-grid: x's shares times the integer c 2^grid, then a division by 2^grid.

    CrypTen's x * c encodes c at 2^f and truncates x c 2^(2f); this truncates
    x c 2^(f + grid) (the same value when c is on the grid), 2^(f - grid) times less likely to fail.
    """
    n = c * 2**grid
    if n != int(n):
        raise ValueError(f"{c} is not a multiple of 2^-{grid}")
    prec = int(round(math.log2(x.encoder.scale)))
    return MPCTensor.from_shares(x._tensor.share * int(n), precision=prec).div(2**grid)  # shares at 2^(prec+grid)


def gelu_poly_steps(x: MPCTensor) -> Steps:
    """Step protocol: p(v), v = x^2 / T^2, the degree-7 GeLU polynomial, in 4 rounds and 7 ring elements per value.

    Paterson-Stockmeyer split p = (c0 + c1 v + c2 v^2 + c3 v^3) + v^4 (c4 + c5 v + c6 v^2 + c7 v^3):
    round 1 x^2 (square), round 2 v^2 (square), round 3 v^3 = v v^2 and v^4 = (v^2)^2,
    round 4 v^4 times the second cubic. Outside |x| <= T the value is garbage, removed exactly by ``gelu``'s selection.
    """
    c = gelu_coefficients()
    (x2,) = yield from square_steps([x])
    v = x2.div(int(GELU_T**2))
    (v2,) = yield from square_steps([v])
    (v3,), (v4,) = yield from parallel(beaver_steps([("mul", v, v2)]), square_steps([v2]))
    t = times_public
    (hi,) = yield from beaver_steps([("mul", v4, t(v, c[5]) + t(v2, c[6]) + t(v3, c[7]) + c[4])])
    return t(v, c[1]) + t(v2, c[2]) + t(v3, c[3]) + c[0] + hi


def gelu(x: MPCTensor) -> MPCTensor:
    """GeLU as x/2 + q(x), q(x) = (x/2) erf(x/sqrt 2), an even function with q(x) -> |x|/2 for |x| >= T.

    Math: gelu(x) = x Phi(x) = x/2 + (x/2) erf(x / sqrt 2). On |x| <= T = 4, q is
    a degree-7 polynomial p in v = x^2 / T^2 (least squares, max error 5e-4);
    beyond, q = |x|/2 (error < 1.3e-4). With b = [x > T] and b' = [x < -T]
    (one batched comparison of the stacked tensor), q = p + b (x/2 - p) + b' (-x/2 - p);
    the selection is exact on the ring, so p's value outside [-T, T] cancels.
    The comparison's sign bits and the polynomial (``gelu_poly_steps``) are
    independent and share their rounds (``protocols.lockstep``); the selection
    takes the bits as they are (``protocols.compare.bitmul_steps``, 1 round).
    Rounds: max(c(x) - 1, 4) + 1: 6 with the default 16-bit comparison.
    Measured against torch's erf GeLU on [-8, 8]: max error 1.2e-3 at 16 fraction bits
    (CrypTen's Taylor erf: 1.9 at x = -2, 700 at x = -3).
    """
    half = x.div(2)  # a division of the shares (truncating x 2^f), not a product with 0.5 (x 2^(2f))
    test = crypten.stack([GELU_T - x, x + GELU_T])  # [x > T], [x < -T] as [. < 0]
    if current_config().comparison == "crypten":
        outside, p = test._ltz(), run_one(gelu_poly_steps(x))
        (sel,) = beaver_products([("mul", outside, crypten.stack([half - p, -half - p]))])
    else:
        bits, p = run(compare.msb_steps(test, *current_config().gelu_compare), gelu_poly_steps(x))
        sel = run_one(compare.bitmul_steps(bits, crypten.stack([half - p, -half - p])))
    return half + p + sel[0] + sel[1]


@lru_cache(maxsize=None)
def gelu_gap_coefficients(t: float = GELU_T, degree: int = GELU_DEGREE, grid: int = GELU_GRID) -> tuple[float, ...]:
    """Least-squares fit of the gap d(w) = relu(w) - gelu(w) = w Phi(-w) on w in [0, t], as a polynomial in u = w / t.

    c_1 .. c_degree on the grid 2^-grid (c_degree rounded first, the lower ones
    refitted each time; see ``gelu_coefficients``). Max error on [0, 4]: 5.2e-4;
    P(1) = -7e-5, and d(4) = 1.3e-4, so clamping w at t costs at most 2e-4 beyond.
    """
    w = torch.linspace(0.0, t, 4001, dtype=torch.float64)
    return _grid_fit(w / t, w * 0.5 * (1 - torch.special.erf(w / math.sqrt(2.0))), degree, grid)


def gelu_fss(x: MPCTensor) -> MPCTensor:
    """GeLU(x) = ReLU(x) - d(min(|x|, T)) with d(w) = w Phi(-w) a degree-7 polynomial in u = w / T: 4 rounds.

    Math: ONE sign gate on x with the shifts 0, T, -T (``sign.sign_steps``,
    payload 2) gives b_0 = [x < 0], b_+ = [x < T], b_- = [x < -T] and x times
    each; then, locally, ReLU(x) = x - x b_0 and the clamped magnitude
    w = min(|x|, T) = -2 x b_0 + x b_+ + x b_- + T (1 - b_+ + b_-) (for x > T all
    bits are 0 and w = T; for 0 <= x < T, w = x; for -T <= x < 0, w = -x; below
    -T, w = T). GeLU = ReLU(x) - d(|x|) exactly (d is even in x), d(w) -> 0 fast
    (d(4) = 1.3e-4), and the fit P (``gelu_gap_coefficients``) has P(1) = -7e-5, so
    the clamp needs no selection afterwards. P(u) = A(u) + u^4 B(u) with cubics
    A, B: round 2 u^2, round 3 u^3 and u^4, round 4 u^4 B(u). Every power of u
    lies in [0, 1], so the truncations are small. Ring ``gelu_gate`` (24, 6):
    valid for |x| <= 2^13 - T - 2^-10 (each shifted x -+ T within ``sign.valid_bound``),
    error <= 2^-10 where x is within 2^-10 below 0 or +-T.
    Rounds: 4 (the circuits' ``gelu``: 6); ring elements opened per value and
    party: 1 (the gate) + 1 + 3 + 2 = 7 (``gelu``: about 9.3).
    Measured against torch's erf GeLU on [-8, 8]: ``tests/protocols/test_ops.py``.
    """
    rank = comm.get().get_rank()
    scale = x.encoder.scale
    t_ring = int(GELU_T * scale)
    bits, prods = run_one(sign.sign_steps(x, (0, t_ring, -t_ring), *current_config().gelu_gate, product=True))
    xs = x._tensor.share
    relu_share = xs - prods[0]
    outside = -bits[1] + bits[2] + (1 if rank == 0 else 0)  # [|x| >= T]
    w_share = -2 * prods[0] + prods[1] + prods[2] + outside * t_ring
    prec = int(round(math.log2(scale)))
    u = MPCTensor.from_shares(w_share, precision=prec).div(int(GELU_T))  # in [0, 1]
    c = gelu_gap_coefficients()
    t = times_public
    (u2,) = run_one(square_steps([u]))
    (u3,), (u4,) = run(beaver_steps([("mul", u, u2)]), square_steps([u2]))
    (hi,) = beaver_products([("mul", u4, t(u, c[5]) + t(u2, c[6]) + t(u3, c[7]) + c[4])])
    gap = t(u, c[1]) + t(u2, c[2]) + t(u3, c[3]) + c[0] + hi
    return MPCTensor.from_shares(relu_share, precision=prec) - gap


SPLINE_KNOTS = (-5.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 5.5)  # GeLU's buckets: 0 below -5, x from 5.5
SPLINE_LOWER = 2  # x^2 of the spline is taken from x lowered by this many bits (``lower``)
SPLINE_CENTRE_GRID = 4  # the cubics' centres m_j are multiples of 2^-4: sum m_j x e_j is truncated from 2^(f + 4)
SPLINE_SLOPE_GRID = 14  # b_j and d_j, which multiply z_j, are multiples of 2^-14: truncated from 2^(f + 14)


def _gelu_float(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1 + torch.special.erf(x / math.sqrt(2.0)))


@lru_cache(maxsize=None)
def gelu_spline_pieces(window: float, knots: tuple[float, ...] = SPLINE_KNOTS) -> tuple[tuple[float, ...], ...]:
    """Per inner bucket [k_(j-1), k_j): (centre m, a, b, c, d) of GeLU ~ a + b z + c z^2 + d z^3, z = x - m.

    Each cubic is fitted near-minimax (iteratively reweighted least squares) on
    [k_(j-1) - window, k_j], not on the bucket alone: the sign gate may read x
    up to ``window`` below a knot as above it (``sign.sign_steps``), and then
    the bucket above evaluates x, so its cubic must hold there too. m is the
    middle of that interval on a grid of 2^-``SPLINE_CENTRE_GRID``, so |z| <= 1.375 + 2^-5
    and the coefficients stay small.
    Max error over the fitted intervals: ``gelu_spline_error``.
    """
    pieces = []
    for lo, hi in zip(knots[:-1], knots[1:]):
        lo -= window
        m = round((lo + hi) / 2 * 2**SPLINE_CENTRE_GRID) / 2**SPLINE_CENTRE_GRID
        x = torch.linspace(lo, hi, 3001, dtype=torch.float64)
        z = x - m
        basis = torch.stack([z**k for k in range(4)], dim=1)
        weight = torch.ones_like(x)
        for _ in range(60):
            coef = torch.linalg.lstsq(basis * weight[:, None], (_gelu_float(x) * weight).unsqueeze(1)).solution.squeeze(1)
            err = (basis @ coef - _gelu_float(x)).abs()
            weight = weight * (err / err.max() + 1e-3) ** 0.5
            weight = weight / weight.max()
        pieces.append((m, *coef.tolist()))
    return tuple(pieces)


def gelu_spline_error(window: float) -> float:
    """The largest |cubic - GeLU| of ``gelu_spline_pieces(window)`` over every fitted interval (float64)."""
    worst = 0.0
    for (lo, hi), (m, *coef) in zip(zip(SPLINE_KNOTS[:-1], SPLINE_KNOTS[1:]), gelu_spline_pieces(window)):
        x = torch.linspace(lo - window, hi, 5001, dtype=torch.float64)
        z = x - m
        worst = max(worst, float((sum(c * z**k for k, c in enumerate(coef)) - _gelu_float(x)).abs().max()))
    return worst


def gelu_spline(x: MPCTensor) -> MPCTensor:
    """GeLU as a cubic spline selected by ONE sign gate: 2 rounds, 4 ring elements opened per value and party.

    Math. The gate (``sign.sign_steps``, payload 2) on x with the 9 knots
    k_j of ``SPLINE_KNOTS`` as shifts gives b_j = [x < k_j] and x b_j from one
    opening of x + r; in the same round x^2 is squared (x lowered by
    ``SPLINE_LOWER`` bits). Locally: bucket indicators e_0 = b_0 (x < -5:
    GeLU ~ 0), e_j = b_j - b_(j-1), e_9 = 1 - b_8 (x >= 5.5: GeLU ~ x), and
    x e_j likewise; with z_j = x e_j - m_j e_j (x - m_j in bucket j, else 0),

        GeLU = sum_inner (a_j e_j + b_j z_j) + x e_9 + S Q,
        S = x^2 - 2 sum_inner m_j x e_j + sum_inner m_j^2 e_j   (= (x - m_j)^2 in bucket j),
        Q = sum_inner (c_j e_j + d_j z_j)                       (0 outside the inner buckets),

    and round 2 is the one Beaver product S Q. Outside the inner buckets Q is
    exactly 0, so the product is exactly 0 whatever S (up to one ulp of
    truncation). Only one bucket's terms are non-zero, so the truncations of
    the others are truncations of shares of zero (exact). The local truncations
    fail with probability |value| / 2^64 (``_rescale``), so the public factors
    that multiply shares of x-sized values sit on coarse grids: m_j on 2^-4
    (``SPLINE_CENTRE_GRID``; sum m_j x e_j truncated from 2^(f + 4), at most
    2^-39 per value, was 2^-27 with m_j at 2^-f) and b_j, d_j on 2^-14
    (``SPLINE_SLOPE_GRID``: |b| < 1.2, so 2^-35 per value; the grid's rounding adds
    at most 2^-15 (1.41 + 1.41 |S|) < 1.3e-4 to the error). ``benchmarks/numeric_safety.py``
    measures every site (``protocols.probe``).

    The gate's window. With t dropped bits the bit [x < k_j] may read 0 for x
    within 2^(t-16) below k_j (``sign.sign_steps``); the knots are at least 1
    apart, so at most one bit is off and x lands in the bucket just above,
    whose cubic was fitted down to k - window (``gelu_spline_pieces``). So the
    gate can drop many bits: ``gelu_spline_gate`` (10, 14) is 9 DCF levels
    (window 1/4), valid for |x - k_j| <= 128 - 2^-2 (``sign.valid_bound``), that is
    |x| <= 122.25, 8.7x the largest GeLU input of the committed checkpoints (14.0
    measured; 12.15 certified for every image, ``results/numeric_safety.md``).
    Beyond, the bits are garbage: ``gelu_fss`` (valid to 8188) is the choice for
    a model whose GeLU inputs may be larger.

    Error: the fit, ``gelu_spline_error(1/4)`` = 8.5e-4, plus the grids' 1.3e-4, plus x^2's resolution
    (2^-14 after lowering: |S| error <= 2 |x| 2^-14, times |Q| <= 0.4) and a few ulps;
    ``tests/protocols/test_ops.py`` measures it against torch's erf GeLU.

    What each party receives: the gate's c = x + r (uniform: r is a fresh
    uniform mask, ``protocols.sign``), the square's x' - r' and the product's
    S - a, Q - b (uniform: a, b, r' are fresh masks from the batch PRG,
    one-time pads of the secrets). ``tests/security/test_uniformity.py`` checks
    the spline's openings ("spline").

    Dealer material per value: one DCF key pair of 9 levels with payload 2
    (39 words per party), party 0's corrections of [m], [m r], r'^2 and the
    product's c (4 words): 82 words (656 bytes), against 196 words for
    ``gelu_fss`` on (24, 6) with its products.
    """
    rank = comm.get().get_rank()
    scale = x.encoder.scale
    prec = int(round(math.log2(scale)))
    ring_bits, drop = current_config().gelu_spline_gate
    window = 2.0 ** (drop - prec)
    pieces = gelu_spline_pieces(window)
    shifts = [int(round(k * scale)) for k in SPLINE_KNOTS]
    (bits, prods), (x2,) = run(sign.sign_steps(x, shifts, ring_bits, drop, product=True),
                               square_steps([lower(x, SPLINE_LOWER)]))
    one = torch.ones_like(bits[:1]) if rank == 0 else torch.zeros_like(bits[:1])
    e = torch.cat([bits[:1], bits[1:] - bits[:-1], one - bits[-1:]])  # (J + 1, ...) one-hot buckets
    xe = torch.cat([prods[:1], prods[1:] - prods[:-1], x._tensor.share.unsqueeze(0) - prods[-1:]])
    inner_e, inner_xe = e[1:-1], xe[1:-1]
    view = (-1, *([1] * (e.dim() - 1)))
    coef = torch.tensor([p for p in pieces], dtype=torch.float64)  # (J - 1, 5): m, a, b, c, d
    m_ring = torch.round(coef[:, 0] * scale).long().view(view)
    z = inner_xe - m_ring * inner_e  # x - m_j in bucket j (scale 2^f), else 0
    fix = lambda col, grid=prec: torch.round(coef[:, col] * 2**grid).long().view(view)  # noqa: E731
    g_m, g_s = SPLINE_CENTRE_GRID, SPLINE_SLOPE_GRID
    linear = (fix(1) * inner_e).sum(0) + truncate_shares((fix(2, g_s) * z).sum(0), 2**g_s) + xe[-1]
    mx = truncate_shares((fix(0, g_m) * inner_xe).sum(0), 2**g_m)  # sum m_j x e_j (scale 2^f)
    m2 = (torch.round(coef[:, 0] ** 2 * scale).long().view(view) * inner_e).sum(0)
    s_share = x2._tensor.share - 2 * mx + m2
    q_share = (fix(3) * inner_e).sum(0) + truncate_shares((fix(4, g_s) * z).sum(0), 2**g_s)
    S = MPCTensor.from_shares(s_share, precision=prec)
    Q = MPCTensor.from_shares(q_share, precision=prec)
    (sq,) = beaver_products([("mul", S, Q)])
    return MPCTensor.from_shares(linear, precision=prec) + sq


# -- GeLU from one opening and trigonometric material (no comparison) ------------------
FOURIER_PERIOD_BITS = 6  # the series' period P = 2^6 = 64 (real units): a power of two, so x mod P is x + r mod P minus r mod P
FOURIER_STEP = 2  # odd harmonics only, k = 1, 3, ..., 31: psi(x + P/2) = -psi(x), so the fit holds on nearly half the period
FOURIER_RANGE = 24.0  # the fit holds for |x| <= 24 (``gelu_fourier_error``); it degrades beyond (3e-3 at 28) and fails by 32
FOURIER_MARGIN = 1.05  # a layer runs it only where the owner's certified bound times this is <= FOURIER_RANGE
# Phi(x) - 1/2 = erf(x / sqrt 2) / 2 ~ sum_j b_j sin(2 pi k_j x / P), k_j = 1, 3, ..., 31: ``gelu_fourier_fit()``
# (Lawson's iteratively reweighted least squares for the smallest max |x| |error| on [-24, 24]), frozen here so that
# both parties (and every machine) use bit-identical public coefficients; ``tests/protocols/test_fourier.py`` refits them.
FOURIER_COEFFICIENTS = (
    0.633558592945, 0.203194611602, 0.112859486548, 0.071800154651, 0.047857074543, 0.032280740211,
    0.021657741153, 0.014315343649, 0.009265999308, 0.005842848265, 0.003569102827, 0.002106558492,
    0.001198640405, 0.000647510105, 0.00030506655, 0.000112838874,
)
FOURIER_LOWER = 2  # x of the product x psi is lowered by this many bits (``lower``): |x psi| <= 12 truncated from 2^30


def fourier_harmonics(count: int = len(FOURIER_COEFFICIENTS), step: int = FOURIER_STEP) -> list[int]:
    """The harmonics k_j = 1 + step j, j = 0..count - 1, of the series (odd ones with step 2)."""
    return [1 + step * j for j in range(count)]


def gelu_fourier_fit(count: int = len(FOURIER_COEFFICIENTS), bound: float = FOURIER_RANGE,
                     iterations: int = 200) -> tuple[float, ...]:
    """Refit ``FOURIER_COEFFICIENTS``: b_j minimising max over |x| <= bound of |x| |sum_j b_j sin(2 pi k_j x / P) - erf(x / sqrt 2) / 2|."""
    x = torch.linspace(-bound, bound, 60001, dtype=torch.float64)
    target = torch.special.erf(x / math.sqrt(2.0)) / 2
    basis = torch.stack([torch.sin(2 * math.pi * k * x / 2**FOURIER_PERIOD_BITS) for k in fourier_harmonics(count)], 1)
    scale = x.abs().clamp(min=1.0)
    weight = torch.ones_like(x)
    best: tuple[float, torch.Tensor] | None = None
    for _ in range(iterations):
        sw = weight.sqrt() * scale
        coef = torch.linalg.lstsq(basis * sw[:, None], (target * sw).unsqueeze(1)).solution.squeeze(1)
        err = (basis @ coef - target).abs() * x.abs()
        if best is None or float(err.max()) < best[0]:
            best = (float(err.max()), coef)
        weight = weight * (err / err.max() + 1e-3)
        weight = weight / weight.sum()
    assert best is not None
    return tuple(round(float(c), 12) for c in best[1])


def gelu_fourier_error(bound: float = FOURIER_RANGE, coefficients: tuple[float, ...] = FOURIER_COEFFICIENTS) -> float:
    """The largest |x (1/2 + sum_j b_j sin(2 pi k_j x / P)) - GeLU(x)| over |x| <= bound (float64; the fit alone)."""
    x = torch.linspace(-bound, bound, 40001, dtype=torch.float64)
    psi = sum(b * torch.sin(2 * math.pi * k * x / 2**FOURIER_PERIOD_BITS)
              for k, b in zip(fourier_harmonics(len(coefficients)), coefficients))
    return float((x * (0.5 + psi) - _gelu_float(x)).abs().max())


TRIG_BLOCK = 16_384  # values per block of the trigonometric tables (K x block float64 stays in cache)


def _harmonic_angles(v: torch.Tensor, harmonics: int, period_bits: int, step: int) -> torch.Tensor:
    """k_j theta (K, n) float64, theta = 2 pi (v mod 2^period_bits) / 2^period_bits, k_j = ``fourier_harmonics``."""
    theta = (v.reshape(-1) & ((1 << period_bits) - 1)).double() * (2 * math.pi / 2**period_bits)
    return torch.tensor(fourier_harmonics(harmonics, step), dtype=torch.float64).view(-1, 1) * theta.view(1, -1)


def _trig_blocks(v: torch.Tensor, harmonics: int, period_bits: int, step: int,
                 weights: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """(block, round(weights * [cos(k_j theta); sin(k_j theta)]) as int64 (2K, block)) over blocks of ``TRIG_BLOCK``
    values of v. ``weights`` (2K, 1) float64. Block by block, not the whole tensor at once: the same numbers, about
    5x faster on 605,184 values (the (2K, n) temporaries of a whole ViT-B/16 MLP layer are 155 MB each)."""
    v = v.reshape(-1)
    for i in range(0, v.numel(), TRIG_BLOCK):
        block = slice(i, min(i + TRIG_BLOCK, v.numel()))
        kt = _harmonic_angles(v[block], harmonics, period_bits, step)
        yield block, torch.cat([torch.cos(kt), torch.sin(kt)]).mul_(weights).round_().long()


def trig_table(r: torch.Tensor, harmonics: int, period_bits: int, frac_bits: int, step: int = 1) -> torch.Tensor:
    """round(2^frac [cos(k_j theta); sin(k_j theta)]) (2K, n) int64, k_j = 1 + step j (j < K), theta = 2 pi (r mod 2^period_bits) / 2^period_bits.

    The dealer's side of ``gelu_fourier`` (``protocols.providers``: the ``trig`` material): r is the
    mask of the opened value, in ring units, so theta is 2 pi r / P with P = 2^period_bits ring units.
    """
    out = torch.empty(2 * harmonics, r.numel(), dtype=torch.int64)
    weights = torch.full((2 * harmonics, 1), float(2**frac_bits), dtype=torch.float64)
    for block, table in _trig_blocks(r, harmonics, period_bits, step, weights):
        out[:, block] = table
    return out


def fourier_phi_steps(x: MPCTensor) -> Steps:
    """Step protocol: shares of psi(x) = sum_j b_j sin(2 pi k_j x / P) (~ Phi(x) - 1/2) from ONE opening of x + r."""
    provider = crypten.mpc.get_default_provider()
    prec = int(round(math.log2(x.encoder.scale)))
    period_bits = FOURIER_PERIOD_BITS + prec
    k = len(FOURIER_COEFFICIENTS)
    shape = tuple(x._tensor.share.shape)
    share = x._tensor.share.reshape(-1)
    mat = provider.trig_rng(share.numel(), k, period_bits, prec, FOURIER_STEP)
    (c,) = yield [(SUM, share + mat.r)]
    b = torch.tensor(FOURIER_COEFFICIENTS, dtype=torch.float64).view(-1, 1) * 2**prec
    # sin(k (theta_c - theta_r)) = sin(k theta_c) cos(k theta_r) - cos(k theta_c) sin(k theta_r): the public factors
    # [-b_k cos(k theta_c); b_k sin(k theta_c)] at 2^f, the first half against the shares of sin(k theta_r) (cs[k:]),
    # the second against those of cos(k theta_r) (cs[:k])
    weights = torch.cat([-b, b])
    psi = torch.empty_like(share)
    for block, public in _trig_blocks(c, k, period_bits, FOURIER_STEP, weights):
        psi[block] = (public[:k] * mat.cs[k:, block]).sum(0) + (public[k:] * mat.cs[:k, block]).sum(0)
    return MPCTensor.from_shares(truncate_shares(psi, 2**prec).reshape(shape), precision=prec)


def gelu_fourier(x: MPCTensor) -> MPCTensor:
    """GeLU(x) = x / 2 + x psi(x), psi a 16-term sine series of period 64 from ONE opening: 2 rounds, no comparison.

    Math. Phi(x) - 1/2 = erf(x / sqrt 2) / 2 is odd and flat beyond |x| = 5, so on
    |x| <= 24 it equals a series of odd harmonics psi(x) = sum_j b_j sin(2 pi k_j x / P),
    k_j = 1, 3, ..., 31, P = 64 (``FOURIER_COEFFICIENTS``): odd harmonics make
    psi(x + 32) = -psi(x), so the series stays at +-1/2 from 5 to 27 and turns round
    only past 27. The dealer gives a mask r (uniform on Z_2^64) and shares of
    cos(k_j theta_r), sin(k_j theta_r), theta_r = 2 pi r / P (P = 2^(6 + f) ring
    units divides 2^64). The parties open c = x + r (round 1); theta_c - theta_r =
    2 pi x / P (mod 2 pi) exactly, so sin(k (theta_c - theta_r)) = sin(k theta_c)
    cos(k theta_r) - cos(k theta_c) sin(k theta_r) is a public combination of the
    shares: psi is local. Round 2 is one Beaver product, x (lowered by
    ``FOURIER_LOWER`` bits) times psi.

    Error, for |x| <= ``FOURIER_RANGE`` = 24: the fit, ``gelu_fourier_error()`` =
    4.7e-4, plus rounding: each of the 32 public factors b_j sin(k_j theta_c) and each
    shared cos / sin is rounded to 2^-17, so |psi error| <= 32 2^-17 (1 + 0.64) < 4e-4
    (about 2e-5 typically, the roundings being independent), times |x|, plus x's
    lowering (2^-14 |psi| <= 3.1e-5) and the product's ulp. Measured against torch's
    erf GeLU on 48,001 points, over 7 runs (fresh masks, so fresh roundings): 6.4-6.8e-4
    on |x| <= 4, 0.95-1.1e-3 on |x| <= 13, 1.8-2.1e-3 on |x| <= 24, 3.9e-4 RMS (the spline: 8.7e-4 on |x| <= 8). Beyond 24 the error grows
    (3e-3 at 28) and past 32 the series has turned round: the runtime uses this GeLU
    only on layers whose inputs the model owner certifies below 24 / ``FOURIER_MARGIN``,
    whatever the image (``runtime.certified_gelu_bounds``: |fc1(LN(x))_j| <= sqrt(C)
    |W'_j| + |b'_j|), and the spline (valid to 122) elsewhere. The local truncations:
    psi from 2^(2f) (|psi| <= 0.5, fails with probability <= 2^-33 per value), the
    product from 2^(2f - 2) (|x psi| <= 12: <= 2^-30.4, about 2^-35 at the typical |x| ~ 1).

    What each party receives: online c = x + r (uniform: r is a fresh uniform mask
    of the dealer's) and the Beaver product's x' - a, psi - b (one-time pads from the
    batch PRG); offline party 0 the 32 corrections T - t_1, uniform because each t_1 is
    a fresh PRG draw of party 1's used nowhere else; party 1 nothing but its key.
    ``tests/security/test_uniformity.py`` checks the openings ("fourier").

    Dealer material per value: 32 words (party 0 only) plus the product's 1 (33 words,
    264 bytes), against 82 for ``gelu_spline``; online 3 ring elements per value and
    party, against 4; no DCF evaluation (the spline's 9 x 9 AES walks).
    """
    psi = run_one(fourier_phi_steps(x))
    (xpsi,) = beaver_products([("mul", lower(x, FOURIER_LOWER), psi)])
    return x.div(2) + xpsi


def gelu_fourier_fits(x: MPCTensor) -> bool:
    """Whether ``gelu_fourier`` can run on x here: the provider makes trigonometric material and x has at most
    ``fourier_max_values`` values (a shape-only rule, the same on both parties).

    Its own cap, not ``fss_max_values``: a Fourier GeLU value costs 33 dealer words, to party 0 only, against
    about 160 (both parties) for a DCF gate's, so 2^21 values (553 MB of material in one call) bound a call's
    material as 300,000 DCF gates do (384 MB). ViT-B/16's MLP (197 x 3072 = 605,184 values per layer at batch 1)
    then runs it: 2 rounds per layer instead of the polynomial's 6 and 3 ring elements per value instead of 7."""
    return (hasattr(crypten.mpc.get_default_provider(), "trig_rng") and effective()[0] == "fss"
            and x.nelement() <= current_config().fourier_max_values)


def quad(x: MPCTensor) -> MPCTensor:
    """MPCFormer's Quad GeLU 0.125 x^2 + 0.25 x + 0.5. Rounds: 1."""
    return square(x).div(8) + x.div(4) + 0.5


def gelu_configured(x: MPCTensor) -> MPCTensor:
    """GeLU as ``SecureConfig.gelu`` says: "spline" (``gelu_spline``), "fss" (``gelu_fss``; the polynomial ``gelu``
    where the provider makes no DCF keys or the tensor is over ``fss_max_values``), "poly" (``gelu``) or "erf"
    (``gelu_erf``). "fourier" is ``gelu_fourier`` on the layers ``SecureViT`` certified, this (the spline) elsewhere."""
    kind = current_config().gelu
    if kind in ("spline", "fourier"):  # "fourier" runs here only on layers the owner did not certify (``SecureViT``)
        return gelu_spline(x) if fss_fits(x.nelement()) else gelu(x)
    if kind == "fss":
        return gelu_fss(x) if fss_fits(x.nelement()) else gelu(x)
    return gelu(x) if kind == "poly" else gelu_erf(x)


ACTIVATIONS = {"gelu": gelu_configured, "gelu_erf": gelu_erf, "quad": quad, "relu": relu, "identity": lambda x: x}
