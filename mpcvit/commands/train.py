"""``mpcvit train``: train a registered model (or one from an ArchSpec JSON), optionally distilled.

Writes a checkpoint (``model.safetensors``, ``arch.json``, ``meta.json``) to
``--out``, with the test accuracy, dataset, class names, normalisation, the
training options and the exact command line (``meta["command"]``) that makes it
again. Progress is saved every epoch to ``--out/resume.pt``; running the same
command again continues from it. ``--out/progress.json`` shows how far it is.
``--seed`` seeds the model's initialisation as well as the batch order and the
augmentation. ``--device cuda`` trains on a GPU, data and augmentation included.

``--teacher CKPT`` distils from a softmax checkpoint, trained here or imported
(``mpcvit import --dataset NAME``); ``--arch teacher[:VARIANT]`` trains a student
of the teacher's architecture with VARIANT's attention / GeLU choices (default
``mpcvit``), starting from the teacher's weights.

Exit status: 0 when the checkpoint is written; 3 when ``--stop-at`` ended the run
early (its ``resume.pt`` continues it; no checkpoint is written).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mpcvit.checkpoint import fit_to_dataset, load_checkpoint, save_checkpoint
from mpcvit.models import ArchSpec, build_model, create_model, variant_of
from mpcvit.models.vit import VisionTransformer
from mpcvit.train import TrainConfig, configure_threads, train_model

if TYPE_CHECKING:
    from mpcvit.data import DatasetInfo

HELP = "train a model (optionally distilled from a softmax teacher)"
TRAIN_DATASETS = ("digits", "fashion-mnist", "cifar10")
TEACHER_ARCH = "teacher"  # --arch teacher[:VARIANT]: the teacher's architecture, VARIANT's choices
DEFAULT_STUDENT_VARIANT = "mpcvit"
EXIT_STOPPED = 3  # --stop-at ended the run between epochs; resume.pt continues it

log = logging.getLogger(__name__)

# CLI flag -> TrainConfig field, for the options that are given only when set
_CONFIG_FLAGS: dict[str, str] = {
    "batch_size": "--batch-size", "lr": "--lr", "weight_decay": "--weight-decay", "warmup_epochs": "--warmup-epochs",
    "label_smoothing": "--label-smoothing", "pad": "--pad", "kd_alpha": "--kd-alpha",
    "kd_temperature": "--kd-temperature", "kd_feature_weight": "--kd-feature-weight",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered model name, e.g. vit_2_4_8 (see 'mpcvit models')")
    src.add_argument(
        "--arch", metavar="ARCH_JSON",
        help="build the model from an ArchSpec JSON file instead; 'teacher[:VARIANT]': the teacher's architecture with "
             f"VARIANT's attention / GeLU choices (default {DEFAULT_STUDENT_VARIANT}), started from the teacher's weights",
    )
    parser.add_argument("--dataset", required=True, choices=TRAIN_DATASETS)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--out", required=True, help="checkpoint directory to write (and resume from)")
    parser.add_argument("--teacher", metavar="CKPT", help="softmax teacher checkpoint: distil logits and token features")
    parser.add_argument(
        "--teacher-normalisation", action="store_true",
        help="normalise inputs as the teacher's meta.json says instead of with the dataset's statistics (recorded in the checkpoint)",
    )
    parser.add_argument("--data-dir", help="dataset directory (required for cifar10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: $MPCVIT_THREADS or all CPUs allowed)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--device", default="cpu", help="torch device to train on: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--limit", type=int, help="use only the first N train and test images (smoke tests)")
    parser.add_argument(
        "--eval-each-epoch", action="store_true", help="record the test accuracy after every epoch in meta.json's history"
    )
    parser.add_argument(
        "--stop-at", type=float, metavar="UNIX_TIME",
        help="stop between epochs when the next one would end after this time (exit status 3; resumable)",
    )
    defaults = "(default: the dataset's recipe, see mpcvit/train.py RECIPES)"
    parser.add_argument("--batch-size", type=int, help=f"batch size {defaults}")
    parser.add_argument("--lr", type=float, help=f"peak AdamW learning rate {defaults}")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.05)")
    parser.add_argument("--warmup-epochs", type=float, help="linear warm-up epochs before the cosine decay (default 1)")
    parser.add_argument("--label-smoothing", type=float, help="label smoothing (default 0.1)")
    parser.add_argument("--pad", type=int, help=f"random-crop padding in pixels {defaults}")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None, help="random horizontal flips")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flips")
    parser.add_argument("--kd-alpha", type=float, help="weight a of the logit KL term; CE gets 1 - a (default 0.5)")
    parser.add_argument("--kd-temperature", type=float, help="distillation temperature T (default 4)")
    parser.add_argument("--kd-feature-weight", type=float, help="weight of the token-feature MSE (default 1)")


def _config(args: argparse.Namespace) -> TrainConfig:
    overrides: dict[str, Any] = {f: getattr(args, f) for f in _CONFIG_FLAGS if getattr(args, f) is not None}
    if args.flip is not None:
        overrides["flip"] = args.flip
    return TrainConfig.for_dataset(args.dataset, epochs=args.epochs, seed=args.seed, **overrides)


def _student_variant(arch: str | None) -> str | None:
    """VARIANT of ``--arch teacher[:VARIANT]``; None for an ArchSpec file."""
    name, _, variant = (arch or "").partition(":")
    return (variant or DEFAULT_STUDENT_VARIANT) if name == TEACHER_ARCH else None


def _model(args: argparse.Namespace, teacher: VisionTransformer | None) -> VisionTransformer:
    variant = _student_variant(args.arch)
    if variant is not None:
        if teacher is None:
            raise ValueError(f"--arch {args.arch} needs --teacher CKPT")
        model = build_model(variant_of(teacher.spec, variant))
        model.load_state_dict(teacher.state_dict())
        return model
    if args.arch:
        path = Path(args.arch)
        if not path.is_file():
            raise FileNotFoundError(f"architecture file {path} does not exist")
        return build_model(ArchSpec.from_json(path.read_text()))
    return create_model(args.model)


def _teacher(args: argparse.Namespace, info: DatasetInfo) -> tuple[VisionTransformer | None, dict[str, list[float]]]:
    """The teacher (None without one) and the input normalisation of the run."""
    if not args.teacher:
        if args.teacher_normalisation:
            raise ValueError("--teacher-normalisation needs --teacher CKPT")
        return None, info.normalisation()
    teacher, meta = load_checkpoint(args.teacher)
    normalisation = fit_to_dataset(f"teacher {args.teacher}", teacher.spec, meta, args.dataset, info,
                                   args.teacher_normalisation, "--teacher-normalisation")
    return teacher, normalisation


def _check_pair(teacher: VisionTransformer, model: VisionTransformer, cfg: TrainConfig) -> None:
    """Feature distillation compares every token's feature: the same tokens and width (unless its weight is 0)."""
    t, s = teacher.spec, model.spec
    if cfg.kd_feature_weight > 0 and (t.num_tokens, t.embed_dim) != (s.num_tokens, s.embed_dim):
        raise ValueError(
            f"feature distillation needs the teacher's tokens and width ({t.num_tokens} x {t.embed_dim}), the student has "
            f"{s.num_tokens} x {s.embed_dim}: use --arch {TEACHER_ARCH}, or --kd-feature-weight 0 to distil the logits only"
        )


