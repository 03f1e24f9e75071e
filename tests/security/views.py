"""What each party sees: functions run inside the two party processes of the privacy tests.

A party's *view* is every tensor it receives from the peer. ``record_view``
wraps the installed communicator's collectives and appends, for each
opening, the peer's contribution (the opened value minus, or XOR, this
party's own), which is exactly what a protocol-following party learns.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch.distributed import ReduceOp

from protocols.crypten_compat import crypten

import crypten.communicator as comm  # noqa: E402


@contextmanager
def record_view() -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Record (kind, peer's tensor) for every all_reduce / all_gather / broadcast / recv inside the block."""
    c = comm.get()
    view: list[tuple[str, torch.Tensor]] = []
    saved = {name: getattr(c, name) for name in ("all_reduce", "all_gather", "broadcast", "recv")}

    def all_reduce(input, op=ReduceOp.SUM, batched=False):  # noqa: A002, ANN001, ANN202
        out = saved["all_reduce"](input, op=op, batched=batched)
        pairs = zip(input, out) if batched else [(input, out)]
        for own, total in pairs:
            xor = op == ReduceOp.BXOR
            view.append(("xor" if xor else "sum", (total ^ own) if xor else (total - own)))
        return out

    def all_gather(tensor):  # noqa: ANN001, ANN202
        out = saved["all_gather"](tensor)
        view.append(("gather", out[1 - c.get_rank()].clone()))
        return out

    def broadcast(input, src, *args, **kwargs):  # noqa: A002, ANN001, ANN202
        out = saved["broadcast"](input, src, *args, **kwargs)
        if src != c.get_rank():
            for t in out if kwargs.get("batched") else [out]:
                view.append(("broadcast", t.clone()))
        return out

    def recv(tensor, src=None):  # noqa: ANN001, ANN202
        out = saved["recv"](tensor, src)
        view.append(("recv", tensor.clone()))
        return out

    for name, fn in (("all_reduce", all_reduce), ("all_gather", all_gather), ("broadcast", broadcast), ("recv", recv)):
        setattr(c, name, fn)
    try:
        yield view
    finally:
        for name in saved:
            delattr(c, name)  # back to the class's methods


def load_and_infer(rank: int, name: str, master_key: bytes, image_share: torch.Tensor) -> dict[str, Any]:
    """Share a random-weight model at load time and run one inference, recording this party's view of each."""
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT, prepare_weights

    from mpcvit.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    install_provider(DealerProvider(rank))
    with record_view() as load_view:
        secure = SecureViT.share(model if rank == 0 else None, model.spec, None, owner=0,
                                 batch_source=InProcessDealer(master_key))
    with record_view() as infer_view:
        logits, _ = secure.forward_shares(image_share)
    out: dict[str, Any] = {
        "load_view": [(k, t.tolist()) for k, t in load_view],
        "infer_view": [(k, t.tolist()) for k, t in infer_view],
        "weight_shares": {k: secure.params[k]._tensor.share.tolist() for k in ("embed.w_t", "b0.qkv.w_t")},
        "logits": logits.tolist(),
        "plan": len(secure.plan(1)),
        "model_id": secure.model_id,
        "fixed_index": {k: secure.fixed[k].index for k in ("embed.w_t", "b0.qkv.w_t")},
    }
    if rank == 0:
        plain = prepare_weights(model, model.spec, None)  # party 0's own fixed-point weights, as CrypTen encoded them
        out["weights"] = {k: secure.params[k].encoder.encode(plain[k].float()).tolist() for k in ("embed.w_t", "b0.qkv.w_t")}
    return out


class Forbidden:
    """Stands in for torch.Generator / torch.randint / torch.rand: any use raises."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "Forbidden":
        raise AssertionError("a Mersenne-Twister generator was used in the secure path")


def _forbid(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("torch's generator was used in the secure path")


@contextmanager
def no_torch_randomness() -> Iterator[None]:
    """torch.Generator, torch.randint, torch.rand (and their _like forms, randperm) raise inside the block."""
    names = ("randint", "rand", "randint_like", "rand_like", "randperm")
    saved = {n: getattr(torch, n) for n in names}
    saved_gen = torch.Generator
    torch.Generator = Forbidden  # type: ignore[misc, assignment]
    for n in names:
        setattr(torch, n, _forbid)
    try:
        yield
    finally:
        torch.Generator = saved_gen  # type: ignore[misc]
        for n, fn in saved.items():
            setattr(torch, n, fn)


def forward_without_torch_rng(rank: int, names: list[str], master_key: bytes, shares: list[torch.Tensor]) -> list[list]:
    """Load and run every model with torch's generators forbidden (the models are built before)."""
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT

    from mpcvit.models.registry import create_model
    from mpcvit.prg import derive_key

    install_provider(DealerProvider(rank))
    out = []
    for i, name in enumerate(names):
        torch.manual_seed(i)
        model = create_model(name).eval()
        with no_torch_randomness():
            secure = SecureViT.share(model if rank == 0 else None, model.spec, None, owner=0,
                                     batch_source=InProcessDealer(derive_key(master_key, name)))
            logits, _ = secure.forward_shares(shares[i])
        out.append(logits.tolist())
    return out


