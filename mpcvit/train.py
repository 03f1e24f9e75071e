"""Training with augmentation, label smoothing and knowledge distillation; plaintext evaluation.

Optimiser: AdamW; learning rate: linear warm-up, then cosine decay to
``min_lr_ratio * lr``, stepped every batch.

Loss without a teacher: cross-entropy with label smoothing ``s``,
    L = CE_s(z_s, y).
Loss with a softmax teacher (as MPCViT retrains a searched model), with student
logits z_s, teacher logits z_t, temperature T and token features F_s, F_t
(``token_features``: every token after the final norm, (B, N, C), also for a
model that pools first and normalises the pooled feature, timm's ``fc_norm``):
    L = (1 - a) CE_s(z_s, y) + a T^2 KL(softmax(z_t / T) || softmax(z_s / T))
        + g mean((F_s - F_t)^2)
with a = ``kd_alpha`` and g = ``kd_feature_weight`` (g = 0: the logits alone, and
teacher and student may differ in tokens and width).

Augmentation runs on whole batches of tensors: random crop with zero padding
(a shift of up to ``pad`` pixels) and, where it fits the data, a horizontal
flip. Digits: no shift, no flip (see RECIPES); Fashion-MNIST: pad 2 + flip; CIFAR-10: pad 4 + flip.

Resuming: after every epoch ``resume.pt`` in the output directory holds the
model, optimiser, scheduler and epoch; training the same way into the same
directory continues where it stopped. Batch order and augmentation draw from a
generator seeded by (seed, epoch), so a resumed run sees the same batches as
an uninterrupted one (on the same kind of device: CPU and CUDA generators draw
different streams).

Devices: ``device="cuda"`` keeps the whole data set, the shuffling and the
augmentation on the GPU; nothing in a step waits for the GPU (the loss is
summed on the device and read once per epoch). With ``out_dir``,
``progress.json`` there is rewritten after every epoch (epoch, per-epoch train
loss and test accuracy, seconds per epoch) for a queue to show progress and an
ETA; ``stop_at`` (a ``time.time()`` value) ends a run early, between epochs,
when the next epoch would not finish by then; its ``resume.pt`` continues it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from mpcvit.models.vit import VisionTransformer

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
PROGRESS_FILE = "progress.json"

# dataset name -> default options: augmentation (crop padding in pixels, horizontal flip) and batch / lr.
# Digits get no shift by default: on 8x8 images with 2x2 patches even a 1-pixel shift cost accuracy
# (vit_2_4_8: 94.2% after 60 epochs with pad 1 vs 96.4% after 30 without); pass pad=1 for it.
RECIPES: dict[str, dict[str, Any]] = {
    "digits": dict(pad=0, flip=False, batch_size=64, lr=4e-3),
    "fashion-mnist": dict(pad=2, flip=True, batch_size=128, lr=2e-3),
    "cifar10": dict(pad=4, flip=True, batch_size=128, lr=1e-3),
}

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; stored in the checkpoint's meta.json."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    pad: int = 0  # random-crop padding (0 = no shift)
    flip: bool = False
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    kd_feature_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError("epochs must be >= 0")
        if self.batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.pad < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay, warmup_epochs, pad and grad_clip must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("label_smoothing must be in [0, 1)")
        if not 0 <= self.kd_alpha <= 1:
            raise ValueError("kd_alpha must be in [0, 1]")
        if self.kd_temperature <= 0 or self.kd_feature_weight < 0:
            raise ValueError("kd_temperature must be positive and kd_feature_weight >= 0")

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> "TrainConfig":
        """The recipe for ``dataset`` (augmentation, batch size, lr); ``overrides`` replace any field."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training option(s): {sorted(unknown)}")
        return replace(cls(**RECIPES.get(dataset, {})), **overrides)


# -- threads -----------------------------------------------------------------------


def configure_threads(threads: int | None = None) -> int:
    """Use ``threads`` (default: $MPCVIT_THREADS, else the CPUs this process may run on) for torch ops."""
    if threads is None:
        env = os.environ.get("MPCVIT_THREADS")
        threads = int(env) if env else len(os.sched_getaffinity(0))
    threads = max(1, threads)
    torch.set_num_threads(threads)
    return threads


