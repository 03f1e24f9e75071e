"""Every numeric setting of the secure runtime, in one place, applied to ``crypten.cfg`` in one function.

``SecureConfig`` holds the fixed-point precision, the iteration counts and
initial guesses of CrypTen's iterative approximations (exp, reciprocal,
inverse square root, erf), the epsilons of the ReLU / THE-X attentions (these
come from the model's ``ArchSpec``), the matmul backend and the randomness
provider. ``apply_config(cfg)`` writes the CrypTen part into ``crypten.cfg``;
nothing else in ``protocols/`` sets ``crypten.cfg``.

How the defaults were chosen (``tests/protocols/test_ops.py`` and
``test_runtime.py`` re-check the figures; digits models trained in the tests,
360 test images):

* ``precision_bits = 16``: the client's encoder (``mpcvit.sealing``) uses 2^16.
  More bits raise the chance that the local 2PC truncation of a product fails
  (|z| / 2^64 per element for z = x y 2^(2f) in ring units: an error of about
  2^(64-f) ulp), fewer lose logit accuracy.
* ``lower_bits = 4``: one operand of each big product is first truncated
  locally to 2^(f-4) (``ops.lower``; no communication, no rounds, no bytes),
  so the product is truncated from 2^(2f-4) and fails 16 times less often
  (256 times for a square): the activation of every linear layer, the right
  operand of the attention products (K^T in Q K^T, V in P V and K^T V, K^T V
  in Q (K^T V)), LayerNorm's centred values in the variance square and the
  final product, and the squares of 2Quad, THE-X and Quad GeLU. Not lowered:
  the weights (their relative resolution matters more), the GeLU polynomial
  (coefficients up to 53 amplify the error), exp, the Newton iterations.
  Measured (``benchmarks/numeric_safety.py``, ``results/numeric_safety.md``):
  expected catastrophic failures per inference of vit_7_4_32 ~5e-4 -> ~3e-5;
  max logit error vs plaintext about the same (vit_4_4_28, 1000 images: 0.025
  -> 0.027; 100 images: mpcformer 0.13 -> 0.16, relu 0.005 -> 0.006, thex 0.22 -> 0.29).
* ``exp_offsets = True``: softmax's exp squares u = v - c (c = 1, then 1/2 in
  the last two of the 8 steps) instead of v (``ops.exp_nonpositive``): the same
  values, rounds and bytes as CrypTen's exp, 20x smaller truncated squares on
  trained attention scores.
* ``exp_iterations = 8`` (softmax's exp(x) = (1 + x/256)^256 on x = s - max <= 0):
  absolute error < 4e-3 per softmax entry (test_ops: softmax < 1e-2).
* ``reciprocal_iters = 2`` Goldschmidt steps (1 round each) from a range start
  with ``range_per_octave = 2`` thresholds per octave on ``reciprocal_range``
  = [2^-14, 2^16] (one batched comparison, start within 2^(1/4)): relative
  error < 1.5e-3 over [1e-3, 1e2] (above, 1/x is a few ulps of 2^-16 and so is
  the error): 1 + 1 + 2 = 4 rounds with the fss sign gate (10 with the ring
  circuit; the linear start of ``range_start = "linear"`` is within 2.2 %,
  so 2 steps leave < 1e-6 from the start itself). Outside the domain the start is wrong: below, the
  steps converge only partly (1/x too small), above, Goldschmidt diverges
  (e_0 < -1: x (1/x) = -9.4 at x = 10270). The domain was [2^-12, 2^12] until
  THE-X's (sum + eps) / N reached 19850 (fashion-mnist thex_4_4_28) and 10270
  (digits thex_2_4_8) on test images and eps / N fell to 2^-12.3; the wider one costs 12 more
  thresholds in the same comparison (no round). Measured domains per model:
  ``results/numeric_safety.md``. CrypTen's default (3 exp(1 - 2x) + 0.003 and
  10 Newton steps, 28 rounds) diverges above x ~ 600. One threshold per octave
  needed 3 steps for the same error.
* ``inv_sqrt_iters = 0`` (automatic): 1 Newton step after the linear start
  (within 0.9 % above var' = 2^-10, the start's error 0.6 % -> 5e-5 after
  the step), 2 after the midpoint start of the circuits (within 2^(1/8)), on
  [2^-14, 2^14] with the centred values pre-scaled by ``ln_prescale = 4``:
  relative error < 1e-3 over [1e-3, 1e3]; ``ops.layernorm`` folds the last
  step into its output product (5 rounds with fss, 14 with the circuits). CrypTen's default start (3 Newton steps) is off by 40 % at
  var = 0.01, which broke LayerNorm on the class token of trained digits models
  (logit error 2.6 -> 0.025 with the range start).
* ``gelu = "fourier"`` (default): on every GeLU layer whose inputs the model's
  owner certifies below 24 / 1.05 from its weights, whatever the image
  (``runtime.certified_gelu_bounds``), x / 2 + x psi(x) with psi a series of 16
  odd harmonics of period 64 from ONE opening of x + r and the dealer's shares
  of cos / sin (k theta_r) (``ops.gelu_fourier``): 2 rounds, 3 ring elements
  per value, 33 words of dealer material per value (party 0 only), no DCF;
  error 4.7e-4 (fit) plus rounding on |x| <= 24 (measured over 7 runs: 0.95-1.1e-3
  on |x| <= 13, 1.8-2.1e-3 on |x| <= 24), wrong past 32, which is why it runs only where the
  certificate holds. Every other
  GeLU layer runs the spline below. ``fourier_max_values = 2^21``: a call on
  more values runs the spline (or, over ``fss_max_values``, the polynomial)
  instead; its own cap, since a value costs 33 words to party 0 against a
  DCF gate's 160 to both (ViT-B/16's 605,184 MLP values per layer run it:
  2 rounds instead of the polynomial's 6, 3 ring elements instead of 7).
* ``gelu = "spline"``: a cubic spline of GeLU on 8 buckets between
  9 knots in [-5, 5.5] (0 below, x above), the bucket from ONE sign gate with
  9 shifts on ``gelu_spline_gate`` (10, 14) (9 DCF levels, window 1/4, valid for
  |x| <= 122.25: 8.7x the largest GeLU input of the committed checkpoints)
  and x^2 squared beside it, then one product (``ops.gelu_spline``): 2
  rounds, 4 ring elements per value, 82 words of dealer material per value
  (196 for "fss"); max error 8.7e-4 on [-8, 8] and out to +-122.
* ``max_compare = (11, 14)``: softmax's max tree on 10 DCF levels (ReLU's ring
  has 19): valid for differences up to 256 - 2^-2 (the certified bound of the
  committed LayerNorm models' score differences is 246), and a level may keep
  the smaller of two values less than 1/4 apart, so the max may fall up to
  ceil(log2 N) / 4 short; the exp then sees inputs up to that above 0 and the
  reciprocal's domain grows by the matching octaves (``ops.softmax_sum_octaves``).
* ``fold_products = True``: the product with a reciprocal is folded into
  Goldschmidt's steps (``ops.times_reciprocal``: one round less per attention
  normalisation) where the tensor has at most ``fold_max_values`` = 2^17
  values (``ops.folds``: each step then opens it once more, which a round on
  the WAN link is worth only below about 1 MB); softmax's reciprocal, whose
  sum lies in the linear start's range, takes one step instead of two
  (relative error 4.8e-4), folded or not.
  LayerNorm takes a fine start with no Newton step, ``ln_per_octave = 8``
  linear pieces per octave of var' + k^2 eps over ``ln_range`` = [2^-8, 2^14]
  (var in [2^-12, 2^10]) on the gate ring ``ln_compare`` (28, 4), within
  4.2e-4 relative over [2^-5, 2^12] and 1.1e-3 at worst (the bottom octave,
  where the gate's 2^-12 window spans pieces; (26, 6), 2 DCF levels fewer,
  left 5.9e-3 there and 0.014 on a test token with var 4e-4), and folds its 1/sigma
  into the linear after it (qkv, fc1 or the fused MLP, the head):
  LN(x) W + b = y (k xc W) + b, 3 rounds instead of 5 + 1
  (``ops.layernorm_linear``); a LayerNorm with no linear right after it
  (``pool = "avg"`` before the mean) 3 instead of 5. Measured: LN + linear on
  rows with var 1e-2 .. 1e3, max error 1.0e-3 to 1.4e-3 on outputs up to 4.3
  (unfolded 5e-4). Digits vit_2_4_8 (360 images): the 5 LayerNorms and
  their linears 30 -> 15 rounds (the forward 83 -> 64 with the reciprocal's
  fold; fss1 85 -> 70 with this fold alone), online bytes +3.6 % (z = xk W is
  opened at the linear's output width), max logit error 0.04 to 0.08 folded or
  not (it varies with the masks from run to run; the tests' tolerance is 0.25).
  Only with the fss linear start (TFP keeps the unfolded LayerNorm).
* ``gelu = "fss"`` (``SecureConfig.fss1()``): ReLU(x) minus the gap x Phi(-x) as a degree-7
  polynomial of min(|x|, 4) / 4, the ReLU and the clamp from ONE sign gate
  with three shifts (``ops.gelu_fss``): 4 rounds, 7 ring elements per value;
  max error about 1e-3 on [-8, 8]. Without DCF keys (TFP) it is "poly".
* ``gelu = "poly"``: x/2 + a degree-7 polynomial in x^2 on |x| <= 4 (+ one
  comparison): max error 1.2e-3 on [-8, 8]. CrypTen's Taylor erf (``"erf"``)
  is off by 1.9 at x = -2 and by 700 at x = -3, and its large powers make the
  local truncation fail (a logit error of 4e9 on a trained digits model).
* ``relu_softmax_gate = "select"`` (default): the ReLU of a ReLU-softmax head
  runs ``sign.relu_select``: the opening of x + r, then a one-bit DCF key
  (``dcf.keygen_bit``, the tree stopped 6 levels early into a 64-bit leaf:
  29 words a value on the (20, 6) ring, against the product gate's 79) gives
  XOR shares of [x < 0], and a select round opens b xor rho (one bit a value)
  for x [x < 0]: 2 rounds instead of 1, dealer material 32 + 29 words a value
  instead of 81 + 79 (0.38x), the dealer's keys 0.77x and a party's
  evaluation 0.62x the CPU (13 AES levels and a leaf, against 19 levels of
  two blocks; ``benchmarks/dcf_speed.py``, ``results/dcf_speed.json``). The same window and range as the one-round gate. Measured at
  7_4_32: all ReLU-softmax 204 -> 124 MB of dealer material per inference,
  MPCViT+ 89 -> 59 MB, one round more per layer with ReLU-softmax heads
  (123 -> 130, 103 -> 106). ``"product"``: the one-round gate of
  ``sign.relu`` (the DCF's second payload word gives the product), the
  default before (runtime "product"). THE-X's ReLUs and the FFN's stay on the
  one-round gate: THE-X would gain rounds over the runtime before the
  whole-cost work (100 + 14 against 107) and still miss a third of its material.
* ``comparison = "fss"`` (default): ReLU, softmax's max and the Newton starts
  use the dealer's one-round DCF sign gate (``protocols.sign``): one opening
  of x + r, then local DCF evaluations, which also give x [x < d] (the ReLU's
  and the max's product) and any number of thresholds of the same x. ReLU,
  the max tree's levels on (20, 6): valid for |x| <= 2^9 - 2^-10 (not 2^9:
  the carry out of the t = 6 dropped bits can flip the bit in the last 2^-10,
  ``sign.valid_bound``; 2x the certified bound of the scores' differences,
  246), error <= 2^-10 near 0; the fss GeLU's gate on (24, 6) compares x, x - 4
  and x + 4: valid for |x| <= 2^13 - 4 - 2^-10 (about 670x the GeLU inputs' 12.2);
  19 DCF levels (ReLU / max), a key of
  79 words (632 bytes) per value and party. ``fss_max_values = 300000``: a
  call comparing more values uses the ring circuit instead (at batch 1 only
  the first level of the 9_12_64 max tree and its ReLU attention), bounding
  the dealer's material per forward (7_4_32 softmax ViT: about 0.1 GB per
  party; 9_12_64: about 3 GB). A provider without DCF keys (CrypTen's TFP) runs the circuits.
  ``SecureConfig.circuits()`` is the runtime before the sign gate.
* ``comparison = "ring"``: every sign test (ReLU, softmax's max, GeLU's range
  test, the Newton starts) runs ``protocols.compare.ltz`` on a small ring with
  packed lanes instead of CrypTen's 64-bit circuit (``"crypten"``): 6-7 rounds
  instead of 8, 2-5 words opened per value instead of 27. Each use has its
  (ring bits k, dropped bits t): exact unless 0 <= x < 2^(t-16), valid for
  |x| <= 2^(k-1+t-16) - 2^(t-16) (the borrow out of the dropped bits costs the
  last 2^(t-16) at the negative end); outside, the bit is garbage (a wrong GeLU branch at
  |x| >= 2048 with the former (16, 12) gave gelu(3000) = 0). GeLU's |x| > 4
  test (16, 14): |x| <= 8192 - 2^-2 in 6 rounds; x within 1/4 below 4 may take the
  outer branch x/2 + |x|/2, which differs from GeLU by x Phi(-x) <= 3.3e-4
  there (the polynomial's own error is 5e-4); for models with LayerNorm the
  GeLU input is bounded for every image by sqrt(C) |W'_j| + |b'_j| (10.5 on
  the worst committed checkpoint; ``results/numeric_safety.md``). ReLU and max
  of the circuits (32, 4): |x| <= 2^19 - 2^-12, error <= 2^-12. Newton starts (32, 2): |x - t_j| <= 2^17 - 2^-14, thresholds
  from 2^-14 at step 2^-14 (a start one bucket off is still within factor 2).
* ``fixed_weight_masks = True``: every weight's Beaver mask b is drawn once
  per model load from the parties' model keys and D = W - b opened then
  (``ops.open_weight_masks``: one round, weight-sized, at load); each
  inference's linear layers open only x - a (``ops.fixed_linear_steps``),
  which removes the weights' size from every request's traffic. Needs the
  dealer and a batch source that hands out model keys (the gRPC dealer,
  ``InProcessDealer``); otherwise every product is a fresh Beaver triple.
* ``matmul_backend = "int64"``: torch 2.13's int64 matmul on this CPU takes
  ~0.9 ms for 65x256 @ 256x768 (one thread), the three float64 limb products
  of "limbs" ~1.6-3.2 ms; both are exact mod 2^64 (test_ops compares them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from protocols import ring
from protocols.compare import check_ring
from protocols.crypten_compat import crypten

ProviderKind = Literal["dealer", "tfp"]
MatmulBackend = Literal["int64", "limbs"]
Comparison = Literal["fss", "ring", "crypten"]
RangeStart = Literal["linear", "step"]


@dataclass(frozen=True)
class SecureConfig:
    """Numeric and protocol settings of one secure forward pass."""

    precision_bits: int = 16
    exp_iterations: int = 8
    reciprocal_iters: int = 2
    reciprocal_range: tuple[int, int] = (-14, 16)  # log2 of the domain of the range start (ReLU, 2Quad, THE-X)
    inv_sqrt_iters: int = 0  # 0: 1 Newton step after a linear start, 2 after a midpoint start
    inv_sqrt_range: tuple[int, int] = (-14, 14)
    range_per_octave: int = 2  # thresholds per octave of the Newton starts
    ln_prescale: int = 4  # centred LayerNorm inputs are multiplied by this integer before squaring
    gelu: Literal["fourier", "spline", "fss", "poly", "erf"] = "fourier"  # fourier: on certified layers, else spline
    erf_iterations: int = 8  # only for gelu = "erf"
    layernorm_eps: float = 1e-5  # torch.nn.LayerNorm's default
    matmul_backend: MatmulBackend = "int64"
    provider: ProviderKind = "dealer"
    comparison: Comparison = "fss"
    range_start: RangeStart = "linear"  # the Newton starts: piecewise linear (needs fss) or bucket midpoints
    fixed_weight_masks: bool = True  # open each weight's Beaver mask once per model load (needs a dealer batch source)
    fss_max_values: int = 300_000  # a sign test on more values per call uses the ring circuit (bounds the dealer's material)
    fourier_max_values: int = 1 << 21  # a Fourier GeLU on more values per call runs the spline / polynomial instead
    gelu_compare: tuple[int, int] = (16, 14)  # (ring bits, dropped low bits) of protocols.compare.ltz
    relu_compare: tuple[int, int] = (20, 6)  # ReLU, ReLU-softmax, THE-X and softmax's max
    relu_softmax_gate: Literal["select", "product"] = "select"  # ReLU-softmax heads' ReLU: 2 rounds, 0.38x the material / 1 round
    gelu_gate: tuple[int, int] = (24, 6)  # the fss GeLU's sign gate (ReLU and clamp at +-4): valid for |x| <= 8188 - 2^-10
    range_compare: tuple[int, int] = (32, 2)  # the Newton starts of reciprocal and inv_sqrt
    lower_bits: int = 4  # fraction bits one operand of the big products drops first (0: none; see ops.lower)
    exp_offsets: bool = True  # softmax's exp squares v - c, not v (False: CrypTen's exp)
    gelu_spline_gate: tuple[int, int] = (10, 14)  # the spline GeLU's gate: 9 DCF levels, valid for |x - knot| <= 128 - 2^-2
    max_compare: tuple[int, int] = (11, 14)  # softmax's max tree: 10 DCF levels, valid for |a - b| <= 256 - 2^-2
    fold_max_values: int = 1 << 17  # fold a reciprocal's product only into tensors of at most this many values
    fold_products: bool = True  # LayerNorm's 1/sigma into the next linear, the reciprocal's product into Goldschmidt
    ln_per_octave: int = 8  # thresholds per octave of LayerNorm's 1/sqrt start (fold_products: no Newton step)
    ln_range: tuple[int, int] = (-8, 14)  # log2 of the domain of that start (var * ln_prescale^2)
    ln_compare: tuple[int, int] = (28, 4)  # its gate: valid for |x - t_j| <= 2^15 - 2^-12 (window 2^-12)

    def __post_init__(self) -> None:
        if not 8 <= self.precision_bits <= 24:
            raise ValueError(f"precision_bits must be in 8..24, got {self.precision_bits}")
        if self.fss_max_values < 0 or self.fold_max_values < 0 or self.fourier_max_values < 0:
            raise ValueError("fss_max_values, fold_max_values and fourier_max_values must be >= 0, got "
                             f"{self.fss_max_values}, {self.fold_max_values}, {self.fourier_max_values}")
        if not 0 <= self.inv_sqrt_iters <= 32:
            raise ValueError(f"inv_sqrt_iters must be in 0..32 (0: automatic), got {self.inv_sqrt_iters}")
        for name in ("exp_iterations", "reciprocal_iters", "erf_iterations", "ln_prescale",
                     "range_per_octave"):
            if not 1 <= getattr(self, name) <= 32:
                raise ValueError(f"{name} must be in 1..32, got {getattr(self, name)}")
        if self.matmul_backend not in ("int64", "limbs"):
            raise ValueError(f"unknown matmul_backend {self.matmul_backend!r}")
        if self.gelu not in ("fourier", "spline", "fss", "poly", "erf"):
            raise ValueError(f"unknown gelu {self.gelu!r}; choose fourier, spline, fss, poly or erf")
        if not 1 <= self.ln_per_octave <= 32:
            raise ValueError(f"ln_per_octave must be in 1..32, got {self.ln_per_octave}")
        if self.relu_softmax_gate not in ("select", "product"):
            raise ValueError(f"unknown relu_softmax_gate {self.relu_softmax_gate!r}; choose select or product")
        if self.comparison not in ("fss", "ring", "crypten"):
            raise ValueError(f"unknown comparison {self.comparison!r}; choose fss, ring or crypten")
        if self.range_start not in ("linear", "step"):
            raise ValueError(f"unknown range_start {self.range_start!r}; choose linear or step")
        if not 0 <= self.lower_bits <= self.precision_bits - 4:
            raise ValueError(f"lower_bits must be in 0..precision_bits - 4, got {self.lower_bits}")
        for name in ("gelu_compare", "relu_compare", "range_compare", "gelu_gate", "gelu_spline_gate", "max_compare",
                     "ln_compare"):
            check_ring(*getattr(self, name))
        if self.provider not in ("dealer", "tfp"):
            raise ValueError(f"unknown provider {self.provider!r}; choose dealer or tfp")
        if self.provider == "tfp" and self.comparison == "fss":  # TFP makes no DCF keys: the ring circuits
            object.__setattr__(self, "comparison", "ring")
        if self.comparison != "fss" and self.range_start == "linear":  # a linear start needs x [x >= t] for free
            object.__setattr__(self, "range_start", "step")
        if self.inv_sqrt_iters == 0:
            object.__setattr__(self, "inv_sqrt_iters", 1 if self.range_start == "linear" else 2)

    def with_(self, **changes: Any) -> "SecureConfig":
        """A copy with ``changes``; an automatic ``inv_sqrt_iters`` is re-chosen for the new start."""
        if "inv_sqrt_iters" not in changes and self.inv_sqrt_iters == (1 if self.range_start == "linear" else 2):
            changes["inv_sqrt_iters"] = 0
        return replace(self, **changes)

    @classmethod
    def circuits(cls, **changes: Any) -> "SecureConfig":
        """The runtime before DCF sign gates: small-ring comparison circuits, midpoint starts, 2 Newton steps.

        Kept selectable so that benchmarks can show both (``mpcvit bench --protocols circuits``).
        """
        return cls(**{"comparison": "ring", "range_start": "step", "relu_compare": (32, 4), "fixed_weight_masks": False,
                      "relu_softmax_gate": "product",
                      "gelu": "poly", "fold_products": False, **changes})

    @classmethod
    def fss1(cls, **changes: Any) -> "SecureConfig":
        """The fss runtime as it was before the whole-cost work (kept selectable: ``mpcvit bench --protocols fss1``).

        One-round DCF sign gates on the rings of that time (the max tree on ReLU's (20, 6)), the 4-round
        polynomial GeLU (``gelu = "fss"``), LayerNorm's start at 2 thresholds per octave with a Newton step,
        and no folded products.
        """
        return cls(**{"gelu": "fss", "max_compare": (20, 6), "fold_products": False, "relu_softmax_gate": "product",
                      **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CONFIG = SecureConfig()
RUNTIMES = ("fss", "product", "spline", "fss1", "circuits")


def runtime_config(name: str, **changes: Any) -> SecureConfig:
    """The config of a runtime by name: "fss" ``SecureConfig()``, "product" the same with the ReLU-softmax heads
    on the one-round product gate (the default before the select gate), "spline" that with every GeLU on the
    spline (the default before the Fourier GeLU), "fss1" ``SecureConfig.fss1()``, "circuits"."""
    if name == "fss":
        return SecureConfig(**changes)
    if name == "product":
        return SecureConfig(**{"relu_softmax_gate": "product", **changes})
    if name == "spline":
        return SecureConfig(**{"gelu": "spline", "relu_softmax_gate": "product", **changes})
    if name == "fss1":
        return SecureConfig.fss1(**changes)
    if name == "circuits":
        return SecureConfig.circuits(**changes)
    raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
_current: list[SecureConfig] = [DEFAULT_CONFIG]


def current_config() -> SecureConfig:
    """The config last applied with ``apply_config`` in this process (the ops read their settings here)."""
    return _current[0]


def apply_config(config: SecureConfig = DEFAULT_CONFIG) -> None:
    """Write the CrypTen part of ``config`` into ``crypten.cfg`` (call in every party, before any op)."""
    _current[0] = config
    cfg = crypten.cfg
    cfg.encoder.precision_bits = config.precision_bits
    cfg.functions.exp_iterations = config.exp_iterations
    cfg.functions.erf_iterations = config.erf_iterations
    ring.set_backend(config.matmul_backend)
    cfg.communicator.verbose = True  # the cost accounting reads the communicator's counters
