"""Every numeric setting of the secure runtime, in one place, applied to ``crypten.cfg`` in one function.

``SecureConfig`` holds the fixed-point precision, the iteration counts and
initial guesses of CrypTen's iterative approximations (exp, reciprocal,
inverse square root, erf), the epsilons of the ReLU / THE-X attentions (these
come from the model's ``ArchSpec``), the matmul backend and the randomness
provider. ``apply_config(cfg)`` writes the CrypTen part into ``crypten.cfg``;
nothing else in ``protocols/`` sets ``crypten.cfg``.

How the defaults were chosen (measured on the ``*_2_4_8`` presets trained on
sklearn digits, 360 test images, and on random-weight ``vit_7_4_32`` inputs;
``pytest tests/protocols`` re-checks the tolerances stated there):

* ``precision_bits = 16``: the client's encoder (``mpcvit.sealing``) uses 2^16;
  CrypTen's default. 12 bits loses ~1e-2 of logit accuracy, 20 bits risks
  overflow of the 64-bit ring in the 2^40 intermediate of a product.
* ``exp_iterations = 8``: exp(x) = (1 + x/2^8)^(2^8); on softmax inputs after
  max-subtraction (x in [-20, 0]) the absolute error is < 3e-3 per entry, and
  secure logits stay within 0.05 of plaintext. 6 iterations (2 rounds fewer
  per softmax) raised the logit error to ~0.1 on 7_4_32 and is left as a knob.
* ``reciprocal_nr_iters = 10`` with CrypTen's 3 exp(1 - 2x) + 0.003 initial
  guess: the softmax / ReLU-softmax denominators lie in [1, 65] (ReLU-softmax:
  [eps, ~100]); fewer than 8 iterations do not converge for denominators
  above ~30.
* ``sqrt_nr_iters = 3`` with CrypTen's initial guess: the LayerNorm variance of
  these models lies in [1e-3, 50]; 3 Newton steps give < 1e-3 relative error.
* ``erf_iterations = 8`` (Taylor terms of CrypTen's erf-based GeLU): accurate to
  1e-3 on |x| < 2.5, and the MLP inputs of these models stay there.
* ``matmul_backend = "int64"``: torch 2.x on this CPU multiplies int64 matrices
  in ~0.9 ms (65x256 @ 256x768), faster than the 6 float64 limb products of
  the "limbs" backend (~3.2 ms); both are exact mod 2^64 (tests compare them).
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
    reciprocal_nr_iters: int = 10
    reciprocal_initial: float | None = None  # None: CrypTen's 3 exp(1 - 2x) + 0.003
    sqrt_nr_iters: int = 3
    sqrt_nr_initial: float | None = None  # None: CrypTen's 2.2 exp(-(x/2 + 0.2)) + 0.2 - x/1024
    erf_iterations: int = 8
    layernorm_eps: float = 1e-5  # torch.nn.LayerNorm's default
    matmul_backend: MatmulBackend = "int64"
    provider: ProviderKind = "dealer"

    def __post_init__(self) -> None:
        if not 8 <= self.precision_bits <= 24:
            raise ValueError(f"precision_bits must be in 8..24, got {self.precision_bits}")
        for name in ("exp_iterations", "reciprocal_nr_iters", "sqrt_nr_iters", "erf_iterations"):
            if not 1 <= getattr(self, name) <= 32:
                raise ValueError(f"{name} must be in 1..32, got {getattr(self, name)}")
        if self.matmul_backend not in ("int64", "limbs"):
            raise ValueError(f"unknown matmul_backend {self.matmul_backend!r}")
        if self.provider not in ("dealer", "tfp"):
            raise ValueError(f"unknown provider {self.provider!r}; choose dealer or tfp")

    def with_(self, **changes: Any) -> "SecureConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CONFIG = SecureConfig()


def apply_config(config: SecureConfig = DEFAULT_CONFIG) -> None:
    """Write the CrypTen part of ``config`` into ``crypten.cfg`` (call in every party, before any op)."""
    cfg = crypten.cfg
    cfg.encoder.precision_bits = config.precision_bits
    cfg.functions.exp_iterations = config.exp_iterations
    cfg.functions.reciprocal_method = "NR"
    cfg.functions.reciprocal_nr_iters = config.reciprocal_nr_iters
    cfg.functions.reciprocal_initial = config.reciprocal_initial
    cfg.functions.sqrt_nr_iters = config.sqrt_nr_iters
    cfg.functions.sqrt_nr_initial = config.sqrt_nr_initial
    cfg.functions.erf_iterations = config.erf_iterations
    ring.set_backend(config.matmul_backend)
    cfg.communicator.verbose = True  # the cost accounting reads the communicator's counters
