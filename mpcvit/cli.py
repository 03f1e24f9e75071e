"""The ``mpcvit`` command line: one console script, one module per subcommand.

Each subcommand lives in ``mpcvit/commands/<name>.py`` and exposes
``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their subcommand runs, so ``mpcvit --help`` stays fast and a
broken optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("mpcvit.commands.train", "train a model (optionally distilled from a softmax teacher)"),
    "train-queue": ("mpcvit.commands.train_queue", "run a plan of training runs, several at once, resumable"),
    "eval": ("mpcvit.commands.evaluate", "plaintext accuracy of a checkpoint"),
    "eval-private": ("mpcvit.commands.eval_private", "secure 2PC inference in-process: accuracy, agreement, costs"),
    "models": ("mpcvit.commands.models", "list the registered model presets"),
    "import": ("mpcvit.commands.import_timm", "import a timm Vision Transformer (weights file or random init) as a checkpoint"),
    "certs": ("mpcvit.commands.certs", "make a CA and per-role mutual-TLS certificates"),
    "dealer": ("mpcvit.commands.dealer", "run the dealer (correlated randomness) process"),
    "party": ("mpcvit.commands.party", "run a party process (rank 0 = model owner, rank 1 = compute peer)"),
    "serve": ("mpcvit.commands.serve", "run the REST coordinator"),
    "classify": ("mpcvit.commands.classify", "classify an image privately through a coordinator"),
    "predict": ("mpcvit.commands.predict", "the plaintext class of one image from a local checkpoint (no MPC)"),
    "demo": ("mpcvit.commands.demo", "start dealer, parties and coordinator locally and classify real images"),
    "search": ("mpcvit.commands.search", "MPC-aware architecture search (MPCViT / MPCViT+)"),
    "derive": ("mpcvit.commands.derive", "derive an architecture spec from a search at a ratio or latency budget"),
    "bench": ("mpcvit.commands.bench", "communication-cost benchmark: rounds, bytes, latency on LAN and WAN"),
}

# libraries whose INFO lines are noise to a person running a command (kept with -v)
QUIET_LOGGERS: tuple[str, ...] = ("httpx", "httpcore")


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpcvit",
        description="Private inference for MPC-friendly Vision Transformers over two-party computation.",
        epilog="Run 'mpcvit COMMAND --help' for the options of one command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == load:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mpcvit.localstack import die_with_parent_from_env

    die_with_parent_from_env()  # a role started by the local stack ends with it
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    try:
        parser = build_parser(load=command)
    except ModuleNotFoundError as exc:
        print(f"mpcvit {command}: not available in this build ({exc})", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # httpx logs every request at INFO ("HTTP Request: POST ..."): only with -v
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"mpcvit {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
