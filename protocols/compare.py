"""The sign of a shared fixed-point value on a small ring, with several values packed in each 64-bit word.

CrypTen's ``x < 0`` (``MPCTensor._ltz``) converts each 64-bit arithmetic
share to XOR shares and runs a 64-bit parallel-prefix adder: 1 + 6 AND rounds
+ 1 bit-to-arithmetic round, and per value 27 64-bit words opened per party
(216 bytes). Activations and attention scores never come near 2^63, so most of
those bits carry no information. ``ltz`` compares on a k-bit ring instead:

1. *Reduce locally* (no communication). Party i holds s_i with
   s_0 + s_1 = x (mod 2^64). It keeps a_i = (s_i >> t) mod 2^k (arithmetic
   shift by t = ``drop_bits``). Since s_0 + s_1 = x + w 2^64 as integers
   (w in {-1, 0, 1}), floor(s_0 / 2^t) + floor(s_1 / 2^t) =
   floor(x / 2^t) + w 2^(64-t) - d with d in {0, 1}; modulo 2^k (k + t <= 64)
   the wrap term vanishes, so a_0 + a_1 = y (mod 2^k) with
   y = floor(x / 2^t) - d, *always* (not only with high probability).
2. *Sign of y*. If -2^(k-1+t) + 2^t - 1 <= x < 2^(k-1+t) (in ring units; in
   particular |x| <= 2^(k-1+t) - 2^t = ``valid_bound(k, t)``, real values
   |x| <= 2^(k-1+t-f) - 2^(t-f)), MSB_k(y) = [y < 0] = [x < 0] except for
   0 <= x < 2^t, which may read as negative (an error of at most 2^(t-f) in
   the real value that decides). The last 2^t - 1 at the negative end are
   out: there floor(x / 2^t) = -2^(k-1) and the borrow d = 1 (possible unless
   x mod 2^t = 2^t - 1) wraps y to 2^(k-1) - 1 (the one-round sign gate,
   ``protocols.sign``, loses 2^t at the positive end to its carry instead;
   both are valid for |x| <= ``valid_bound``).
   MSB_k(a_0 + a_1) = a_0[k-1] ^ a_1[k-1] ^ c with c the carry out of the
   low k-1 bits.
3. *Carry* by a Kogge-Stone prefix over the k-1 low bits on XOR shares:
   G = a_0 & a_1 (the two parties' private inputs, 1 Beaver AND round),
   P = a_0 ^ a_1 (local), then for s = 1, 2, 4, ...:
   G <- G ^ (P & (G << s)), P <- P & (P << s) (one round, both ANDs
   batched; the last level needs G only). Each 64-bit word carries
   L = 64 // k values in lanes of k bits; a lane's top bit is left 0 and
   every shifted operand is masked with a public lane mask (local), so no
   carry crosses lanes. ceil(log2(k-1)) levels.
4. *Bit to arithmetic* (CrypTen's B2A with the provider's random bit
   rB / rA): open z = b ^ rB, packed 64 bits per word, then
   [b] = [rA] (1 - 2 z) + z. 1 round.

Rounds: 1 + ceil(log2(k-1)) + 1 (k = 16: 6, k = 32: 7; CrypTen's: 8).
64-bit words opened per value and party: (2 + 4 (levels - 1) + 2) / L + 1/64
(k = 16: 4 words; k = 32: 10 words; CrypTen's: 27).
Correlated randomness: binary triples of the packed size and one B2A bit per
value, from the installed provider (dealer or TFP), recorded in the plan like
every other request.

Where the bit multiplies a shared value next (ReLU(x) = x - [x < 0] x, the
max tree's selection, GeLU's branch selection), step 4 and the product are
one round instead (``bitmul_steps``: the provider's random bit comes with a
random [s] and [r s]; open z = b ^ rB and y - s together), so ReLU costs the
rounds of ``ltz`` alone and 1 ring element per value for the product.

Which k and t each use takes is set in ``protocols.config.SecureConfig``
(``*_compare``): the GeLU's range tests need little precision, ReLU a
little more, the Newton start thresholds (2^-14 ... 2^14) the most.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch

from protocols.crypten_compat import crypten

from protocols.lockstep import SUM, XOR, Steps, run_one

import crypten.communicator as comm  # noqa: E402  (after the compat shim)
from crypten.mpc import MPCTensor  # noqa: E402


def valid_bound(ring_bits: int, drop_bits: int) -> int:
    """The largest |x| (ring units) whose sign ``ltz`` gets right (up to its 2^t error just above 0): 2^(k-1+t) - 2^t."""
    return (1 << (ring_bits - 1 + drop_bits)) - (1 << drop_bits)


def check_ring(ring_bits: int, drop_bits: int) -> None:
    """Raise ValueError unless (ring_bits, drop_bits) is a usable small ring."""
    if not 4 <= ring_bits <= 32:
        raise ValueError(f"comparison ring_bits must be in 4..32, got {ring_bits}")
    if not 0 <= drop_bits <= 64 - ring_bits:
        raise ValueError(f"comparison drop_bits must be in 0..{64 - ring_bits}, got {drop_bits}")


def levels(ring_bits: int) -> int:
    """Prefix levels after the first AND: spans 1 + 1 + 2 + ... must cover the k - 1 low bits."""
    return max(1, math.ceil(math.log2(ring_bits - 1)))


def rounds(ring_bits: int) -> int:
    """Communication rounds of one ``ltz`` call (any number of values)."""
    return 1 + levels(ring_bits) + 1


@lru_cache(maxsize=None)
def _lane_masks(ring_bits: int) -> tuple[int, dict[int, int]]:
    """(low mask of every lane's k-1 value bits, {s: mask of lane bits s .. k-2}) as signed int64 constants."""
    lanes = 64 // ring_bits
    low = (1 << (ring_bits - 1)) - 1

    def spread(m: int) -> int:
        word = 0
        for j in range(lanes):
            word |= m << (j * ring_bits)
        return word - (1 << 64) if word >= 1 << 63 else word

    shifted = {}
    s = 1
    for _ in range(levels(ring_bits)):
        shifted[s] = spread(low & ~((1 << s) - 1))
        s *= 2
    return spread(low), shifted


def _pack(values: torch.Tensor, ring_bits: int) -> torch.Tensor:
    """(n,) values in [0, 2^k) -> (ceil(n / L),) int64 words, value j of word w at bit j k (L = 64 // k)."""
    lanes = 64 // ring_bits
    n = values.numel()
    pad = (-n) % lanes
    v = torch.nn.functional.pad(values, (0, pad)).view(-1, lanes)
    shifts = torch.arange(lanes, dtype=torch.long) * ring_bits
    return (v << shifts).sum(1)  # lanes are disjoint: the sum is the bitwise OR


def _unpack_bit(words: torch.Tensor, ring_bits: int, bit: int, n: int) -> torch.Tensor:
    """Bit ``bit`` of every lane of ``words`` -> (n,) int64 in {0, 1}."""
    lanes = 64 // ring_bits
    shifts = torch.arange(lanes, dtype=torch.long) * ring_bits + bit
    return ((words.unsqueeze(1) >> shifts) & 1).reshape(-1)[:n]


_BIT_SHIFTS = torch.arange(64, dtype=torch.long)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """(n,) values in {0, 1} -> ceil(n / 64) int64 words, bit j of word w = value 64 w + j."""
    pad = (-bits.numel()) % 64
    return (torch.nn.functional.pad(bits, (0, pad)).view(-1, 64) << _BIT_SHIFTS).sum(1)  # disjoint bits: sum = OR


def unpack_bits(words: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first n bits as int64 values in {0, 1}."""
    return ((words.unsqueeze(1) >> _BIT_SHIFTS) & 1).reshape(-1)[:n]


def and_steps(x: torch.Tensor, y: torch.Tensor) -> Steps:
    """Step protocol: XOR shares of x & y from XOR shares x, y (same shape); one Beaver AND, one round."""
    provider = crypten.mpc.get_default_provider()
    a, b, c = provider.generate_binary_triple(x.size(), y.size(), device=None)
    eps, delta = yield [(XOR, x ^ a.share), (XOR, y ^ b.share)]
    z = c.share ^ (eps & b.share) ^ (delta & a.share)
    if comm.get().get_rank() == 0:
        z = z ^ (eps & delta)
    return z


def bits_to_arithmetic_steps(bits: torch.Tensor) -> Steps:
    """Step protocol: XOR shares of bits (n,) -> additive shares (scale 1); one round, opened 64 bits per word."""
    provider = crypten.mpc.get_default_provider()
    n = bits.numel()
    ra, rb = provider.B2A_rng(bits.size(), device=None)
    (opened,) = yield [(XOR, pack_bits((bits ^ rb.share) & 1))]
    z = unpack_bits(opened, n)
    share = ra.share * (1 - 2 * z)
    if comm.get().get_rank() == 0:
        share = share + z
    return share


def msb_steps(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 0) -> Steps:
    """Step protocol: XOR shares (int64 0/1, flattened) of [x < 0], steps 1-3 of the module docstring.

    Rounds: 1 + ceil(log2(k-1)).
    """
    check_ring(ring_bits, drop_bits)
    rank = comm.get().get_rank()
    a = (x._tensor.share.reshape(-1) >> drop_bits) & ((1 << ring_bits) - 1)  # local reduction to Z_2^k
    top = (a >> (ring_bits - 1)) & 1  # this party's share of the MSB's own bit
    low_mask, shifted = _lane_masks(ring_bits)
    mine = _pack(a, ring_bits) & low_mask
    zero = torch.zeros_like(mine)
    # party 0's input as XOR shares (mine, 0), party 1's as (0, mine)
    x0, x1 = (mine, zero) if rank == 0 else (zero, mine)
    g = yield from and_steps(x0, x1)
    p = mine  # P = a_0 ^ a_1: each party's own value is its XOR share
    steps = list(shifted.items())
    for i, (s, mask) in enumerate(steps):
        if i == len(steps) - 1:
            g = g ^ (yield from and_steps(p, (g << s) & mask))
        else:
            both = yield from and_steps(torch.stack([p, p]), torch.stack([(g << s) & mask, (p << s) & mask]))
            g, p = g ^ both[0], both[1]
    carry = _unpack_bit(g, ring_bits, ring_bits - 2, top.numel())  # G at bit k-2 = carry into bit k-1
    return carry ^ top


def ltz_steps(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 0) -> Steps:
    """Step protocol of ``ltz`` (for ``protocols.lockstep.run`` beside other protocols)."""
    bits = yield from msb_steps(x, ring_bits, drop_bits)
    out = yield from bits_to_arithmetic_steps(bits)
    return MPCTensor.from_shares(out.reshape(x._tensor.share.shape), precision=0)


def bitmul_steps(bits: torch.Tensor, y: MPCTensor) -> Steps:
    """Step protocol: [b y] from XOR shares of bits b (flattened, y.numel() of them) and shares of y: ONE round.

    Math: with the provider's random bit r (XOR shares rB, additive rA), a random
    [s] and [g = r s] (``bitmul_rng``), open z = b ^ rB (packed 64 per word) and
    eps = y - s in the same round; then b = z + (1 - 2 z) r and
    r y = eps r + g, so [b y] = z [y] + (1 - 2 z) (eps [rA] + [g]): local.
    Replaces bit-to-arithmetic + a Beaver product (2 rounds, 2 ring elements
    per value) by 1 round and 1 ring element per value (+ 1/64).
    """
    provider = crypten.mpc.get_default_provider()
    shape = y._tensor.share.shape
    n = bits.numel()
    if n != y._tensor.share.numel():
        raise ValueError(f"bitmul needs one bit per value, got {n} bits for {tuple(shape)}")
    ra, rb, sa, ga = provider.bitmul_rng((n,), device=None)
    opened, eps = yield [(XOR, pack_bits((bits ^ rb.share) & 1)), (SUM, y._tensor.share.reshape(-1) - sa.share)]
    z = unpack_bits(opened, n)
    ry = eps * ra.share + ga.share
    share = z * y._tensor.share.reshape(-1) + (1 - 2 * z) * ry
    return MPCTensor.from_shares(share.reshape(shape), precision=int(round(math.log2(y.encoder.scale))))


def ltz(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 0) -> MPCTensor:
    """Shares (scale 1) of [x < 0] for every element of ``x``, compared on a ``ring_bits``-bit ring.

    Exact when x < 0 or x >= 2^drop_bits ring units and
    |x| <= 2^(ring_bits - 1 + drop_bits) - 2^drop_bits (``valid_bound``); values in [0, 2^drop_bits) may read
    as negative. See the module docstring for the protocol and its cost.
    """
    return run_one(ltz_steps(x, ring_bits, drop_bits))


def relu_steps(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 0) -> Steps:
    """Step protocol of ``relu``."""
    bits = yield from msb_steps(x, ring_bits, drop_bits)
    neg = yield from bitmul_steps(bits, x)  # [x < 0] x
    return x - neg


def relu(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 0) -> MPCTensor:
    """ReLU(x) = x - [x < 0] x: the sign bits, then ``bitmul_steps`` (the same rounds as ``ltz``).

    Error <= 2^drop_bits ring units (values in [0, 2^t) may become 0).
    """
    return run_one(relu_steps(x, ring_bits, drop_bits))


def max_rows(x: MPCTensor, ring_bits: int = 32, drop_bits: int = 0) -> MPCTensor:
    """max over the last dim (keepdim) by a pairwise tree: per level m = a - [a < b] (a - b).

    ceil(log2 N) levels of the sign bits + ``bitmul_steps`` (the rounds of ``ltz`` each).
    The result is one of the row's values, within 2^drop_bits ring units of
    the maximum (a near tie may pick the smaller), which is all softmax's shift needs.
    """

    return max_tree(x, lambda a, b: max_pair(a, b, ring_bits, drop_bits))


def max_tree(x: MPCTensor, pair: Callable[[MPCTensor, MPCTensor], MPCTensor]) -> MPCTensor:
    """max over the last dim (keepdim): ceil(log2 N) levels of ``pair`` on the two halves; an odd one out waits."""
    while x.size(-1) > 1:
        n = x.size(-1)
        half = n // 2
        m = pair(x[..., :half], x[..., half : 2 * half])
        x = crypten.cat([m, x[..., 2 * half :]], dim=-1) if n % 2 else m
    return x


def max_pair(a: MPCTensor, b: MPCTensor, ring_bits: int = 32, drop_bits: int = 0) -> MPCTensor:
    """One level of the max tree: a - [a < b] (a - b), the rounds of ``ltz``."""

    def level() -> Steps:
        d = a - b
        bits = yield from msb_steps(d, ring_bits, drop_bits)
        sel = yield from bitmul_steps(bits, d)
        return a - sel

    return run_one(level())
