"""Retrain a derived architecture from scratch with knowledge distillation from a softmax teacher.

A thin wrapper over ``mpcvit.train.train_model`` (logit KL + token-feature MSE, as MPCViT
retrains its searched models) that also lets a shorter recipe run on a fixed random subset
of the train split, so that a re-run softmax reference can get exactly the same recipe:

    python -m mpcvit.search.retrain --arch results/search/arch/mpcvit_mu0.3.json \
        --teacher checkpoints/fashion-mnist/vit_4_4_28 --dataset fashion-mnist --epochs 3 \
        --out checkpoints/fashion-mnist/mpcvit_4_4_28_mu0.3

``--model vit_4_4_28`` instead of ``--arch`` trains a registry preset with the same recipe
(the softmax reference). Resumable: progress lives in ``--work`` (default ``runs/retrain/<name>``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from mpcvit.checkpoint import fit_to_dataset, load_checkpoint, save_checkpoint
from mpcvit.models.registry import model_spec
from mpcvit.models.spec import ArchSpec
from mpcvit.models.vit import VisionTransformer

log = logging.getLogger(__name__)


def subset(dataset: TensorDataset, limit: int | None, seed: int) -> TensorDataset:
    """A fixed random subset of ``limit`` examples (all when None)."""
    x, y = dataset.tensors
    if limit is None or limit >= len(y):
        return dataset
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]
    return TensorDataset(x[idx], y[idx])


def retrain(spec: ArchSpec, dataset: str, teacher_dir: str | None, epochs: int, out: str | Path, *,
            train_limit: int | None = None, work: str | Path | None = None, seed: int = 0, progress: bool = True,
            command: str = "", role: str = "derived", teacher_normalisation: bool = False, **options: Any) -> dict[str, Any]:
    """Train ``spec`` from scratch (KD from ``teacher_dir`` when given) and save a checkpoint at ``out``.

    The teacher must fit the dataset (``mpcvit.checkpoint.fit_to_dataset``); with ``teacher_normalisation``
    the student trains on the teacher's own input normalisation (an imported model trained with another)."""
    from mpcvit.data import dataset_info, load_dataset
    from mpcvit.train import TrainConfig, train_model

    torch.manual_seed(seed)
    info = dataset_info(dataset)
    teacher = None
    normalisation = info.normalisation()
    if teacher_dir:
        teacher, teacher_meta = load_checkpoint(teacher_dir)
        normalisation = fit_to_dataset(f"teacher {teacher_dir}", teacher.spec, teacher_meta, dataset, info,
                                       teacher_normalisation, "--teacher-normalisation")
    model = VisionTransformer(spec)
    train = subset(load_dataset(dataset, "train"), train_limit, seed)
    cfg = TrainConfig.for_dataset(dataset, epochs=epochs, seed=seed, **options)
    work_dir = Path(work) if work else Path("runs") / "retrain" / Path(out).name
    result = train_model(model, train, epochs, teacher, test_dataset=load_dataset(dataset, "test"),
                         normalisation=normalisation, config=cfg, out_dir=work_dir, progress=progress)
    meta = {
        "dataset": dataset,
        "class_names": list(info.class_names),
        "normalisation": normalisation,
        "test_accuracy": result["test_accuracy"],
        "epochs": epochs,
        "train_limit": train_limit,
        "teacher": teacher_dir,
        "recipe": result["config"],
        "history": result["history"],
        "train_seconds": result["seconds"],
        "command": command,
        "role": role,
        "search": spec.extra.get("search") if isinstance(spec.extra, dict) else None,
    }
    save_checkpoint(out, model, meta)
    log.info("%s: test accuracy %.4f (%s)", out, result["test_accuracy"], spec.summary())
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="retrain a derived architecture with KD from a softmax teacher")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", help="ArchSpec JSON (from 'mpcvit derive')")
    what.add_argument("--model", help="a registry preset instead (e.g. the softmax reference vit_4_4_28)")
    parser.add_argument("--teacher", default=None, help="softmax teacher checkpoint (distillation)")
    parser.add_argument("--teacher-normalisation", action="store_true",
                        help="train on the teacher's own input normalisation (an imported model trained with another)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--train-limit", type=int, default=None, help="train on a fixed random subset of this size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup-epochs", type=float, default=None, help="override the recipe's warm-up (epochs)")
    parser.add_argument("--pad", type=int, default=None, help="override the recipe's random-shift padding (0 = none)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="override the recipe's flips")
    parser.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    parser.add_argument("--work", default=None, help="resume directory (default runs/retrain/<out name>)")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--role", choices=("derived", "reference", "teacher"), default="derived",
                        help="'reference': a registry model re-run with the same recipe, to compare against; "
                             "'teacher': a softmax model trained (without KD) to distil from")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    spec = ArchSpec.from_json(Path(args.arch).read_text()) if args.arch else model_spec(args.model)
    overrides = {k: v for k, v in (("warmup_epochs", args.warmup_epochs), ("pad", args.pad), ("flip", args.flip),
                                   ("lr", args.lr)) if v is not None}
    command = "python -m mpcvit.search.retrain " + shlex.join(argv if argv is not None else sys.argv[1:])
    retrain(spec, args.dataset, args.teacher, args.epochs, args.out, train_limit=args.train_limit, work=args.work,
            seed=args.seed, progress=not args.no_progress, command=command, role=args.role,
            teacher_normalisation=args.teacher_normalisation, **overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