# -- batches and augmentation -----------------------------------------------------------


def normalise(x: torch.Tensor, normalisation: dict[str, list[float]] | None) -> torch.Tensor:
    """(x - mean) / std per channel; identity when ``normalisation`` is None."""
    if not normalisation:
        return x
    mean = torch.tensor(normalisation["mean"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(normalisation["std"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back at a random offset per image: a random shift of up to ``pad`` pixels."""
    if pad == 0:
        return x
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=gen, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=gen, device=dev)
    rows = (oy[:, None] + torch.arange(H, device=dev))[:, :, None]  # (B, H, 1)
    cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, :]  # (B, 1, W)
    out = xp[torch.arange(B, device=dev)[:, None, None], :, rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    x = random_crop(x, cfg.pad, gen)
    return random_flip(x, gen) if cfg.flip else x


def _tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[0], dataset.tensors[1]
    else:
        pairs = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
        x = torch.stack([p[0] for p in pairs])
        y = torch.as_tensor([int(p[1]) for p in pairs])
    return x.float(), y.long()


def batches(
    dataset: Dataset, batch_size: int, *, shuffle: bool = False, gen: torch.Generator | None = None
) -> Iterator[Batch]:
    """Mini-batches (x, y) of a dataset, in order or shuffled with ``gen``, on the device the dataset is on."""
    x, y = _tensors(dataset)
    n = x.shape[0]
    order = torch.randperm(n, generator=gen, device=x.device) if shuffle else torch.arange(n, device=x.device)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx]


# -- evaluation ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[Batch], normalisation: dict[str, list[float]] | None = None
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` over (x, y) batches; x in [0, 1] is normalised first if asked."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(normalise(x, normalisation)).argmax(dim=-1)
        correct += int((pred == y).sum())
        total += int(y.numel())
    model.train(was_training)
    if total == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return correct / total


def evaluate_dataset(
    model: nn.Module, dataset: Dataset, normalisation: dict[str, list[float]] | None = None, batch_size: int = 500
) -> float:
    return evaluate(model, batches(dataset, batch_size), normalisation)


# -- losses and schedule -------------------------------------------------------------------------


def distillation_loss(
    student_logits: torch.Tensor,
    student_features: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_features: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
) -> torch.Tensor:
    """(1 - a) CE_s + a T^2 KL(p_t^T || p_s^T) + g MSE(F_s, F_t); see the module docstring."""
    T = cfg.kd_temperature
    ce = F.cross_entropy(student_logits, y, label_smoothing=cfg.label_smoothing)
    kl = F.kl_div(
        F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1),
        reduction="batchmean", log_target=True,
    )
    loss = (1 - cfg.kd_alpha) * ce + cfg.kd_alpha * T * T * kl
    if cfg.kd_feature_weight == 0:
        return loss
    return loss + cfg.kd_feature_weight * F.mse_loss(student_features, teacher_features)


def token_features(model: VisionTransformer, features: torch.Tensor) -> torch.Tensor:
    """Every token's feature after the final norm, (B, N, C), from ``forward_features``' output.

    A model that normalises after pooling (``norm_after_pool``, timm's ``fc_norm``) leaves its tokens
    un-normalised there; the final norm, applied per token, puts them on the same scale as a model
    that normalises before pooling, so teacher and student compare alike whichever way each pools.
    """
    return model.norm(features) if model.spec.norm_after_pool else features


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """lr multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms, the class token and positions (1-D params and embeddings).

    On CUDA the fused AdamW kernel (the same update in one launch per group)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in ("cls_token", "pos_embed") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    on_cuda = any(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True) if on_cuda else torch.optim.AdamW(groups, lr=cfg.lr)


# -- training --------------------------------------------------------------------------------------


@dataclass
class _State:
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    epoch: int  # epochs completed
    history: list[dict[str, float]]


def _resume_or_start(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, out_dir: Path | None) -> _State:
    optimizer = make_optimizer(model, cfg)
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, cfg.min_lr_ratio))
    state = _State(optimizer, scheduler, 0, [])
    path = out_dir / RESUME_FILE if out_dir else None
    if path is None or not path.is_file():
        return state
    saved = torch.load(path, map_location="cpu", weights_only=True)
    spec_json = model.spec.to_json() if isinstance(model, VisionTransformer) else None
    if saved.get("spec") != spec_json or saved.get("config") != asdict(cfg):
        raise ValueError(
            f"{path} was written by a different model or training options; delete it or use another --out"
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    state.epoch, state.history = int(saved["epoch"]), list(saved["history"])
    log.info("resuming from %s after epoch %d of %d", path, state.epoch, cfg.epochs)
    return state


def _save_resume(model: nn.Module, cfg: TrainConfig, state: _State, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (RESUME_FILE + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "epoch": state.epoch,
            "history": state.history,
            "config": asdict(cfg),
            "spec": model.spec.to_json() if isinstance(model, VisionTransformer) else None,
        },
        tmp,
    )
    tmp.replace(out_dir / RESUME_FILE)  # atomic: an interrupted save never leaves a broken resume.pt


def _train_step(
    model: VisionTransformer,
    teacher: VisionTransformer | None,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    state: _State,
) -> torch.Tensor:
    """One optimiser step; returns the loss as a detached tensor on the model's device (no sync)."""
    feats = model.forward_features(x)  # (B, N, C)
    logits = model.forward_head(feats)
    if teacher is None:
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    else:
        with torch.no_grad():
            t_feats = teacher.forward_features(x)  # (B, N, C)
            t_logits = teacher.forward_head(t_feats)
        loss = distillation_loss(logits, token_features(model, feats), t_logits, token_features(teacher, t_feats), y, cfg)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    return loss.detach()


def _run_epoch(
    model: VisionTransformer,
    teacher: VisionTransformer | None,
    train_set: Dataset,
    normalisation: dict[str, list[float]] | None,
    cfg: TrainConfig,
    state: _State,
    progress: bool,
) -> float:
    from tqdm import tqdm

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 100_003 + state.epoch)
    n_batches = math.ceil(len(train_set) / cfg.batch_size)  # type: ignore[arg-type]
    bar = tqdm(
        batches(train_set, cfg.batch_size, shuffle=True, gen=gen), total=n_batches,
        desc=f"epoch {state.epoch + 1}/{cfg.epochs}", disable=not progress, leave=False, dynamic_ncols=True,
    )
    model.train()
    total = torch.zeros((), device=device)
    for i, (x, y) in enumerate(bar, start=1):
        x = normalise(augment(x, cfg, gen), normalisation)
        total += _train_step(model, teacher, x, y, cfg, state)
        if progress and (i % 10 == 0 or i == n_batches):
            bar.set_postfix(loss=f"{float(total) / i:.4f}", lr=f"{state.scheduler.get_last_lr()[0]:.2e}")
    return float(total) / max(1, n_batches)


def _write_progress(out_dir: Path, cfg: TrainConfig, state: _State, seconds: list[float]) -> None:
    """``progress.json``: what a queue reads to show progress and an ETA (atomic rewrite)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "epoch": state.epoch, "epochs": cfg.epochs, "history": state.history,
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3) if seconds else None, "updated": time.time(),
    }
    tmp = out_dir / (PROGRESS_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out_dir / PROGRESS_FILE)


def _on_device(dataset: Dataset, device: torch.device) -> Dataset:
    """The dataset as one float / int64 tensor pair on ``device`` (the whole set fits: at most CIFAR-10's 600 MB)."""
    x, y = _tensors(dataset)
    return TensorDataset(x.to(device), y.to(device))


def _limited(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None:
        return dataset
    x, y = _tensors(dataset)
    return TensorDataset(x[:limit], y[:limit])


def train_model(
    model: VisionTransformer,
    dataset: str | Dataset,
    epochs: int = 30,
    teacher: VisionTransformer | None = None,
    *,
    test_dataset: Dataset | None = None,
    normalisation: dict[str, list[float]] | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    eval_each_epoch: bool = False,
    stop_at: float | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` in place; returns {"test_accuracy", "train_loss", "history", "epochs", "seconds", ...}.

    ``seconds`` counts this call only (a resumed run does not add the earlier calls' time).

    ``dataset`` is a dataset name ("digits", "fashion-mnist", "cifar10": its
    train/test splits, normalisation and augmentation are filled in) or a
    ``Dataset`` of (C, H, W) images in [0, 1] (then pass ``test_dataset`` and
    ``normalisation`` yourself). ``teacher`` (a softmax ViT trained on the same
    data with the same normalisation) turns on distillation. ``options`` replace
    fields of ``TrainConfig`` (``lr=``, ``batch_size=``, ``kd_alpha=``, ...).
    With ``out_dir``, progress is saved every epoch to ``out_dir/resume.pt`` and a
    later call with the same arguments continues from it.

    ``device``: where to train (data, augmentation and model); the model is back on
    the CPU when this returns. ``limit``: use only the first ``limit`` train and test
    images (smoke tests). ``eval_each_epoch``: record the test accuracy after every
    epoch in ``history``. ``stop_at``: see the module docstring; the result then has
    ``"completed": False`` and no test accuracy.
    """
    if config is not None and options:
        raise ValueError(f"pass either config= or training options, not both (got {sorted(options)})")
    if isinstance(dataset, str):
        from mpcvit.data import dataset_info, load_dataset

        name = dataset
        dataset = load_dataset(name, "train", data_dir)
        test_dataset = test_dataset if test_dataset is not None else load_dataset(name, "test", data_dir)
        normalisation = normalisation if normalisation is not None else dataset_info(name, data_dir).normalisation()
        cfg = config or TrainConfig.for_dataset(name, epochs=epochs, **options)
    else:
        cfg = config or TrainConfig(epochs=epochs, **options)
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    dev = torch.device(device)
    dataset = _on_device(_limited(dataset, limit), dev)
    if test_dataset is not None:
        test_dataset = _on_device(_limited(test_dataset, limit), dev)
    torch.manual_seed(cfg.seed)
    model.to(dev)
    if teacher is not None:
        teacher.to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    steps = math.ceil(len(dataset) / cfg.batch_size)  # type: ignore[arg-type]
    out = Path(out_dir) if out_dir else None
    state = _resume_or_start(model, cfg, steps, out)
    start = time.perf_counter()
    epoch_seconds: list[float] = []
    while state.epoch < cfg.epochs:
        if stop_at is not None and epoch_seconds and time.time() + 1.1 * epoch_seconds[-1] > stop_at:
            log.info("stopping after epoch %d of %d: the next epoch would end after the stop time", state.epoch, cfg.epochs)
            break
        t0 = time.perf_counter()
        loss = _run_epoch(model, teacher, dataset, normalisation, cfg, state, progress)
        state.epoch += 1
        entry: dict[str, float] = {"epoch": state.epoch, "train_loss": round(loss, 5)}
        if eval_each_epoch and test_dataset is not None:
            entry["test_accuracy"] = round(evaluate_dataset(model, test_dataset, normalisation), 6)
        state.history.append(entry)
        epoch_seconds.append(time.perf_counter() - t0)
        log.info("epoch %d/%d: %s", state.epoch, cfg.epochs, entry)
        if out is not None:
            _save_resume(model, cfg, state, out)
            _write_progress(out, cfg, state, epoch_seconds)
    completed = state.epoch >= cfg.epochs
    result: dict[str, Any] = {
        "epochs": cfg.epochs,
        "epochs_done": state.epoch,
        "completed": completed,
        "train_loss": state.history[-1]["train_loss"] if state.history else None,
        "history": state.history,
        "seconds": round(time.perf_counter() - start, 2),
        "config": asdict(cfg),
        "distilled": teacher is not None,
    }
    if test_dataset is not None and completed:
        result["test_accuracy"] = evaluate_dataset(model, test_dataset, normalisation)
        log.info("test accuracy %.4f", result["test_accuracy"])
    model.eval().cpu()
    if teacher is not None:
        teacher.cpu()
    return result
