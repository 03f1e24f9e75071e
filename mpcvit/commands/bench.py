"""``mpcvit bench``: rounds, bytes and latency of every model family on LAN and WAN (benchmarks/bench.py and its bench_* modules)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "communication-cost benchmark: rounds, bytes, latency on LAN and WAN"

logger = logging.getLogger(__name__)

EPILOG = """\
Quick mode (CI): mpcvit bench --quick --out runs/bench-quick  (2_4_8 shape, every model, one repeat,
inprocess transport, no shaping; well under a minute).

Full mode, the committed run (results/bench/), the runtime before the whole-cost work beside today's:
  mpcvit bench --models vit,mpcformer,thex,relu,scale,mpcvit,mpcvitplus --arch 7_4_32 --network lan,wan \\
      --batch 1 --transport grpc --repeats 3 --wan-repeats 2 --warmup 1 --protocols fss1,fss --out results/bench
took 5 minutes on a 2-core machine at load ~2 (WAN: 90-290 rounds x 20 ms one-way per inference),
and batch 8 (measured on LAN, predicted on WAN with --wan-max-batch 1) is a separate run:
  mpcvit bench --models vit,mpcformer,thex,mpcvit,mpcvitplus --arch 7_4_32 --network lan,wan --batch 8 \\
      --wan-max-batch 1 --transport grpc --repeats 2 --out results/bench/batch8

Old and new protocols side by side (offline dealer bytes and seconds in every row; each older set
against the newest: circuits < fss1 < spline < product < fss; fss1 is the fss runtime before the whole-cost work):
  mpcvit bench --models vit,mpcformer,thex,mpcvit --arch 7_4_32 --network lan,wan --batch 1 \\
      --protocols circuits,fss1,fss --out results/bench

Latency is measured over the gRPC transport with its sender-side shaper (one-way delay = RTT/2 plus
bandwidth) and predicted as compute + rounds x RTT + bytes / bandwidth. The inprocess transport
(CrypTen's gloo) is not shaped: it gives predictions only.
"""


def _csv(kind: type = str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> tuple:  # type: ignore[type-arg]
        try:
            return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _protocols(text: str) -> tuple[str, ...]:
    """``--protocols``: a comma list of fss, fss1, circuits (order kept), or ``both`` (= circuits,fss)."""
    from benchmarks.bench_models import PROTOCOLS

    names = [x.strip() for x in text.split(",") if x.strip()]
    if names == ["both"]:
        return ("circuits", "fss")
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown protocol set {', '.join(map(repr, unknown)) or repr(text)}; give a comma list of "
            f"{', '.join(PROTOCOLS)} (e.g. fss1,fss), or both (= circuits,fss)")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"protocol set named twice in {text!r}")
    return tuple(names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--models", type=_csv(), default=None,
                        help="comma list of vit,mpcformer,thex,relu,scale,mpcvit,mpcvitplus (default: vit,mpcformer,thex,mpcvit,mpcvitplus)")
    parser.add_argument("--arch", type=_csv(), default=None,
                        help="comma list of shapes: 7_4_32,9_12_64,4_4_28,2_4_8 (default 7_4_32), or checkpoint directories "
                             "(e.g. from mpcvit import: each is benchmarked as it is, whatever --models says)")
    parser.add_argument("--network", type=_csv(), default=None, help="comma list of lan,wan (default both)")
    parser.add_argument("--batch", type=_csv(int), default=None, help="comma list of batch sizes (default 1)")
    parser.add_argument("--transport", choices=["grpc", "inprocess"], default=None,
                        help="grpc: the project's gRPC communicator, shaped (default); inprocess: CrypTen's gloo, not shaped")
    parser.add_argument("--repeats", type=int, default=None, help="measured forwards per setting (default 3)")
    parser.add_argument("--wan-repeats", type=int, default=None, help="measured forwards on WAN (default 2)")
    parser.add_argument("--wan-max-batch", type=int, default=None, help="largest batch measured on WAN; larger ones are predicted (default 1)")
    parser.add_argument("--warmup", type=int, default=None, help="unrecorded forwards before measuring (default 1)")
    parser.add_argument("--mu", type=_csv(float), default=None, help="MPCViT ReLU-softmax head ratios (default 0.7,0.1)")
    parser.add_argument("--provider", choices=["dealer", "tfp"], default="dealer",
                        help="correlated randomness (tfp only to compare with published numbers; tfp makes no DCF keys, so it runs the circuits)")
    parser.add_argument("--protocols", type=_protocols, default=("fss",), metavar="LIST",
                        help="comma list of protocol sets, run in the order given (e.g. fss1,fss): fss: the current runtime, "
                        "SecureConfig() (default); product: the same with the ReLU-softmax heads on the one-round product gate; "
                        "spline: that with the spline GeLU on every layer (no Fourier GeLU); "
                        "fss1: the fss runtime before the whole-cost work, SecureConfig.fss1(); "
                        "circuits: the small-ring comparison circuits, SecureConfig.circuits(); both: circuits,fss. "
                        "With more than one, results.md puts each older set side by side with the newest "
                        "(circuits < fss1 < spline < product < fss)")
    parser.add_argument("--no-shaping", action="store_true", help="grpc transport without the shaper (predictions only)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed for the whole run (default 10800; quick 300)")
    parser.add_argument("--quick", action="store_true", help="CI mode: 2_4_8, every model, one repeat, inprocess, no shaping")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json, results.md and the PNGs")


def settings_from_args(args: argparse.Namespace) -> "BenchSettings":  # type: ignore[name-defined]  # noqa: F821
    from benchmarks.bench import BenchSettings

    given = {
        "models": args.models, "archs": args.arch, "networks": args.network, "batches": args.batch,
        "transport": args.transport, "repeats": args.repeats, "wan_repeats": args.wan_repeats,
        "wan_max_batch": args.wan_max_batch, "warmup": args.warmup, "mus": args.mu, "timeout_s": args.timeout,
    }
    fields = {k: v for k, v in given.items() if v is not None}
    fields["provider"] = args.provider
    fields["protocols"] = args.protocols
    if args.no_shaping:
        fields["shaped"] = False
    return BenchSettings.quick_mode(**fields) if args.quick else BenchSettings(**fields)


def run(args: argparse.Namespace) -> int:
    from benchmarks.bench import run_benchmark, write_results

    settings = settings_from_args(args)
    doc = run_benchmark(settings)
    paths = write_results(doc, args.out, plots=not args.no_plots)
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return 0
