"""Correlated-randomness providers: a dealer with CrypTen's TTP semantics and no online rounds, and TFP.

The dealer (``DealerProvider``)
-------------------------------
CrypTen's TTP semantics, without CrypTen's synchronous TTP round trips:

* For one *batch* (typically one forward pass) the dealer draws one fresh
  256-bit key per party from the OS (``mpcvit.prg.new_key``), never reused.
  Party ``i`` expands its key with the project's AES-256-CTR PRG
  (``mpcvit.prg.PRG``) into its shares of every random value, in request
  order. No ``torch.Generator`` touches a share, a triple or a mask.
* Party 1's randomness comes from its seed alone: for a Beaver triple it draws
  ``a_1, b_1, c_1``; party 0 draws only ``a_0, b_0`` and receives the
  *correction* ``c_0 = op(a_0 + a_1, b_0 + b_1) - c_1`` from the dealer.
  Likewise ``square`` (r, r^2), ``binary`` (a, b, a & b; XOR shares),
  ``wraps`` (r, theta_r = wraps of (r_0, r_1)) and ``B2A`` (one random bit as
  XOR shares rB and additive shares rA). ``dealer_corrections(keys, requests)``
  is the dealer's side: a pure function of both keys and the request list.
* The runtime knows every shape of a forward pass before the request: a
  *local* dry run (``DealerProvider.recording()`` inside
  ``protocols.planning.offline``, which answers every collective locally, so
  nothing is sent to the peer) records the request sequence
  (``list[Request]``) at model load; before an inference party 0 calls
  ``fetch(requests)`` once (the offline phase) and then consumes the
  corrections in order. The online phase has *no* dealer rounds. Traffic with
  the dealer is counted in ``DealerProvider.dealer_bytes``, apart from the
  online counters of CrypTen's communicator.

Party 0's generator draws, per request (party 1's adds the last item):

=========  ==============================  =====================================
kind       party 0 draws (party 1 draws)   party 0's correction (from the dealer)
=========  ==============================  =====================================
additive   a_0, b_0          (+ c_1)       op(a, b) - c_1
square     r_0               (+ s_1)       r * r - s_1
binary     a_0, b_0 (64-bit) (+ c_1)       (a & b) ^ c_1
wraps      r_0               (+ t_1)       wraps(r_0, r_1) - t_1
B2A        rB_0 (1 bit)      (+ rA_1)      (rB_0 ^ rB_1) - rA_1
bitmul     rB_0 (1 bit), s_0 (+ rA_1, g_1) [r - rA_1, r s - g_1], r = rB_0 ^ rB_1, s = s_0 + s_1
trig       r_0 (n)           (+ T_1)       T - T_1, T = round(2^f [cos(k_j theta_r); sin(k_j theta_r)])
=========  ==============================  =====================================

``trig`` (``protocols.ops.gelu_fourier``) is a mask r = r_0 + r_1 with the
table T (2K, n) of its harmonics, theta_r = 2 pi (r mod 2^p) / 2^p: a sine
series of the masked value in one opening.

``bitmul`` (``protocols.compare.bitmul_steps``) is a random bit r as XOR
shares rB and additive shares rA with a random ring element s and g = r s:
a bit times a shared value in one round.

where ``a = a_0 + a_1`` (mod 2^64), ``a = a_0 ^ a_1`` for binary; ring
elements are ``PRG.ring`` draws, bits ``PRG.bits`` draws.

What each party receives, and why it is uniform: party 1 receives only its
key; party 0 its key and the corrections. A correction is the correlated
value minus one of party 1's PRG draws that appears nowhere else (c_1,
s_1, t_1, rA_1, g_1, T_1), so it is uniform on Z_2^64 (or, for binary,
uniform 64-bit words) and independent of everything party 0 holds. The
openings the parties exchange online (Beaver's x - a, AND's x ^ a, B2A's
b ^ rB, bitmul's z and y - s) are each masked by a fresh PRG draw of the
sender's that the receiver never learns (``tests/protocols/test_uniformity.py``
checks them statistically).

Use from the party process (``parties/``)::

    provider = DealerProvider(rank, fetch=my_grpc_fetch)   # fetch only needed on rank 0
    install_provider(provider)                              # CrypTen's ops now use it
    ...
    plan = secure_vit.plan(batch_size)                      # list[Request], recorded locally once per batch size
    provider.begin_batch(key, plan)                         # rank 0: calls fetch(plan) now (offline)
    logits_share, costs = secure_vit.forward_shares(x_share)

``SecureViT.forward_shares`` calls ``begin_batch`` itself when given a
``BatchSource`` (see ``InProcessDealer`` for the in-process simulation used by
tests and ``mpcvit eval-private``).

TFP
---
``TFPProvider`` is CrypTen's "trusted first party" (party 0 makes every tuple
and shares it with zero-sharing PRGs): insecure against party 0, kept only to
compare with published numbers; every result made with it says
``"provider": "tfp"``.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from mpcvit.prg import NONCE_BYTES, PRG, derive_key
from protocols import dcf
from protocols.ops import trig_table
from protocols.crypten_compat import crypten, generate_kbit_random_tensor, generate_random_ring_element

from crypten.common.util import count_wraps  # noqa: E402
from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor  # noqa: E402
from crypten.mpc.provider.provider import TupleProvider  # noqa: E402
from crypten.mpc.provider.tfp_provider import TrustedFirstParty  # noqa: E402

log = logging.getLogger(__name__)

REQUEST_KINDS = ("additive", "square", "binary", "wraps", "B2A", "bitmul", "dcf", "fixed", "trig")
BOTH_RANKS_KINDS = ("dcf",)  # kinds whose dealer material goes to party 1 as well (DCF correction words)
DCF_PARAMS = ("bits", "drop", "payload")
TRIG_PARAMS = ("frac", "harmonics", "period", "step")  # trig: 2^frac scale, K harmonics 1 + step j, period 2^period ring units
MAX_HARMONICS = 64
TRIPLE_OPS = ("mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
PROVIDER_NAME = "MPCVIT_DEALER"
BYTES_PER_ELEMENT = 8
MODEL_ID_BITS = 128  # a model load id (party 0 draws it from its cryptographic PRG)
USED_KEYS_KEPT = 1 << 16  # digests of the most recent batch keys a DealerProvider refuses to see again


@dataclass(frozen=True)
class Request:
    """One randomness request, as CrypTen's provider receives it (mirrors dealer.proto's RandomnessRequest).

    ``size0``: size of the first operand (additive, binary) or of the value
    (square, wraps, B2A); ``size1``: of the second operand (additive, binary);
    ``op``: the torch op of an additive triple; ``kwargs``: its extra keyword
    arguments (stride, padding, ...) as sorted (name, value) pairs of ints / tuples of ints.
    """

    kind: str
    size0: tuple[int, ...]
    size1: tuple[int, ...] = ()
    op: str = ""
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in REQUEST_KINDS:
            raise ValueError(f"unknown randomness kind {self.kind!r}; choose from {REQUEST_KINDS}")
        if self.kind == "additive" and self.op not in TRIPLE_OPS:
            raise ValueError(f"unknown triple op {self.op!r}; choose from {TRIPLE_OPS}")
        if self.kind == "fixed":
            params = dict(self.kwargs)
            if self.op != "matmul" or sorted(params) != ["mask", "model"] or len(self.size1) != 2:
                raise ValueError("a fixed request is a matmul with a 2-d weight and kwargs mask and model")
            if not (isinstance(params["mask"], int) and 0 <= params["mask"] < 2**63
                    and isinstance(params["model"], int) and 0 <= params["model"] < 2**MODEL_ID_BITS):
                raise ValueError(f"a fixed request's mask is a non-negative 63-bit integer and its model a {MODEL_ID_BITS}-bit load id")
        if any(s < 0 for s in (*self.size0, *self.size1)):
            raise ValueError("negative dimension in a randomness request")
        if self.kind == "dcf":
            params = dict(self.kwargs)
            if sorted(params) != sorted(DCF_PARAMS) or len(self.size0) != 1 or self.size1:
                raise ValueError(f"a dcf request has a 1-d size0 and kwargs {DCF_PARAMS}")
            bits, drop, payload = (params[k] for k in DCF_PARAMS)
            if not (isinstance(bits, int) and 2 <= bits <= dcf.MAX_BITS + 1 and isinstance(drop, int)
                    and 0 <= drop <= 64 - bits and payload in (0, 1, 2)):
                raise ValueError(f"bad dcf parameters {params}: bits in 2..{dcf.MAX_BITS + 1}, drop in 0..64-bits, payload 0, 1 or 2")
        if self.kind == "trig":
            params = dict(self.kwargs)
            if sorted(params) != sorted(TRIG_PARAMS) or len(self.size0) != 1 or self.size1:
                raise ValueError(f"a trig request has a 1-d size0 and kwargs {TRIG_PARAMS}")
            k, period, frac, step = (params[n] for n in ("harmonics", "period", "frac", "step"))
            if not (isinstance(k, int) and 1 <= k <= MAX_HARMONICS and isinstance(period, int) and 1 <= period <= 62
                    and isinstance(frac, int) and 0 <= frac <= 30 and step in (1, 2)):
                raise ValueError(f"bad trig parameters {params}: harmonics in 1..{MAX_HARMONICS}, period in 1..62, "
                                 "frac in 0..30, step 1 or 2")

    @property
    def trig_params(self) -> tuple[int, int, int, int]:
        """(harmonics K, period bits, fraction bits, step) of a trig request."""
        params = dict(self.kwargs)
        return params["harmonics"], params["period"], params["frac"], params["step"]

    @property
    def dcf_params(self) -> tuple[int, int, int]:
        """(ring bits n, dropped bits t, payload P) of a dcf request."""
        params = dict(self.kwargs)
        return params["bits"], params["drop"], params["payload"]

    @property
    def kwargs_json(self) -> str:
        return json.dumps(dict(self.kwargs), sort_keys=True)

    @classmethod
    def from_wire(cls, kind: str, size0: Sequence[int], size1: Sequence[int] = (), op: str = "", kwargs_json: str = "") -> "Request":
        """Build a request from dealer.proto's fields (validates them; raises ValueError)."""
        try:
            kw = json.loads(kwargs_json) if kwargs_json else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"kwargs_json is not JSON: {exc}") from exc
        if not isinstance(kw, dict):
            raise ValueError("kwargs_json must be a JSON object")
        return cls(kind, tuple(int(s) for s in size0), tuple(int(s) for s in size1), op, _freeze_kwargs(kw))

    def output_size(self, rank: int = 0) -> tuple[int, ...]:
        """Shape of the correction tensor that answers this request for party ``rank`` ((0,) where it gets none)."""
        if self.kind == "dcf":
            bits, _, payload = self.dcf_params
            # party 0: corrections of [m] and [m r] (payload 1, 2), or of m's XOR share, [rho] and [r rho] (payload 0)
            extra = (3 if payload == dcf.BIT_PAYLOAD else payload) if rank == 0 else 0
            return (extra + dcf.key_words(bits - 1, payload), self.size0[0])  # one column per value
        if rank != 0:
            return (0,)
        if self.kind == "trig":
            return (2 * self.trig_params[0], self.size0[0])  # [cos(k theta_r); sin(k theta_r)], one column per value
        if self.kind in ("square", "wraps", "B2A"):
            return self.size0
        if self.kind == "bitmul":
            return (2, *self.size0)
        if self.kind == "binary":
            return tuple(torch.broadcast_shapes(self.size0, self.size1))
        if self.kind == "fixed":
            return (*self.size0[:-1], self.size1[-1])
        return _triple_shape(self.op, self.size0, self.size1, self.kwargs)

    def correction_bytes(self, rank: int = 0) -> int:
        n = 1
        for s in self.output_size(rank):
            n *= s
        return n * BYTES_PER_ELEMENT


