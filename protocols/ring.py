"""Exact matrix products on the ring Z_2^64 (int64 tensors that wrap).

Two backends compute the same ``(A @ B) mod 2^64``:

* ``"int64"``: torch's integer matmul (wraps modulo 2^64 natively).
* ``"limbs"``: split each element into three balanced limbs of w = 22 bits,
  ``x = x_0 + x_1 2^22 + x_2 2^44`` with ``|x_0|, |x_1| <= 2^21`` and
  ``|x_2| <= 2^19``; then, modulo 2^64 (limb pairs with i + j >= 3 carry a
  factor 2^66 and vanish),

      A B = S_0 + 2^22 S_1 + 2^44 S_2,
      S_0 = A_0 B_0,  S_1 = [A_0 A_1] [B_1; B_0],  S_2 = [A_0 A_1 A_2] [B_2; B_1; B_0],

  three float64 BLAS matmuls with inner sizes K, 2K, 3K. Every partial sum is
  an integer of magnitude <= 3K 2^42 < 2^53 for K <= 682, so float64 is
  exact; larger K is split into chunks. No rounds: local computation.

Which one is faster depends on the CPU and torch build; ``SecureConfig.matmul_backend``
picks one (see its docstring for the measurement).
"""

from __future__ import annotations

import torch

LIMB_BITS = 22
_MAX_K = (1 << 53) // (3 << (2 * (LIMB_BITS - 1)))  # 682: largest inner size that stays exact
_backend = "int64"


def set_backend(name: str) -> None:
    """Select the backend of ``ring_matmul`` (called by ``protocols.config.apply_config``)."""
    global _backend
    if name not in ("int64", "limbs"):
        raise ValueError(f"unknown ring matmul backend {name!r}; choose int64 or limbs")
    _backend = name


def get_backend() -> str:
    return _backend


def split_limbs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Balanced limbs (x_0, x_1, x_2) as float64 with x = x_0 + x_1 2^22 + x_2 2^44 exactly (int64)."""
    half, mask = 1 << (LIMB_BITS - 1), (1 << LIMB_BITS) - 1
    x0 = ((x + half) & mask) - half
    r = (x - x0) >> LIMB_BITS  # exact: x - x0 is a multiple of 2^22
    x1 = ((r + half) & mask) - half
    x2 = (r - x1) >> LIMB_BITS
    return x0.double(), x1.double(), x2.double()


def _limb_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a0, a1, a2 = split_limbs(a)
    b0, b1, b2 = split_limbs(b)
    s0 = torch.matmul(a0, b0)
    s1 = torch.matmul(torch.cat([a0, a1], -1), torch.cat([b1, b0], -2))
    s2 = torch.matmul(torch.cat([a0, a1, a2], -1), torch.cat([b2, b1, b0], -2))
    return s0.long() + (s1.long() << LIMB_BITS) + (s2.long() << (2 * LIMB_BITS))


def ring_matmul(a: torch.Tensor, b: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """``torch.matmul(a, b)`` modulo 2^64 for int64 tensors (broadcasting like torch.matmul)."""
    if a.dtype != torch.int64 or b.dtype != torch.int64:
        raise ValueError(f"ring_matmul needs int64 tensors, got {a.dtype} and {b.dtype}")
    backend = backend or _backend
    if backend == "int64":
        return torch.matmul(a, b)
    if backend != "limbs":
        raise ValueError(f"unknown ring matmul backend {backend!r}")
    if a.dim() == 1 or b.dim() == 1:
        return torch.matmul(a, b)
    K = a.shape[-1]
    if K <= _MAX_K:
        return _limb_matmul(a, b)
    out = None
    for k in range(0, K, _MAX_K):
        part = _limb_matmul(a[..., k : k + _MAX_K], b[..., k : k + _MAX_K, :])
        out = part if out is None else out + part
    return out