# -- openings of each kind, for the statistical tests ------------------------------------------------------
OPENING_KINDS = ("arithmetic", "and", "b2a", "bitmul", "sign", "weight", "argmax", "spline", "fourier", "select")
SIZES = {"arithmetic": 100_000, "and": 100_000, "b2a": 64 * 100_000, "bitmul": 1 << 20, "sign": 100_000, "weight": 100_000,
         "argmax": 60_000, "spline": 30_000, "fourier": 40_000,
         "select": 64 * 1600}  # select: x + r, then b xor rho packed 64 per word (a multiple of 64: no padding bits)  # fourier: 3 words received per value (x + r, then the product's two)  # spline: 4 words received per value (gate, square, product's two)  # argmax: 6,000 rows of 10 logits, 17 words received per row (9 gates, 4 products of 2)


def _secret(rank: int, owner: int, n: int, pattern: bool) -> torch.Tensor:
    """This party's share: a fixed pattern (its "secret") on ``owner`` when ``pattern``, zeros otherwise."""
    if rank != owner or not pattern:
        return torch.zeros(n, dtype=torch.int64)
    i = torch.arange(n, dtype=torch.int64)
    return (i * 7919) % 65537  # like fixed-point pixels: high bytes zero, far from uniform


_MODEL_LOAD = [0]  # the "weight" kind's model load id: a fresh load (fresh masks) per setting


def _program(kind: str, rank: int, owner: int | None, pattern: bool) -> None:
    from crypten.mpc import MPCTensor

    from protocols import compare, ops, sign
    from protocols.lockstep import run_one

    n = SIZES[kind]
    x = _secret(rank, owner if owner is not None else -1, n, pattern)
    if kind == "arithmetic":
        a = MPCTensor.from_shares(x, precision=16)
        ops.beaver_products([("mul", a, a)])
    elif kind == "and":
        zero = torch.zeros_like(x)
        run_one(compare.and_steps(x, zero if rank == 0 else x))  # party 0's second operand zero, as in ltz's first AND
    elif kind == "b2a":
        run_one(compare.bits_to_arithmetic_steps(x & 1))
    elif kind == "weight":  # a weight's fixed mask opened at model load (W - b), then a product with it (x - a)
        w = MPCTensor.from_shares(x.view(1000, 100), precision=16)
        (fw,) = ops.open_weight_masks([(w, _MODEL_LOAD[0], 0)])
        run_one(ops.fixed_linear_steps(MPCTensor.from_shares(x[:1000].view(1, 1000), precision=16), fw))
    elif kind == "argmax":  # a label answer's protocol: sign gates' c = d + r and the index products' s - a, i - b
        from protocols import argmax

        argmax.argmax(MPCTensor.from_shares(x.view(-1, 10), precision=16))
    elif kind == "spline":  # the spline GeLU: the gate's c = x + r and x' - r' in round 1, S - a and Q - b in round 2
        from protocols.config import current_config

        assert current_config().gelu_spline_gate == (10, 14)
        ops.gelu_spline(MPCTensor.from_shares(x, precision=16))
    elif kind == "fourier":  # the Fourier GeLU: c = x + r in round 1 (trig material), x' - a and psi - b in round 2
        ops.gelu_fourier(MPCTensor.from_shares(x, precision=16))
    elif kind == "select":  # the select ReLU: c = x + r (one-bit DCF keys), then b xor rho, 64 bits a word
        run_one(sign.relu_select_steps(MPCTensor.from_shares(x, precision=16), 20, 6))
    elif kind == "sign":  # the DCF sign gate's c = x + r, with two shifts and the product (payload 2)
        run_one(sign.sign_steps(MPCTensor.from_shares(x, precision=16), (0, 12345), 32, 4, product=True))
    else:
        y = MPCTensor.from_shares(x, precision=16)
        run_one(compare.bitmul_steps(x & 1, y))


def _histograms(view: list[tuple[str, torch.Tensor]]) -> dict[str, list[int]]:
    import numpy as np

    words = torch.cat([t.reshape(-1) for _, t in view]).numpy()
    byte_hist = np.bincount(words.view(np.uint8), minlength=256)
    bit_counts = [int(((words >> j) & 1).sum()) for j in range(64)]
    return {"bytes": byte_hist.tolist(), "bits": bit_counts, "words": int(words.size)}


def opening_statistics(rank: int, master_key: bytes) -> dict[str, dict[str, Any]]:
    """Per opening kind and setting, histograms of what this party received.

    Settings: "none" (both parties' shares zero), "p0" (party 0's share a
    pattern), "p1" (party 1's share a pattern).
    """
    from protocols.planning import offline
    from protocols.providers import DealerProvider, InProcessDealer, install_provider

    provider = DealerProvider(rank)
    install_provider(provider)
    dealer = InProcessDealer(master_key)
    out: dict[str, dict[str, Any]] = {}
    for kind in OPENING_KINDS:
        for i, (setting, owner) in enumerate((("none", None), ("p0", 0), ("p1", 1))):
            _MODEL_LOAD[0] = 100 + i
            provider.begin_model(_MODEL_LOAD[0], dealer.model_key(rank, _MODEL_LOAD[0]))
            with offline(), provider.recording() as plan:
                _program(kind, rank, None, False)
            key, corrections = dealer.next_batch(rank, plan)
            provider.begin_batch(key, plan, corrections)
            with record_view() as view:
                _program(kind, rank, owner, setting != "none")
            provider.end_batch()
            out[f"{kind}/{setting}"] = _histograms(view)
    return out
