"""``mpcvit search``: MPC-aware architecture search (MPCViT, or MPCViT+ with --plus).

``--init CKPT`` starts from a checkpoint's weights (trained here, or imported with
``mpcvit import --dataset NAME``); without ``--model`` it searches that checkpoint's
own architecture.
"""

from __future__ import annotations

import argparse
import logging

HELP = "MPC-aware architecture search (MPCViT / MPCViT+)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="digits, fashion-mnist or cifar10")
    parser.add_argument("--model", default=None,
                        help="base preset whose shape is searched, e.g. vit_4_4_28 (default with --init: the checkpoint's architecture)")
    parser.add_argument("--network", choices=("lan", "wan"), default="wan", help="network whose latency the regulariser weighs")
    parser.add_argument("--lambda", dest="lam", type=float, default=0.5, help="weight of the latency regulariser")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", required=True, help="search directory (alphas.json, search_log.jsonl, resumable state)")
    parser.add_argument("--plus", nargs="?", const="token", choices=("layer", "token"), default=None,
                        help="MPCViT+: also search a beta per GeLU, per token (default) or per layer")
    parser.add_argument("--three-way", action="store_true", help="relax softmax / ReLU-softmax / scaling (default: ReLU-softmax / scaling)")
    parser.add_argument("--init", default=None,
                        help="checkpoint whose weights start the search (e.g. the softmax teacher, or an imported ViT)")
    parser.add_argument("--init-normalisation", action="store_true",
                        help="normalise inputs as the --init checkpoint's meta.json says instead of with the dataset's statistics")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--arch-lr", type=float, default=1e-2)
    parser.add_argument("--train-limit", type=int, default=None, help="search on a random subset of the train split")
    parser.add_argument("--eval-limit", type=int, default=2000, help="test images for the per-epoch relaxed accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--costs", dest="cost_source", choices=("auto", "table", "placeholder"), default="auto",
                        help="cost source: the measured table (auto falls back to the placeholder)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from mpcvit.search.loop import SearchConfig, run_search

    cfg = SearchConfig(
        dataset=args.dataset, model=args.model, network=args.network, lam=args.lam, epochs=args.epochs, out=args.out,
        act_mode=args.plus or "none", three_way=args.three_way, init=args.init,
        init_normalisation=args.init_normalisation, batch_size=args.batch_size, lr=args.lr,
        arch_lr=args.arch_lr, train_limit=args.train_limit, eval_limit=args.eval_limit, seed=args.seed,
        cost_source=args.cost_source, data_dir=args.data_dir, threads=args.threads, progress=not args.no_progress,
    )
    result = run_search(cfg)
    log.info("search done: %s (expected searchable latency %.3f s on %s); derive with 'mpcvit derive --search %s --mu 0.3'",
             args.out, result.info["expected_latency_s"], args.network, args.out)
    return 0