Fetch = Callable[[list[Request]], list[torch.Tensor]]
"""Party 0's source of corrections: all corrections of a batch, in request order, in one call."""


def _freeze_kwargs(kwargs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    def freeze(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return tuple(int(i) for i in v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"triple op kwargs must be ints or lists of ints, got {v!r}")
        return int(v)

    return tuple(sorted((str(k), freeze(v)) for k, v in kwargs.items()))


@functools.lru_cache(maxsize=4096)
def _triple_shape(op: str, size0: tuple[int, ...], size1: tuple[int, ...], kwargs: tuple[tuple[str, Any], ...]) -> tuple[int, ...]:
    """The output shape of a triple's op (cached: every forward checks each planned request's shape)."""
    return tuple(_triple_op(op, torch.zeros(size0), torch.zeros(size1), dict(kwargs)).shape)


def _triple_op(op: str, a: torch.Tensor, b: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    if op == "matmul":
        from protocols.ring import ring_matmul

        return ring_matmul(a, b) if a.dtype == torch.int64 else a @ b
    return getattr(torch, op)(a, b, **kwargs)


def _ring(size: Sequence[int], g: PRG | None) -> torch.Tensor:
    """Ring elements from ``g``; zeros in a dry run (``g`` None)."""
    return torch.zeros(tuple(size), dtype=torch.int64) if g is None else g.ring(tuple(size))


def _bits(size: Sequence[int], g: PRG | None, bitlength: int | None = None) -> torch.Tensor:
    return torch.zeros(tuple(size), dtype=torch.int64) if g is None else g.bits(tuple(size), bitlength)


def _generator(key: bytes) -> PRG:
    """A party's batch stream: the PRG under its batch key (32 bytes from the dealer)."""
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"a batch key is 32 bytes, got {type(key).__name__}")
    return PRG(bytes(key))


def fixed_mask(model_key: bytes | None, index: int, size: Sequence[int]) -> torch.Tensor:
    """A party's share of the fixed mask of weight ``index`` of a loaded model: its own model key's PRG, nonce = index.

    Zeros for a dry run (``model_key`` None).
    """
    if model_key is None:
        return torch.zeros(tuple(size), dtype=torch.int64)
    return PRG(bytes(model_key), int(index).to_bytes(NONCE_BYTES, "little")).ring(tuple(size))


ModelKeys = Callable[[int], tuple[bytes, bytes]]
"""The dealer's lookup: model id -> both parties' model keys (for ``fixed`` requests)."""


def needs_corrections(rank: int, requests: Sequence[Request]) -> bool:
    """Whether party ``rank`` receives dealer material for ``requests`` (party 0 always; party 1 for DCF keys)."""
    return rank == 0 or any(r.kind in BOTH_RANKS_KINDS for r in requests)


def dealer_corrections(keys: tuple[bytes, bytes], requests: Sequence[Request], rank: int = 0,
                       model_keys: ModelKeys | None = None) -> list[torch.Tensor]:
    """Party ``rank``'s corrections (``all_corrections`` for one rank)."""
    if rank not in (0, 1):
        raise ValueError(f"rank must be 0 or 1, got {rank}")
    return all_corrections(keys, requests, (rank,), model_keys)[rank]


def all_corrections(keys: tuple[bytes, bytes], requests: Sequence[Request], ranks: Sequence[int] = (0, 1),
                    model_keys: ModelKeys | None = None) -> dict[int, list[torch.Tensor]]:
    """Each of ``ranks``' corrections for ``requests``, from both parties' batch keys (the dealer's whole job).

    One replay serves both parties (a DCF key pair is made once). Replays each party's PRG stream in request order (see the module table),
    reconstructs the plaintext randomness and returns, per request, party 0's
    share of the correlated value (its other shares are its own PRG draws);
    for ``dcf`` requests both parties also get the keys' correction words
    (``dcf_material``). Party 1's list has an empty tensor for every other
    kind. ``fixed`` requests (a weight's Beaver triple whose weight mask b is
    fixed for the model's lifetime: ``SecureViT``'s weight masks) read b from
    both parties' model keys (``model_keys``). Pure: the same keys and
    requests give the same corrections.
    """
    if keys[0] == keys[1]:
        raise ValueError("the two parties' batch keys must differ")
    g0, g1 = _generator(keys[0]), _generator(keys[1])
    out: list[torch.Tensor] = []  # party 0's list (empties unless asked for: its triple ops are the costly part)
    ones: list[torch.Tensor] = []  # party 1's list
    empty = torch.zeros(0, dtype=torch.int64)
    need0 = 0 in ranks
    for req in requests:
        if req.kind == "dcf":
            both = dcf_material(req, g0, g1)
            out.append(both[0])
            ones.append(both[1])
            continue
        ones.append(empty)
        if req.kind == "trig":
            k, period, frac, step = req.trig_params
            r = _ring(req.size0, g0) + _ring(req.size0, g1)
            t1 = _ring(req.output_size(), g1)
            if need0:
                out.append(trig_table(r, k, period, frac, step) - t1)
            else:
                out.append(empty)
        elif req.kind == "fixed":
            a = _ring(req.size0, g0) + _ring(req.size0, g1)
            c1 = _ring(req.output_size(), g1)
            if need0:
                if model_keys is None:
                    raise ValueError("a fixed request needs the model's keys")
                params = dict(req.kwargs)
                mk = model_keys(params["model"])
                b = fixed_mask(mk[0], params["mask"], req.size1) + fixed_mask(mk[1], params["mask"], req.size1)
                out.append(_triple_op("matmul", a, b, {}) - c1)
            else:
                out.append(empty)
        elif req.kind == "additive":
            a = _ring(req.size0, g0) + _ring(req.size0, g1)
            b = _ring(req.size1, g0) + _ring(req.size1, g1)
            if need0:
                c = _triple_op(req.op, a, b, dict(req.kwargs))
                out.append(c - _ring(c.shape, g1))
            else:
                _ring(req.output_size(), g1)
                out.append(empty)
        elif req.kind == "square":
            r = _ring(req.size0, g0) + _ring(req.size0, g1)
            s1 = _ring(req.size0, g1)
            out.append(r * r - s1 if need0 else empty)
        elif req.kind == "binary":
            a = _bits(req.size0, g0) ^ _bits(req.size0, g1)
            b = _bits(req.size1, g0) ^ _bits(req.size1, g1)
            c = a & b
            c1 = _bits(c.shape, g1)
            out.append(c ^ c1 if need0 else empty)
        elif req.kind == "wraps":
            r0, r1 = _ring(req.size0, g0), _ring(req.size0, g1)
            t1 = _ring(req.size0, g1)
            out.append(count_wraps([r0, r1]) - t1 if need0 else empty)
        elif req.kind == "B2A":
            rb = _bits(req.size0, g0, 1) ^ _bits(req.size0, g1, 1)
            ra1 = _ring(req.size0, g1)
            out.append(rb - ra1 if need0 else empty)
        else:  # bitmul
            r = _bits(req.size0, g0, 1) ^ _bits(req.size0, g1, 1)
            s0 = _ring(req.size0, g0)
            s = s0 + _ring(req.size0, g1)
            ra1, g_1 = _ring(req.size0, g1), _ring(req.size0, g1)
            out.append(torch.stack([r - ra1, r * s - g_1]) if need0 else empty)
    return {r: (out, ones)[r] for r in ranks}


def select_material(req: Request, g0: PRG | None, g1: PRG | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both parties' dealer material for one ``dcf`` request of payload 0 (``protocols.sign.relu_select_steps``).

    Draws, in this order, party 0: its mask share r_0 (E ring elements), root
    seeds (E x 2 words) and rho_0 (E bits, the low bit of a ring element);
    party 1: r_1, root seeds, m_1 and rho_1 (bits, likewise), [rho]_1 and
    [r rho]_1. With r = r_0 + r_1, r' = floor(r / 2^t) mod 2^n, m = the top bit
    of r', alpha = r' mod 2^(n-1) and rho = rho_0 xor rho_1, the one-bit DCF keys
    (``dcf.keygen_bit``) share [y < alpha] on n-1 bits. Party 0 receives the
    rows m xor m_1, rho - [rho]_1 and r rho - [r rho]_1, then the correction
    words; party 1 the correction words.
    """
    bits, _, _ = req.dcf_params
    n = req.size0[0]
    r0, seed0, rho0 = _ring(req.size0, g0), _ring((n, 2), g0), _ring(req.size0, g0) & 1
    r1, seed1 = _ring(req.size0, g1), _ring((n, 2), g1)
    m1, rho1 = _ring(req.size0, g1) & 1, _ring(req.size0, g1) & 1
    rho_a1, rrho1 = _ring(req.size0, g1), _ring(req.size0, g1)
    r = r0 + r1
    m, alpha = _split_mask(r, req)
    words = torch.from_numpy(dcf.keygen_bit(alpha, bits - 1, seed0.numpy().view(np.uint64),
                                            seed1.numpy().view(np.uint64)).view(np.int64))
    rho = rho0 ^ rho1
    extra = torch.stack([torch.from_numpy(m.view(np.int64)) ^ m1, rho - rho_a1, r * rho - rrho1])
    return torch.cat([extra, words]), words


def _split_mask(r: torch.Tensor, req: Request) -> tuple[np.ndarray, np.ndarray]:
    """(m, alpha) of a sign gate's mask r: r' = floor(r / 2^t) mod 2^n, m its top bit, alpha its n - 1 low bits."""
    bits, drop, _ = req.dcf_params
    reduced = (r.numpy().view(np.uint64) >> np.uint64(drop)) & np.uint64((1 << bits) - 1)
    return reduced >> np.uint64(bits - 1), reduced & np.uint64((1 << (bits - 1)) - 1)


def dcf_material(req: Request, g0: PRG | None, g1: PRG | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both parties' dealer material for one ``dcf`` request (the sign gate of ``protocols.sign``).

    Draws, in this order, party 0: its mask share r_0 (E ring elements) and
    root seeds (E x 2 words); party 1: r_1, root seeds, [m]_1 and, for
    payload 2, [m r]_1. With r = r_0 + r_1 (mod 2^64), r' = floor(r / 2^t)
    mod 2^n, m = the top bit of r' and alpha = r' mod 2^(n-1), the DCF keys
    share f(y) = [y < alpha] (1 - 2m) (payload 1) or [y < alpha] ((1 - 2m),
    (1 - 2m) r) (payload 2) on n-1 bits. Party 0 receives the rows m - m_1,
    m r - (m r)_1 and then the correction words (one column per value, level-
    major rows: ``dcf.pack``); party 1 the correction words.
    """
    bits, drop, payload = req.dcf_params
    if payload == dcf.BIT_PAYLOAD:
        return select_material(req, g0, g1)
    n = req.size0[0]
    r0, seed0 = _ring(req.size0, g0), _ring((n, 2), g0)
    r1, seed1 = _ring(req.size0, g1), _ring((n, 2), g1)
    m1 = _ring(req.size0, g1)
    rm1 = _ring(req.size0, g1) if payload == 2 else None
    r_t = r0 + r1
    m, alpha = _split_mask(r_t, req)
    r = r_t.numpy().view(np.uint64)
    sign = np.uint64(1) - np.uint64(2) * m
    beta = sign[:, None] if payload == 1 else np.stack([sign, sign * r], 1)
    words = torch.from_numpy(dcf.keygen(alpha, beta, bits - 1, seed0.numpy().view(np.uint64),
                                        seed1.numpy().view(np.uint64)).view(np.int64))
    m_t = torch.from_numpy(m.view(np.int64))
    extra = [m_t - m1]
    if payload == 2:
        extra.append(torch.from_numpy((m * r).view(np.int64)) - rm1)
    return torch.cat([torch.stack(extra), words]), words


class BatchSource(Protocol):
    """Where a party gets the key (and its corrections) of its next batch."""

    def next_batch(self, rank: int, requests: list[Request]) -> tuple[bytes, list[torch.Tensor] | None]:
        """This party's batch key and its corrections of ``requests`` (None where ``needs_corrections`` is false)."""
        ...

    def model_key(self, rank: int, model_id: int) -> bytes:
        """This party's key of the fixed weight masks of model load ``model_id`` (32 bytes, one per load)."""
        ...


@dataclass
class InProcessDealer:
    """A simulated dealer for tests, benchmarks and ``mpcvit eval-private``: both ranks derive the same batch keys.

    Each rank holds an instance with the same secret ``master_key`` (32 bytes
    from ``mpcvit.prg.new_key()``, made by whoever starts both parties and
    handed to them, never a constant); batch ``k``'s key for rank ``i`` is
    HMAC-SHA256(master_key, "batch/k/rank/i"): fresh per batch, never reused
    within one master key. Rank 0 computes its corrections with
    ``dealer_corrections`` in-process, so it *could* know party 1's key: a
    simulation of the dealer's data flow and costs, not of its trust model
    (the real dealer is the gRPC one in ``parties/``).
    """

    master_key: bytes
    batch: int = 0
    dealer_seconds: float = 0.0
    dealer_cpu_seconds: float = 0.0  # the process's CPU time over the same calls (every thread: key generation's too)

    def __post_init__(self) -> None:
        if not isinstance(self.master_key, (bytes, bytearray)) or len(self.master_key) < 16:
            raise ValueError("InProcessDealer needs a secret master key of at least 128 bits (mpcvit.prg.new_key())")

    def keys(self, batch: int) -> tuple[bytes, bytes]:
        return tuple(derive_key(self.master_key, f"batch/{batch}/rank/{rank}") for rank in (0, 1))  # type: ignore[return-value]

    def next_batch(self, rank: int, requests: list[Request]) -> tuple[bytes, list[torch.Tensor] | None]:
        import time

        keys = self.keys(self.batch)
        self.batch += 1
        if not needs_corrections(rank, requests):
            return keys[rank], None
        t0, c0 = time.perf_counter(), time.process_time()
        corrections = dealer_corrections(keys, requests, rank, self.model_keys)
        self.dealer_seconds += time.perf_counter() - t0
        self.dealer_cpu_seconds += time.process_time() - c0
        return keys[rank], corrections

    def model_keys(self, model_id: int) -> tuple[bytes, bytes]:
        """Both parties' keys of the fixed weight masks of model load ``model_id``."""
        return tuple(derive_key(self.master_key, f"model/{model_id}/rank/{rank}") for rank in (0, 1))  # type: ignore[return-value]

    def model_key(self, rank: int, model_id: int) -> bytes:
        return self.model_keys(model_id)[rank]


@dataclass
class SignMaterial:
    """One party's correlated randomness for a sign gate: int64 shares of the mask r, of m and m r, and DCF keys."""

    r: torch.Tensor
    m: torch.Tensor
    rm: torch.Tensor | None
    keys: dcf.DCFKeys


@dataclass
class SelectMaterial:
    """One party's material for ``protocols.sign.relu_select_steps``: int64 shares of the mask r, XOR shares (int64
    0 / 1) of m and rho, additive shares of rho and r rho, and its one-bit DCF keys (root seeds, correction words)."""

    r: torch.Tensor
    m: torch.Tensor
    rho: torch.Tensor
    rho_a: torch.Tensor
    rrho: torch.Tensor
    seed: np.ndarray
    words: np.ndarray


@dataclass
class TrigMaterial:
    """One party's material for ``ops.gelu_fourier``: int64 shares of the mask r (n,) and of the table (2K, n)."""

    r: torch.Tensor
    cs: torch.Tensor


@dataclass
class _Batch:
    generator: PRG
    requests: list[Request] | None = None
    corrections: list[torch.Tensor] | None = None
    position: int = 0


@dataclass
class DealerStats:
    """Offline (dealer) traffic, counted apart from the online communicator."""

    batches: int = 0
    requests: int = 0
    bytes_received: int = 0  # corrections, party 0 only
    seconds: float = 0.0  # time spent in fetch()

    def to_dict(self) -> dict[str, float | int]:
        return {"batches": self.batches, "requests": self.requests, "bytes_received": self.bytes_received, "seconds": round(self.seconds, 4)}


class DealerProvider(TupleProvider):
    """CrypTen tuple provider with TTP semantics whose corrections are prefetched per batch (no online dealer rounds).

    Rank 0 needs ``fetch`` (or corrections passed to ``begin_batch``); rank 1
    needs only its key. Outside a batch, every request raises RuntimeError,
    except inside ``recording()`` where requests are recorded and answered
    with zeros (a dry run that must run over ``protocols.planning.offline``:
    the values are garbage and never leave the process, the request
    sequence is exact because every protocol is data-oblivious).

    The open batch and the recording belong to the calling thread: one
    provider serves several sessions at once, one thread each, and a thread
    draws only from its own batch. A batch key is refused if any thread used
    it before.
    """

    NAME = "DEALER"

    def __init__(self, rank: int, fetch: Fetch | None = None) -> None:
        super().__init__()
        if rank not in (0, 1):
            raise ValueError(f"rank must be 0 or 1, got {rank}")
        self.party_rank = rank
        self.fetch = fetch
        self.stats = DealerStats()
        self._local = threading.local()  # _batch and _recording, per thread
        self._keys_lock = threading.Lock()
        self._used_keys: collections.OrderedDict[bytes, None] = collections.OrderedDict()  # SHA-256 of recent keys
        self._model_keys: dict[int, bytes] = {}

    @property
    def _batch(self) -> _Batch | None:
        return getattr(self._local, "batch", None)

    @_batch.setter
    def _batch(self, batch: _Batch | None) -> None:
        self._local.batch = batch

    @property
    def _recording(self) -> list[Request] | None:
        return getattr(self._local, "recording", None)

    @_recording.setter
    def _recording(self, recording: list[Request] | None) -> None:
        self._local.recording = recording

    # -- batches -----------------------------------------------------------
    def begin_batch(self, key: bytes, requests: list[Request] | None = None, corrections: list[torch.Tensor] | None = None) -> None:
        """Start a batch: this party's batch ``key``; on rank 0 the corrections (given, or ``fetch(requests)`` now).

        A key is used for one batch only: a key seen before raises RuntimeError.
        """
        import time

        digest = hashlib.sha256(bytes(key)).digest()  # never keep a past key itself
        with self._keys_lock:
            if digest in self._used_keys:
                raise RuntimeError("this batch key was used before; every batch needs a fresh key from the dealer")
            self._used_keys[digest] = None
            while len(self._used_keys) > USED_KEYS_KEPT:  # bounded: the dealer never repeats a batch id anyway
                self._used_keys.popitem(last=False)
        batch = _Batch(generator=_generator(key), requests=list(requests) if requests is not None else None)
        needed = requests is None and self.party_rank == 0 or requests is not None and needs_corrections(self.party_rank, requests)
        if needed:
            if corrections is None:
                if self.fetch is None or requests is None:
                    raise RuntimeError(f"rank {self.party_rank} needs corrections: pass them, or a fetch callable and the request plan")
                t0 = time.perf_counter()
                corrections = self.fetch(list(requests))
                self.stats.seconds += time.perf_counter() - t0
            if requests is not None and len(corrections) != len(requests):
                raise RuntimeError(f"dealer sent {len(corrections)} corrections for {len(requests)} requests")
            batch.corrections = list(corrections)
            self.stats.bytes_received += sum(int(c.nelement()) * BYTES_PER_ELEMENT for c in corrections)
        elif corrections is not None:
            batch.corrections = list(corrections)
        self.stats.batches += 1
        self._batch = batch

    def end_batch(self) -> None:
        """Close the batch; raises RuntimeError if the forward used fewer requests than planned."""
        batch, self._batch = self._batch, None
        if batch is not None and batch.requests is not None and batch.position != len(batch.requests):
            raise RuntimeError(f"batch used {batch.position} of {len(batch.requests)} planned requests")

    @contextmanager
    def recording(self) -> Iterator[list[Request]]:
        """Dry run: record every request (returned list) and answer with zeros (never real randomness).

        Only inside ``protocols.planning.offline()``: with a real communicator
        installed the dry run would exchange openings with the peer, so it raises.
        """
        from protocols.planning import is_offline

        if self._batch is not None:
            raise RuntimeError("cannot record inside a batch")
        if not is_offline():
            raise RuntimeError("a dry run must not talk to the peer: record inside protocols.planning.offline()")
        self._recording = []
        try:
            yield self._recording
        finally:
            self._recording = None

    # -- the draws -----------------------------------------------------------
    def _next(self, req: Request) -> tuple[PRG | None, torch.Tensor | None]:
        """This party's PRG (None in a dry run), and on rank 0 the correction answering ``req``."""
        if self._recording is not None:
            self._recording.append(req)
            if self.party_rank == 0 or req.kind in BOTH_RANKS_KINDS:
                return None, torch.zeros(req.output_size(self.party_rank), dtype=torch.long)
            return None, None
        batch = self._batch
        if batch is None:
            raise RuntimeError("randomness requested outside a batch: call begin_batch(key, plan) first")
        if batch.requests is not None:
            if batch.position >= len(batch.requests) or batch.requests[batch.position] != req:
                planned = batch.requests[batch.position] if batch.position < len(batch.requests) else None
                raise RuntimeError(f"request {batch.position} is {req}, the plan says {planned}")
        self.stats.requests += 1
        correction = None
        if self.party_rank == 0 or req.kind in BOTH_RANKS_KINDS:
            if batch.corrections is None or batch.position >= len(batch.corrections):
                raise RuntimeError("ran out of dealer corrections for this batch")
            correction = batch.corrections[batch.position]
            if tuple(correction.shape) != req.output_size(self.party_rank):
                raise RuntimeError(f"dealer material {batch.position} has shape {tuple(correction.shape)}, expected {req.output_size(self.party_rank)}")
        batch.position += 1
        return batch.generator, correction

    def generate_additive_triple(self, size0, size1, op, device=None, *args, **kwargs):  # type: ignore[override]
        """Beaver triple [a], [b], [c = op(a, b)]."""
        req = Request("additive", tuple(size0), tuple(size1), op, _freeze_kwargs(kwargs))
        g, corr = self._next(req)
        a, b = _ring(size0, g), _ring(size1, g)
        c = corr if corr is not None else _ring(req.output_size(), g)
        return (ArithmeticSharedTensor.from_shares(a, precision=0), ArithmeticSharedTensor.from_shares(b, precision=0),
                ArithmeticSharedTensor.from_shares(c, precision=0))

    def square(self, size, device=None):  # type: ignore[override]
        """Square pair [r], [r^2]."""
        g, corr = self._next(Request("square", tuple(size)))
        r = _ring(size, g)
        r2 = corr if corr is not None else _ring(size, g)
        return ArithmeticSharedTensor.from_shares(r, precision=0), ArithmeticSharedTensor.from_shares(r2, precision=0)

    def generate_binary_triple(self, size0, size1, device=None):  # type: ignore[override]
        """Binary (XOR-shared) triple a, b, c = a & b."""
        req = Request("binary", tuple(size0), tuple(size1))
        g, corr = self._next(req)
        a, b = _bits(size0, g), _bits(size1, g)
        c = corr if corr is not None else _bits(req.output_size(), g)
        return BinarySharedTensor.from_shares(a), BinarySharedTensor.from_shares(b), BinarySharedTensor.from_shares(c)

    def wrap_rng(self, size, device=None):  # type: ignore[override]
        """Random [r] and [theta_r], the number of wraps of r's shares."""
        g, corr = self._next(Request("wraps", tuple(size)))
        r = _ring(size, g)
        theta = corr if corr is not None else _ring(size, g)
        return ArithmeticSharedTensor.from_shares(r, precision=0), ArithmeticSharedTensor.from_shares(theta, precision=0)

    def B2A_rng(self, size, device=None):  # type: ignore[override]
        """One random bit as arithmetic [rA] and binary rB shares."""
        g, corr = self._next(Request("B2A", tuple(size)))
        rb = _bits(size, g, 1)
        ra = corr if corr is not None else _ring(size, g)
        return ArithmeticSharedTensor.from_shares(ra, precision=0), BinarySharedTensor.from_shares(rb)

    def bitmul_rng(self, size, device=None):  # noqa: ANN001, ANN201
        """A random bit r as arithmetic [rA] and binary rB shares, with a random [s] and [g = r s]."""
        g, corr = self._next(Request("bitmul", tuple(size)))
        rb = _bits(size, g, 1)
        s = _ring(size, g)
        if corr is not None:
            ra, prod = corr[0], corr[1]
        else:
            ra, prod = _ring(size, g), _ring(size, g)
        return (ArithmeticSharedTensor.from_shares(ra, precision=0), BinarySharedTensor.from_shares(rb),
                ArithmeticSharedTensor.from_shares(s, precision=0), ArithmeticSharedTensor.from_shares(prod, precision=0))

    # -- fixed weight masks ---------------------------------------------------
    def begin_model(self, model_id: int, key: bytes) -> None:
        """Hold this party's key of the fixed weight masks of model load ``model_id`` (from the dealer, once per load)."""
        if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
            raise ValueError("a model key is 32 bytes")
        self._model_keys[int(model_id)] = bytes(key)

    def end_model(self, model_id: int) -> None:
        self._model_keys.pop(int(model_id), None)

    def weight_mask(self, model_id: int, index: int, size: Sequence[int]) -> torch.Tensor:
        """This party's share b_i of the fixed mask of weight ``index`` (zeros in a dry run)."""
        if self._recording is not None:
            return torch.zeros(tuple(size), dtype=torch.int64)
        key = self._model_keys.get(int(model_id))
        if key is None:
            raise RuntimeError(f"no model key for model load {model_id}: call begin_model first")
        return fixed_mask(key, index, size)

    def fixed_triple(self, size0: Sequence[int], size1: Sequence[int], model_id: int, index: int):  # noqa: ANN201
        """[a] (fresh) and [c = a @ b] for the fixed weight mask b of weight ``index`` (``weight_mask``)."""
        req = Request("fixed", tuple(size0), tuple(size1), "matmul", (("mask", int(index)), ("model", int(model_id))))
        g, corr = self._next(req)
        a = _ring(size0, g)
        c = corr if corr is not None else _ring(req.output_size(), g)
        return a, c

    def dcf_rng(self, n: int, bits: int, drop: int, payload: int) -> "SignMaterial":
        """A sign gate's material for n values (see ``dcf_material``): mask shares, [m], [m r], this party's DCF keys."""
        req = Request("dcf", (n,), kwargs=(("bits", bits), ("drop", drop), ("payload", payload)))
        g, corr = self._next(req)
        r, seed = _ring((n,), g), _ring((n, 2), g)
        assert corr is not None
        if self.party_rank == 0:
            m = corr[0]
            rm = corr[1] if payload == 2 else None
            words = corr[1 + (payload == 2):]
        else:
            m = _ring((n,), g)
            rm = _ring((n,), g) if payload == 2 else None
            words = corr
        keys = dcf.unpack(seed.numpy().view(np.uint64), words.numpy().view(np.uint64), bits - 1, payload)
        return SignMaterial(r=r, m=m, rm=rm, keys=keys)


    def select_rng(self, n: int, bits: int, drop: int) -> "SelectMaterial":
        """A select ReLU's material for n values (see ``select_material``)."""
        req = Request("dcf", (n,), kwargs=(("bits", bits), ("drop", drop), ("payload", dcf.BIT_PAYLOAD)))
        g, corr = self._next(req)
        assert corr is not None
        r, seed = _ring((n,), g), _ring((n, 2), g)
        if self.party_rank == 0:  # its rho_0 is its own draw; m, [rho], [r rho] come as corrections
            rho, m, rho_a, rrho, words = _ring((n,), g) & 1, corr[0], corr[1], corr[2], corr[3:]
        else:
            m, rho = _ring((n,), g) & 1, _ring((n,), g) & 1
            rho_a, rrho, words = _ring((n,), g), _ring((n,), g), corr
        return SelectMaterial(r=r, m=m, rho=rho, rho_a=rho_a, rrho=rrho, seed=seed.numpy().view(np.uint64),
                              words=words.numpy().view(np.uint64))

    def trig_rng(self, n: int, harmonics: int, period_bits: int, frac_bits: int, step: int = 1) -> "TrigMaterial":
        """``ops.gelu_fourier``'s material for n values: shares of a mask r and of round(2^frac [cos(k theta_r); sin(k theta_r)]),
        k = 1, 1 + step, ..., 1 + step (harmonics - 1)."""
        req = Request("trig", (n,), kwargs=(("frac", frac_bits), ("harmonics", harmonics), ("period", period_bits), ("step", step)))
        g, corr = self._next(req)
        r = _ring((n,), g)
        cs = corr if self.party_rank == 0 else _ring((2 * harmonics, n), g)
        assert cs is not None
        return TrigMaterial(r=r, cs=cs)


class TFPProvider(TrustedFirstParty):
    """CrypTen's trusted first party (party 0 makes every tuple); matmul triples use the project's ring matmul.

    For comparisons with published numbers only: party 0 knows all randomness.
    """

    NAME = "TFP"

    def bitmul_rng(self, size, device=None):  # noqa: ANN001, ANN201
        """A random bit r as (rA, rB) with [s], [r s] (see DealerProvider.bitmul_rng), made by party 0."""
        r = generate_kbit_random_tensor(tuple(size), bitlength=1, device=device)
        s = generate_random_ring_element(tuple(size), device=device)
        return (ArithmeticSharedTensor(r, precision=0, src=0), BinarySharedTensor(r, src=0),
                ArithmeticSharedTensor(s, precision=0, src=0), ArithmeticSharedTensor(r * s, precision=0, src=0))

    def generate_additive_triple(self, size0, size1, op, device=None, *args, **kwargs):  # type: ignore[override]
        if op != "matmul":
            return super().generate_additive_triple(size0, size1, op, device, *args, **kwargs)
        a = generate_random_ring_element(size0, device=device)
        b = generate_random_ring_element(size1, device=device)
        c = _triple_op("matmul", a, b, {})
        return (ArithmeticSharedTensor(a, precision=0, src=0), ArithmeticSharedTensor(b, precision=0, src=0),
                ArithmeticSharedTensor(c, precision=0, src=0))


def _providers_table() -> dict[str, TupleProvider]:
    """CrypTen's registry of providers (``crypten.mpc.get_default_provider`` reads it)."""
    table = vars(crypten.mpc).get("__SUPPORTED_PROVIDERS")
    if not isinstance(table, dict):
        raise RuntimeError("this CrypTen has no provider registry (crypten.mpc.__SUPPORTED_PROVIDERS)")
    return table


def install_provider(provider: TupleProvider) -> None:
    """Make ``provider`` CrypTen's default provider (the one documented place that does it)."""
    _providers_table()[PROVIDER_NAME] = provider
    crypten.cfg.mpc.provider = PROVIDER_NAME


def current_provider() -> TupleProvider:
    return crypten.mpc.get_default_provider()


def make_provider(kind: str, rank: int, fetch: Fetch | None = None) -> TupleProvider:
    """``"dealer"`` -> DealerProvider(rank, fetch); ``"tfp"`` -> TFPProvider()."""
    if kind == "dealer":
        return DealerProvider(rank, fetch)
    if kind == "tfp":
        return TFPProvider()
    raise ValueError(f"unknown provider {kind!r}; choose dealer or tfp")


__all__ = [
    "BatchSource",
    "DealerProvider",
    "DealerStats",
    "Fetch",
    "InProcessDealer",
    "Request",
    "TFPProvider",
    "all_corrections",
    "dealer_corrections",
    "install_provider",
    "make_provider",
    "needs_corrections",
    "current_provider",
]
