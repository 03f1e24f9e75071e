"""The search loop: train a ``RelaxedViT``'s weights and architecture weights jointly.

Loss per batch = cross-entropy (label smoothing) + lambda * E[lat] / lat_ref (see
``mpcvit.search.regularizer``). Weights: AdamW with a cosine schedule; architecture
weights: Adam without weight decay at their own learning rate, projected back into
[0, 1] after every step (two-way alphas, betas). Single-level, as the paper's code.

``init`` (a checkpoint: trained here, or imported with ``mpcvit import``) starts the
weights; without ``model`` the searched architecture is the checkpoint's own (its shape,
pooling and activations; every head relaxed). The checkpoint must fit the dataset, and
its input normalisation be the dataset's unless ``init_normalisation`` (then the search
normalises as the checkpoint does).

Resumable: after every epoch ``DIR/search_state.pt`` holds the model, optimisers and epoch;
re-running the same command continues (more ``--epochs`` extends it). Every epoch also
rewrites ``DIR/alphas.json`` (what ``mpcvit derive`` reads) and appends one JSON line to
``DIR/search_log.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from mpcvit.checkpoint import fit_to_dataset, load_checkpoint
from mpcvit.models.registry import model_spec
from mpcvit.search.costs import NETWORKS, CostModel, get_cost_model
from mpcvit.search.derive import RESULT_FILE, SearchResult
from mpcvit.search.regularizer import CostTerms, cost_regulariser, cost_terms, expected_latency
from mpcvit.search.relaxed import THREE_WAY, TWO_WAY, RelaxedViT

log = logging.getLogger(__name__)

STATE_FILE = "search_state.pt"
LOG_FILE = "search_log.jsonl"
# config fields that may change between runs of one search directory
RESUMABLE_CHANGES = ("epochs", "out", "threads", "eval_limit", "progress")


@dataclass
class SearchConfig:
    """Everything that defines one search run (recorded in its outputs)."""

    dataset: str
    model: str | None  # registry preset; None: the ``init`` checkpoint's architecture
    network: str
    lam: float
    epochs: int
    out: str
    act_mode: str = "none"
    three_way: bool = False
    init: str | None = None
    init_normalisation: bool = False  # normalise inputs as ``init``'s meta.json says, not as the dataset
    batch_size: int = 128
    lr: float = 1e-3
    arch_lr: float = 1e-2
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    train_limit: int | None = None
    eval_limit: int | None = 2000
    seed: int = 0
    cost_source: str = "auto"
    data_dir: str | None = None
    threads: int = 2
    progress: bool = True
    command: str = field(default_factory=lambda: " ".join(["mpcvit", *sys.argv[1:]]))

    def validate(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"unknown network {self.network!r}; choose from {sorted(NETWORKS)}")
        if self.lam < 0:
            raise ValueError("lambda must be >= 0")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.act_mode not in ("none", "layer", "token"):
            raise ValueError("act_mode must be none, layer or token")
        if self.model is None and not self.init:
            raise ValueError("give the base architecture: --model PRESET, or --init CKPT to search the checkpoint's own")
        if self.init_normalisation and not self.init:
            raise ValueError("--init-normalisation needs --init CKPT")


# -- data -------------------------------------------------------------------------------


def _normalised(dataset: str, split: str, limit: int | None, data_dir: str | None, seed: int,
                norm: dict[str, list[float]]) -> TensorDataset:
    from mpcvit.data import load_dataset

    ds = load_dataset(dataset, split, data_dir)
    x, y = ds.tensors
    if limit is not None and limit < len(y):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]
        x, y = x[idx], y[idx]
    mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, -1, 1, 1)
    return TensorDataset((x - mean) / std, y)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: TensorDataset, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for xb, yb in DataLoader(data, batch_size=batch_size):
        correct += int((model(xb).argmax(-1) == yb).sum())
    return correct / max(len(data), 1)


# -- model and optimisers -----------------------------------------------------------------


def build_search_model(cfg: SearchConfig) -> tuple[RelaxedViT, dict[str, list[float]]]:
    """The relaxed model (started from ``cfg.init``'s weights when given) and the input normalisation of the search."""
    from mpcvit.data import dataset_info

    info = dataset_info(cfg.dataset, cfg.data_dir)
    norm = info.normalisation()
    start = None
    if cfg.init:
        start, meta = load_checkpoint(cfg.init)
        norm = fit_to_dataset(f"--init {cfg.init}", start.spec, meta, cfg.dataset, info, cfg.init_normalisation,
                              "--init-normalisation")
    spec = model_spec(cfg.model) if cfg.model else start.spec  # type: ignore[union-attr]
    if start is not None and cfg.model and not _same_shape(spec, start.spec):
        raise ValueError(f"--init {cfg.init} ({start.spec.summary()}) is not shaped as {cfg.model}; "
                         "leave out --model to search the checkpoint's own architecture")
    model = RelaxedViT(spec, THREE_WAY if cfg.three_way else TWO_WAY, cfg.act_mode)  # type: ignore[arg-type]
    if start is not None:
        model.load_weights_from(start)
    return model, norm


SHAPE_FIELDS = ("img_size", "in_chans", "patch_size", "num_classes", "embed_dim", "depth", "num_heads", "mlp_dim",
                "pool", "norm_after_pool")


def _same_shape(a: Any, b: Any) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in SHAPE_FIELDS)