def command_line(args: argparse.Namespace, cfg: TrainConfig) -> str:
    """The full command that reproduces this run, every training option spelled out."""
    parts = ["mpcvit", "train"]
    parts += ["--arch", args.arch] if args.arch else ["--model", args.model]
    parts += ["--dataset", args.dataset, "--epochs", str(cfg.epochs), "--out", args.out]
    if args.teacher:
        parts += ["--teacher", args.teacher]
    if args.teacher_normalisation:
        parts.append("--teacher-normalisation")
    if args.data_dir:
        parts += ["--data-dir", args.data_dir]
    parts += ["--seed", str(cfg.seed)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.limit is not None:
        parts += ["--limit", str(args.limit)]
    if args.eval_each_epoch:
        parts.append("--eval-each-epoch")
    for field, flag in _CONFIG_FLAGS.items():
        if field.startswith("kd_") and not args.teacher:
            continue
        parts += [flag, str(getattr(cfg, field))]
    parts.append("--flip" if cfg.flip else "--no-flip")
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from mpcvit.data import dataset_info

    if args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    threads = configure_threads(args.threads)
    cfg = _config(args)
    info = dataset_info(args.dataset, args.data_dir)
    teacher, normalisation = _teacher(args, info)
    torch.manual_seed(cfg.seed)  # the initialisation depends on --seed too
    model = _model(args, teacher)
    if model.spec.input_shape != info.input_shape or model.spec.num_classes != info.num_classes:
        raise ValueError(
            f"{model.spec.name or 'the model'} takes {model.spec.input_shape} -> {model.spec.num_classes} classes, "
            f"{args.dataset} is {info.input_shape} -> {info.num_classes} classes"
        )
    if teacher is not None:
        _check_pair(teacher, model, cfg)
    log.info("training %s on %s with %d threads: %s", model.spec.name or args.arch, args.dataset, threads, model.spec.summary())
    result = train_model(
        model, args.dataset, teacher=teacher, normalisation=normalisation, config=cfg, out_dir=args.out, data_dir=args.data_dir,
        progress=not args.no_progress, device=args.device, limit=args.limit,
        eval_each_epoch=args.eval_each_epoch, stop_at=args.stop_at,
    )
    if not result["completed"]:
        print(f"stopped after epoch {result['epochs_done']} of {cfg.epochs}; the same command resumes {args.out}")
        return EXIT_STOPPED
    meta = {
        "model": model.spec.name or Path(args.arch).stem,
        "dataset": args.dataset,
        "class_names": list(info.class_names),
        "normalisation": normalisation,
        "test_accuracy": round(result["test_accuracy"], 6),
        "epochs": cfg.epochs,
        "train_loss": result["train_loss"],
        "history": result["history"],
        "device": args.device,
        "train_seconds": result["seconds"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "teacher": args.teacher,
        "distilled": teacher is not None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "command": command_line(args, cfg),
    }
    save_checkpoint(args.out, model, meta)
    print(f"{meta['model']} on {args.dataset}: test accuracy {100 * result['test_accuracy']:.2f}% -> {args.out}")
    return 0
