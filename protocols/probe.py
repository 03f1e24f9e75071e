"""Measurement-only probes of the secure runtime's numerics: local truncations and comparison inputs.

Off by default and never used by the service: ``probing(probe)`` patches, for
the duration of a ``with`` block in BOTH party processes,

* ``protocols.ops._rescale`` (the local truncation after every Beaver product
  and square of ``ops``), ``protocols.ops.truncate_shares`` (the ops that
  scale shares themselves: ``lower``, ``range_start``'s lines, the GeLU
  spline's coefficients) and CrypTen's ``ArithmeticSharedTensor.div_`` by a
  public integer (the local truncation of CrypTen's own products, squares,
  products with public reals and divisions), and
* ``protocols.compare.msb_steps`` (the input of every small-ring comparison)
  and ``protocols.sign.sign_steps`` (the one-round DCF sign gate: x - d_j
  for each public shift d_j),

so that each of these first reconstructs its input with an extra
``all_gather`` of the two shares (a measurement: the probe *opens* the
values, which the protocol never does) and records, per call site:

* truncations: the number of elements, sum |z| / 2^64 over them (z the
  product in ring units before the truncation; a local 2PC truncation of z
  fails, an error of about 2^(64-f) ulp, exactly when the two shares wrap
  around 2^64, which for uniform shares happens with probability |z| / 2^64),
  the number of wraps that really happened, and max |z|;
* comparisons: the number of values, max |x| (real units) and how many lay
  outside the ring's valid range |x| <= 2^(k-1+t) - 2^t ring units
  (``compare.valid_bound``, ``sign.valid_bound``: not 2^(k-1+t), the carry or
  borrow out of the t dropped bits costs the last 2^t).

A sign-gate site is named like a circuit's, with ``[gate]`` appended.

A call site is named after the innermost function of ``protocols/ops.py``
(or ``compare.py``) on the stack and the ``protocols/runtime.py`` line that
led to it. Both parties record the same figures; the caller keeps one copy.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from protocols import compare, ops, sign
from protocols.crypten_compat import crypten

import crypten.communicator as comm  # noqa: E402
from crypten.mpc.primitives import ArithmeticSharedTensor  # noqa: E402

_HELPERS = {"_rescale", "truncate_shares", "_truncate_probe", "lower", "beaver_steps", "square_steps", "beaver_products", "matmul", "<lambda>", "_record_truncation",
            "_div_probe", "_rescale_probe", "_msb_probe", "msb_steps", "ltz", "run", "run_one", "parallel",
            "_sign_probe", "_record_compare"}


def _site() -> str:
    """'<ops function>:<line> <- <runtime function>:<line>' of the innermost frames that name the op."""
    f = sys._getframe(2)
    op = rt = ""
    while f is not None:
        path, name = f.f_code.co_filename, f.f_code.co_name
        if not op and (path.endswith("protocols/ops.py") or path.endswith("protocols/compare.py")) and name not in _HELPERS:
            op = f"{name}:{f.f_lineno}"
        if path.endswith("protocols/runtime.py"):
            rt = f"{name}:{f.f_lineno}"
            break
        f = f.f_back
    return f"{op or '?'} <- {rt or '?'}"


@dataclass
class TruncationSite:
    elements: int = 0
    expected_failures: float = 0.0  # sum |z| / 2^64
    wraps: int = 0  # truncations whose shares really wrapped
    max_abs_z: float = 0.0  # ring units before the truncation
    divisor: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"elements": self.elements, "expected_failures": self.expected_failures, "wraps": self.wraps,
                "max_abs_z": self.max_abs_z, "divisor": self.divisor}


@dataclass
class CompareSite:
    values: int = 0
    max_abs: float = 0.0  # real units (ring units / 2^f)
    out_of_range: int = 0
    ring: tuple[int, int] = (0, 0)
    bound: float = 0.0  # real units

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "max_abs": self.max_abs, "out_of_range": self.out_of_range,
                "ring": list(self.ring), "bound": self.bound}


@dataclass
class Probe:
    """What one ``probing`` block saw (per call site)."""

    truncations: dict[str, TruncationSite] = field(default_factory=dict)
    compares: dict[str, CompareSite] = field(default_factory=dict)
    calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"truncations": {k: v.to_dict() for k, v in self.truncations.items()},
                "compares": {k: v.to_dict() for k, v in self.compares.items()}}


_active: list[Probe] = []


def _open(share: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both parties' shares of ``share`` (a measurement-only opening)."""
    both = comm.get().all_gather(share.contiguous())
    return both[0], both[1]


