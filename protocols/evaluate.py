"""Secure evaluation in-process: two party processes on this machine, plaintext vs private logits and costs.

``evaluate_private(model, meta, images, ...)`` is what ``mpcvit eval-private``
and the tests call: party 0 owns the model, the client's [0, 1] images are
encoded and split as ``mpcvit.sealing.share_fixed_point`` does, both parties
run ``SecureViT.forward_shares`` batch by batch, and the result compares the
reconstructed logits with the plaintext model's.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from mpcvit.checkpoint import normalise_input
from mpcvit.models.vit import VisionTransformer
from mpcvit.prg import new_key
from mpcvit.sealing import reconstruct_fixed_point, share_fixed_point
from protocols import ops
from protocols.config import DEFAULT_CONFIG, SecureConfig
from protocols.local import run_two_party
from protocols.providers import DealerProvider, InProcessDealer, TFPProvider, install_provider
from protocols.runtime import SecureViT

log = logging.getLogger(__name__)


def _party(rank: int, model: VisionTransformer, meta: dict[str, Any], config: SecureConfig, master_key: bytes,
           shares: torch.Tensor, batch_size: int) -> dict[str, Any]:
    install_provider(DealerProvider(rank) if config.provider == "dealer" else TFPProvider())
    t0 = time.perf_counter()
    secure = SecureViT.share(model if rank == 0 else None, model.spec, meta if rank == 0 else None, owner=0,
                             config=config, batch_source=InProcessDealer(master_key))
    setup = time.perf_counter() - t0
    outs, reports = [], []
    fallbacks = ops.GATE_FALLBACKS
    for share in shares.split(batch_size):  # one tensor crosses to the party process, not one per batch (fds)
        out, report = secure.forward_shares(share)
        outs.append(out.tolist())
        reports.append(report.to_dict())
    return {"logit_shares": outs, "reports": reports, "setup_seconds": setup,
            "gate_fallbacks": ops.GATE_FALLBACKS - fallbacks}


def _sum_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"rounds": 0, "bytes": 0, "bytes_sent": 0, "bytes_received": 0, "seconds": 0.0, "dealer_bytes": 0}
    per_op: dict[str, dict[str, float]] = {}
    per_layer: dict[str, dict[str, float]] = {}
    for r in reports:
        for k in total:
            total[k] += r[k]
        for src, dst in ((r["per_op"], per_op), (r["per_layer"], per_layer)):
            for name, c in src.items():
                d = dst.setdefault(name, {"rounds": 0, "bytes": 0, "seconds": 0.0})
                for k in d:
                    d[k] += c[k]
    total["seconds"] = round(total["seconds"], 3)
    for d in (*per_op.values(), *per_layer.values()):
        d["seconds"] = round(d["seconds"], 4)
    total["per_op"], total["per_layer"] = per_op, per_layer
    return total


def evaluate_private(model: VisionTransformer, meta: dict[str, Any], images: torch.Tensor, labels: torch.Tensor | None = None,
                     batch_size: int = 16, config: SecureConfig = DEFAULT_CONFIG,
                     timeout: float = 1800.0) -> dict[str, Any]:
    """Secure vs plaintext on ``images`` ((B, C, H, W) in [0, 1]); returns accuracies, agreement, errors and costs.

    Costs are party 0's: ``rounds``, ``bytes``, ``seconds`` summed over the
    batches, ``per_batch`` the first batch's (one forward), ``per_op`` /
    ``per_layer`` summed over batches. ``gate_fallbacks``: how many comparisons ran on the ring
    circuits instead of the DCF gate because one call had more than ``fss_max_values`` values
    (``ops.fss_fits``): 0 means the batch ran as a single image is served; a large batch can make the
    biggest ops (GeLU, the max tree) fall back, and then its numerics are the circuits', not the gate's.
    """
    if images.dim() != 4 or tuple(images.shape[1:]) != model.spec.input_shape:
        raise ValueError(f"images must have shape (B, {model.spec.input_shape}), got {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    model = model.eval()
    with torch.no_grad():
        plain = model(normalise_input(images.float(), meta))
    s0, s1 = [], []
    for i in range(0, len(images), batch_size):  # the client's split: masks from a fresh PRG key per batch
        a, b = share_fixed_point(images[i : i + batch_size], config.precision_bits)
        s0.append(a)
        s1.append(b)
    t0 = time.perf_counter()
    master_key = new_key()  # the simulated dealer's secret, handed to both party processes
    r0, r1 = run_two_party(_party, model, meta, config, master_key,
                           rank_args=((torch.cat(s0), batch_size), (torch.cat(s1), batch_size)), timeout=timeout)
    wall = time.perf_counter() - t0
    private = torch.cat([
        reconstruct_fixed_point(torch.tensor(a), torch.tensor(b), config.precision_bits).float()
        for a, b in zip(r0["logit_shares"], r1["logit_shares"])
    ])
    costs = _sum_reports(r0["reports"])
    result: dict[str, Any] = {
        "model": model.spec.name,
        "provider": config.provider,
        "images": len(images),
        "batch_size": batch_size,
        "agreement": float((private.argmax(1) == plain.argmax(1)).float().mean()),
        "max_abs_logit_error": float((private - plain).abs().max()),
        "mean_abs_logit_error": float((private - plain).abs().mean()),
        **{k: costs[k] for k in ("rounds", "bytes", "bytes_sent", "bytes_received", "seconds", "dealer_bytes")},
        "per_batch": {k: r0["reports"][0][k] for k in ("rounds", "bytes", "seconds", "batch_size", "dealer_bytes")},
        "gate_fallbacks": int(r0.get("gate_fallbacks", 0)),
        "setup_seconds": round(r0["setup_seconds"], 3),
        "wall_seconds": round(wall, 3),
        "per_op": costs["per_op"],
        "per_layer": costs["per_layer"],
        "config": config.to_dict(),
    }
    if labels is not None:
        result["plaintext_accuracy"] = float((plain.argmax(1) == labels).float().mean())
        result["private_accuracy"] = float((private.argmax(1) == labels).float().mean())
    return result
