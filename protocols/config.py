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
  More bits raise the chance that CrypTen's local 2PC truncation fails
  (|value| 2^f / 2^63 per element), fewer lose logit accuracy.
* ``exp_iterations = 8`` (softmax's exp(x) = (1 + x/256)^256 on x = s - max <= 0):
  absolute error < 4e-3 per softmax entry (test_ops: softmax < 1e-2).
* ``reciprocal_iters = 3`` from a range start within sqrt(2) on
  [2^-12, 2^12] (one batched comparison): relative error < 1e-3 over
  [1e-3, 1e3]. CrypTen's default (3 exp(1 - 2x) + 0.003 and 10 Newton steps,
  28 rounds) diverges above x ~ 600 and costs more rounds.
* ``inv_sqrt_iters = 3`` from a range start on [2^-14, 2^14] with the centred
  values pre-scaled by ``ln_prescale = 4``: relative error < 1e-3 over
  [1e-3, 1e3]. CrypTen's default start (3 Newton steps) is off by 40 % at
  var = 0.01, which broke LayerNorm on the class token of trained digits models
  (logit error 2.6 -> 0.025 with the range start).
* ``gelu = "poly"``: x/2 + a degree-7 polynomial in x^2 on |x| <= 4 (+ one
  comparison): max error 1.2e-3 on [-8, 8]. CrypTen's Taylor erf (``"erf"``)
  is off by 1.9 at x = -2 and by 700 at x = -3, and its large powers make the
  local truncation fail (a logit error of 4e9 on a trained digits model).
* ``matmul_backend = "int64"``: torch 2.13's int64 matmul on this CPU takes
  ~0.9 ms for 65x256 @ 256x768 (one thread), the three float64 limb products
  of "limbs" ~1.6-3.2 ms; both are exact mod 2^64 (test_ops compares them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from protocols import ring
from protocols.crypten_compat import crypten

ProviderKind = Literal["dealer", "tfp"]
MatmulBackend = Literal["int64", "limbs"]


@dataclass(frozen=True)
class SecureConfig:
    """Numeric and protocol settings of one secure forward pass."""

    precision_bits: int = 16
    exp_iterations: int = 8
    reciprocal_iters: int = 3
    reciprocal_range: tuple[int, int] = (-12, 12)  # log2 of the domain of the range start
    inv_sqrt_iters: int = 3
    inv_sqrt_range: tuple[int, int] = (-14, 14)
    ln_prescale: int = 4  # centred LayerNorm inputs are multiplied by this integer before squaring
    gelu: Literal["poly", "erf"] = "poly"
    erf_iterations: int = 8  # only for gelu = "erf"
    layernorm_eps: float = 1e-5  # torch.nn.LayerNorm's default
    matmul_backend: MatmulBackend = "int64"
    provider: ProviderKind = "dealer"

    def __post_init__(self) -> None:
        if not 8 <= self.precision_bits <= 24:
            raise ValueError(f"precision_bits must be in 8..24, got {self.precision_bits}")
        for name in ("exp_iterations", "reciprocal_iters", "inv_sqrt_iters", "erf_iterations", "ln_prescale"):
            if not 1 <= getattr(self, name) <= 32:
                raise ValueError(f"{name} must be in 1..32, got {getattr(self, name)}")
        if self.matmul_backend not in ("int64", "limbs"):
            raise ValueError(f"unknown matmul_backend {self.matmul_backend!r}")
        if self.gelu not in ("poly", "erf"):
            raise ValueError(f"unknown gelu {self.gelu!r}; choose poly or erf")
        if self.provider not in ("dealer", "tfp"):
            raise ValueError(f"unknown provider {self.provider!r}; choose dealer or tfp")

    def with_(self, **changes: Any) -> "SecureConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CONFIG = SecureConfig()
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