def _record_truncation(share: torch.Tensor, divisor: int) -> None:
    if not _active or divisor <= 1:
        return
    probe = _active[-1]
    s0, s1 = _open(share)
    z = s0 + s1  # the value mod 2^64, read as signed
    wrapped = ((s0 >= 0) == (s1 >= 0)) & ((z >= 0) != (s0 >= 0))  # the signed sum left int64
    absz = z.double().abs()
    site = probe.truncations.setdefault(_site(), TruncationSite())
    site.elements += z.numel()
    site.expected_failures += float(absz.sum()) / 2.0**64
    site.wraps += int(wrapped.sum())
    site.max_abs_z = max(site.max_abs_z, float(absz.max()) if absz.numel() else 0.0)
    site.divisor = int(divisor)


@contextmanager
def probing(probe: Probe) -> Iterator[Probe]:
    """Record truncations and comparison inputs of the secure ops run inside the block (both parties)."""
    orig_rescale = ops._rescale
    orig_truncate = ops.truncate_shares
    orig_div = ArithmeticSharedTensor.div_
    orig_msb = compare.msb_steps
    orig_sign = sign.sign_steps

    def _rescale_probe(z: torch.Tensor, x: Any, y: Any) -> Any:
        sx, sy = x.encoder.scale, y.encoder.scale
        _record_truncation(z, int((sx * sy) // max(sx, sy)))
        return orig_rescale(z, x, y)

    def _truncate_probe(share: torch.Tensor, divisor: Any) -> torch.Tensor:
        d = int(divisor.max()) if isinstance(divisor, torch.Tensor) else int(divisor)
        if comm.get().get_world_size() == 2:
            _record_truncation(share, d)
        return orig_truncate(share, divisor)

    def _div_probe(self: ArithmeticSharedTensor, y: Any) -> Any:
        d = y
        if isinstance(d, float) and int(d) == d:
            d = int(d)
        if isinstance(d, int) and comm.get().get_world_size() == 2:
            _record_truncation(self.share, d)
        return orig_div(self, y)

    def _record_compare(x: Any, ring_bits: int, drop_bits: int, shifts: Any = (0,), suffix: str = "") -> None:
        s0, s1 = _open(x._tensor.share)
        z = (s0 + s1).reshape(1, -1) - torch.tensor(list(shifts), dtype=torch.int64).view(-1, 1)  # x - d_j
        v = z.double().abs()
        f = crypten.cfg.encoder.precision_bits
        bound = compare.valid_bound(ring_bits, drop_bits)  # the same for sign.valid_bound
        site = _active[-1].compares.setdefault(_site() + suffix, CompareSite())
        site.values += v.numel()
        site.max_abs = max(site.max_abs, float(v.max()) / 2.0**f if v.numel() else 0.0)
        site.out_of_range += int((v > bound).sum())
        site.ring = (ring_bits, drop_bits)
        site.bound = bound / 2.0**f

    def _msb_probe(x: Any, ring_bits: int = 32, drop_bits: int = 0):  # noqa: ANN202 - a step protocol
        if _active:
            _record_compare(x, ring_bits, drop_bits)
        return (yield from orig_msb(x, ring_bits, drop_bits))

    def _sign_probe(x: Any, shifts: Any = (0,), ring_bits: int = 32, drop_bits: int = 4, product: bool = False):  # noqa: ANN202
        if _active:
            _record_compare(x, ring_bits, drop_bits, shifts, " [gate]")
        return (yield from orig_sign(x, shifts, ring_bits, drop_bits, product))

    ops._rescale = _rescale_probe
    ops.truncate_shares = _truncate_probe
    ArithmeticSharedTensor.div_ = _div_probe
    compare.msb_steps = _msb_probe
    sign.sign_steps = _sign_probe
    _active.append(probe)
    try:
        yield probe
    finally:
        _active.pop()
        ops._rescale = orig_rescale
        ops.truncate_shares = orig_truncate
        ArithmeticSharedTensor.div_ = orig_div
        compare.msb_steps = orig_msb
        sign.sign_steps = orig_sign