def _optimisers(model: RelaxedViT, cfg: SearchConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    weights = torch.optim.AdamW(model.weight_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    arch = torch.optim.Adam(model.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999))
    return weights, arch


def _lr_at(cfg: SearchConfig, step: int, total: int) -> float:
    warm = max(total // 20, 1)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))


# -- results ------------------------------------------------------------------------------


def search_result(model: RelaxedViT, cfg: SearchConfig, terms: CostTerms, costs: CostModel, epoch: int) -> SearchResult:
    betas = model.act_betas()
    return SearchResult(
        base=model.spec,
        candidates=model.candidates,
        act_mode=model.act_mode,
        head_weights=[[[round(float(w), 6) for w in head] for head in layer] for layer in model.head_weights().detach()],
        betas=None if betas is None else [[round(float(b), 6) for b in row] for row in betas.detach()],
        info={
            "epoch": epoch,
            "config": asdict(cfg),
            "cost_source": costs.source,
            "cost_terms": terms.to_dict(),
            "expected_latency_s": float(expected_latency(model, terms).detach()),
        },
    )


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _check_resumable(saved: dict[str, Any], cfg: SearchConfig) -> None:
    now = asdict(cfg)
    defaults = {f.name: f.default for f in fields(cfg) if f.default is not MISSING}  # for fields newer than the search
    diff = [k for k in now if k not in RESUMABLE_CHANGES and k != "command" and saved.get(k, defaults.get(k)) != now[k]]
    if diff:
        raise ValueError(f"{cfg.out} holds a search with different settings ({', '.join(diff)}); use a new --out")


# -- the loop -----------------------------------------------------------------------------


def run_search(cfg: SearchConfig) -> SearchResult:
    """Run (or resume) a search; returns the final architecture weights."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    costs = get_cost_model(cfg.cost_source)
    model, norm = build_search_model(cfg)
    terms = cost_terms(model, costs, cfg.network)
    opt_w, opt_a = _optimisers(model, cfg)
    start = 0
    state_path = out / STATE_FILE
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        _check_resumable(state["config"], cfg)
        model.load_state_dict(state["model"])
        opt_w.load_state_dict(state["opt_w"])
        opt_a.load_state_dict(state["opt_a"])
        torch.set_rng_state(state["rng"])
        start = int(state["epoch"])
        log.info("resuming the search in %s after epoch %d", out, start)
    train = _normalised(cfg.dataset, "train", cfg.train_limit, cfg.data_dir, cfg.seed, norm)
    test = _normalised(cfg.dataset, "test", cfg.eval_limit, cfg.data_dir, cfg.seed + 1, norm)
    steps = math.ceil(len(train) / cfg.batch_size)
    log.info("search: %s on %s, %s, lambda=%g, %d epochs x %d steps, costs from %s",
             cfg.model or model.spec.name or cfg.init, cfg.dataset, cfg.network, cfg.lam, cfg.epochs, steps, costs.source)
    for epoch in range(start, cfg.epochs):
        stats = _train_epoch(model, cfg, terms, opt_w, opt_a, train, epoch, steps)
        stats["test_acc_relaxed"] = accuracy(model, test)
        result = search_result(model, cfg, terms, costs, epoch + 1)
        stats.update(epoch=epoch + 1, expected_latency_s=result.info["expected_latency_s"],
                     head_weights=result.head_weights, betas=result.betas)
        _write_json(out / RESULT_FILE, result.to_dict())
        with (out / LOG_FILE).open("a") as f:
            f.write(json.dumps(stats) + "\n")
        torch.save({"config": asdict(cfg), "epoch": epoch + 1, "model": model.state_dict(), "opt_w": opt_w.state_dict(),
                    "opt_a": opt_a.state_dict(), "rng": torch.get_rng_state()}, state_path)
        log.info("epoch %d/%d: loss %.4f, train acc %.4f, relaxed test acc %.4f, E[lat] %.3f s (%s)",
                 epoch + 1, cfg.epochs, stats["loss"], stats["train_acc"], stats["test_acc_relaxed"],
                 stats["expected_latency_s"], cfg.network)
    return search_result(model, cfg, terms, costs, cfg.epochs)


def _train_epoch(model: RelaxedViT, cfg: SearchConfig, terms: CostTerms, opt_w: torch.optim.Optimizer,
                 opt_a: torch.optim.Optimizer, train: TensorDataset, epoch: int, steps: int) -> dict[str, Any]:
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    total_steps = steps * cfg.epochs
    loss_sum = reg_sum = 0.0
    correct = seen = 0
    t0 = time.time()
    bar = tqdm(loader, desc=f"search epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, mininterval=5, file=sys.stderr)
    for i, (xb, yb) in enumerate(bar):
        for g in opt_w.param_groups:
            g["lr"] = _lr_at(cfg, epoch * steps + i, total_steps)
        logits = model(xb)
        ce = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
        reg = cost_regulariser(model, terms, cfg.lam)
        opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        (ce + reg).backward()
        opt_w.step()
        opt_a.step()
        model.clamp_arch_()
        loss_sum += ce.item() * len(yb)
        reg_sum += reg.item() * len(yb)
        correct += int((logits.argmax(-1) == yb).sum())
        seen += len(yb)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", reg=f"{reg_sum / seen:.3f}", refresh=False)
    return {"loss": loss_sum / seen, "reg": reg_sum / seen, "train_acc": correct / seen, "seconds": time.time() - t0}
