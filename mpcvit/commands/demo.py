"""``mpcvit demo``: the two-party demo as local processes (the README's ``make demo``).

Starts the same topology as ``docker-compose.yml`` on loopback -- dealer,
party 0, party 1 and the REST coordinator, with mutual TLS (certificates made
in a temporary directory) unless ``--insecure`` -- waits until they are
healthy, classifies a few real test images through the *private* REST path
(``mpcvit.client.PrivateClient``: the image is secret-shared and sealed on this
side, the coordinator relays sealed boxes only), and prints for each image the
secure class, the plaintext model's class, whether they agree, and the costs
(rounds, bytes, seconds). Everything is stopped on exit or Ctrl-C.

With ``--keep-running`` the demo supervises the four processes: a role that
dies (dealer, a party, the coordinator) is started again with the same ports
and certificates, and the coordinator loads the model again on a party that
came back without it; past ``--max-restarts`` deaths of one role within 10
minutes the demo stops and says where the logs are kept.

``--server URL`` skips the local processes and runs the same check against a
coordinator that is already up (``docker/e2e.sh`` uses it on the compose demo).

Exit status: 0 when every secure class equals the plaintext model's class,
1 otherwise (or on an error).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from mpcvit.checkpoint import load_checkpoint, load_manifest, normalise_input
from mpcvit.units import format_bytes

if TYPE_CHECKING:
    from mpcvit.localstack import LocalStack

log = logging.getLogger(__name__)

HELP = "start dealer, parties and coordinator locally and classify real images"

# Demo models when a dataset's folder has no manifest.json (its "default" comes first), most preferred first.
PREFERRED: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("mpcvit_4_4_28_mu0.1", "mpcvit_4_4_28_mu0.3", "mpcvitplus_4_4_28_mu0.3", "vit_4_4_28"),
    "digits": ("mpcvit_2_4_8", "mpcvitplus_2_4_8", "relu_2_4_8", "vit_2_4_8"),
}


@dataclass(frozen=True)
class Row:
    """One classified image: what the secure path and the plaintext model said, and the costs."""

    index: int  # in the dataset's test split
    true_class: str
    private_class: str
    plaintext_class: str
    agree: bool
    correct: bool  # the secure class is the test set's label
    max_logit_error: float  # max |secure logit - plaintext logit|
    rounds: int | None
    bytes: int | None
    seconds: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help="checkpoint name (default: the Fashion-MNIST MPCViT model when Debian's dataset-fashion-mnist "
        "is installed, else the digits one)",
    )
    parser.add_argument("--images", type=int, default=4, help="how many test images to classify (default 4)")
    parser.add_argument(
        "--keep-running", action="store_true", help="after the images, keep serving until Ctrl-C (prints the page URL)"
    )
    parser.add_argument(
        "--max-restarts", type=int, default=3,
        help="with --keep-running: how often a role that dies is started again within 10 minutes before the demo "
        "stops (default 3)",
    )
    parser.add_argument(
        "--pairs", type=int, default=1,
        help="party pairs behind the coordinator (default 1); more run several secure forwards at once "
        "(replicas share each party's certificate and key)",
    )
    parser.add_argument("--insecure", action="store_true", help="plaintext gRPC between the processes (no mutual TLS)")
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="checkpoint root (default: ./checkpoints, else the repository's)"
    )
    parser.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
    parser.add_argument(
        "--server", default=None, metavar="URL", help="use this running coordinator instead of starting processes"
    )
    parser.add_argument("--ca", default=None, help="with --server: the deployment's CA certificate, to verify the parties' keys")
    parser.add_argument("--pin", action="append", default=None, metavar="SHA256",
                        help="with --server: pinned fingerprints of party 0's and party 1's sealing keys (twice)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for start-up and per image")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--save-images", type=Path, default=None, metavar="DIR",
        help="also save the test images as PNGs (NN_INDEX_CLASS.png) for 'mpcvit classify'",
    )


# -- choosing the model and the images -------------------------------------------


def default_models_dir() -> Path:
    """``./checkpoints`` when it exists, else the one next to the installed package (an editable install)."""
    cwd = Path.cwd() / "checkpoints"
    if cwd.is_dir():
        return cwd
    return Path(__file__).resolve().parents[2] / "checkpoints"


def find_checkpoint(models_dir: Path, model: str) -> Path:
    """The checkpoint directory for ``model``: ``models_dir/model`` or ``models_dir/<dataset>/model``."""
    direct = models_dir / model
    if (direct / "arch.json").is_file():
        return direct
    hits = sorted(p.parent for p in models_dir.glob(f"*/{model}/arch.json"))
    if not hits:
        known = sorted(p.parent.name for p in models_dir.glob("**/arch.json"))
        raise ValueError(f"no checkpoint {model!r} under {models_dir}; known: {', '.join(known) or 'none'}")
    return hits[0]


def _fashion_mnist_installed() -> bool:
    from mpcvit.data import DatasetMissingError, load_dataset

    try:
        load_dataset("fashion-mnist", "test")
    except (DatasetMissingError, ValueError, OSError):
        return False
    return True


def default_model(models_dir: Path) -> str:
    """The Fashion-MNIST demo model when its data and a checkpoint are here, else the digits one.

    Within a dataset, the default of its folder's ``manifest.json`` (the best committed checkpoint), else
    the first of ``PREFERRED`` that exists, else the first checkpoint by name.
    """
    datasets = ("fashion-mnist", "digits") if _fashion_mnist_installed() else ("digits",)
    for dataset in datasets:
        manifest = load_manifest(models_dir / dataset)
        if manifest is not None and manifest.default and (models_dir / dataset / manifest.default / "arch.json").is_file():
            return manifest.default
        for name in PREFERRED[dataset]:
            if (models_dir / dataset / name / "arch.json").is_file() or (models_dir / name / "arch.json").is_file():
                return name
        others = sorted(p.parent.name for p in (models_dir / dataset).glob("*/arch.json"))
        if others:  # no preferred name: any checkpoint of this dataset
            return others[0]
    raise ValueError(f"no demo checkpoint under {models_dir} (train one with 'mpcvit train')")


def pick_images(dataset: str, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` test images spread over the split (fixed seed): indices, images (B, C, H, W) in [0, 1], labels."""
    from mpcvit.data import load_dataset

    x, y = load_dataset(dataset, "test").tensors
    if not 1 <= count <= len(x):
        raise ValueError(f"--images must be between 1 and {len(x)}, got {count}")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:count]
    return idx, x[idx], y[idx]


# -- costs -----------------------------------------------------------------------


def _total(costs: dict[str, Any], *keys: str) -> int | None:
    vals = [costs.get(k) for k in keys]
    return int(sum(v for v in vals if isinstance(v, (int, float)))) if any(isinstance(v, (int, float)) for v in vals) else None


def summarise_costs(costs: dict[str, Any]) -> tuple[int | None, int | None]:
    """(rounds, bytes) of one inference from the coordinator's ``costs`` (bytes: sent by party 0 + party 1).

    Reads the coordinator's ``{"total": {"rounds", "bytes", "seconds"}, "parties": [...]}``; without
    ``total``, the per-party list (rounds: the larger, bytes: the sum of sent), else top-level counts.
    """
    total = costs.get("total")
    if isinstance(total, dict) and ("rounds" in total or "bytes" in total):
        return _total(total, "rounds"), _total(total, "bytes")
    per_party = costs.get("parties")
    if isinstance(per_party, dict):
        per_party = list(per_party.values())
    if per_party is None and isinstance(costs.get("party0"), dict):
        per_party = [costs["party0"], costs.get("party1") or {}]
    if isinstance(per_party, list) and per_party and all(isinstance(p, dict) for p in per_party):
        rounds = [r for p in per_party if (r := _total(p, "rounds")) is not None]
        sent = [b for p in per_party if (b := _total(p, "bytes_sent")) is not None]
        return (max(rounds) if rounds else None, sum(sent) if sent else None)
    return _total(costs, "rounds"), _total(costs, "bytes_total") or _total(costs, "bytes_sent", "bytes_received") or _total(costs, "bytes")


# -- the run ---------------------------------------------------------------------


def _class_names(meta: dict[str, Any], dataset: str) -> list[str] | None:
    """Class names from meta.json (``classes`` or ``class_names``), else the dataset's."""
    for key in ("classes", "class_names"):
        names = meta.get(key)
        if isinstance(names, list) and names:
            return [str(c) for c in names]
    from mpcvit.data import dataset_info

    try:
        return list(dataset_info(dataset).class_names)
    except (ValueError, OSError):
        return None


def _class_name(classes: list[str] | None, k: int) -> str:
    return classes[k] if classes and k < len(classes) else str(k)


def save_images(directory: Path, idx: torch.Tensor, images: torch.Tensor, labels: list[str]) -> list[Path]:
    """Write images (B, C, H, W) in [0, 1] as 8-bit PNGs named ``NN_INDEX_CLASS.png``."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (i, x, label) in enumerate(zip(idx.tolist(), images, labels), start=1):
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8)  # (C, H, W)
        arr = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
        safe = "".join(c if c.isalnum() else "-" for c in label)
        path = directory / f"{n:02d}_{i}_{safe}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def classify_images(
    url: str, model: str, checkpoint: Path, count: int, timeout: float, save_dir: Path | None = None,
    trust: dict[str, Any] | None = None,
) -> list[Row]:
    """Classify ``count`` test images privately through ``url`` and in plaintext; one row each.

    ``trust``: how the client checks the parties' keys (``PrivateClient``'s ``ca``, ``pins`` or ``trust_coordinator``).
    """
    from mpcvit.client import PrivateClient

    net, meta = load_checkpoint(checkpoint)
    dataset = str(meta.get("dataset", "digits"))
    classes = _class_names(meta, dataset)
    idx, images, labels = pick_images(dataset, count)
    if save_dir is not None:
        save_images(save_dir, idx, images, [_class_name(classes, int(k)) for k in labels])
    with torch.no_grad():
        plain_logits = net(normalise_input(images, meta))
    plain = plain_logits.argmax(dim=-1)
    rows: list[Row] = []
    with PrivateClient(url, timeout=timeout, **(trust or {})) as client:
        for i in range(count):
            res = client.classify(images[i], model=model)
            rounds, nbytes = summarise_costs(res.costs)
            rows.append(Row(
                index=int(idx[i]), true_class=_class_name(classes, int(labels[i])), private_class=res.class_name,
                plaintext_class=_class_name(classes, int(plain[i])), agree=res.class_index == int(plain[i]),
                correct=res.class_index == int(labels[i]),
                max_logit_error=round(float((torch.tensor(res.logits) - plain_logits[i].double()).abs().max()), 4),
                rounds=rounds, bytes=nbytes, seconds=round(res.seconds, 3),
            ))
            print_row(i + 1, rows[-1])
    return rows


def print_header(model: str, dataset: str, where: str) -> None:
    print(f"model {model} ({dataset} test set) via {where}")
    print(f"{'#':>2}  {'index':>5}  {'true':<12} {'private (2PC)':<14} {'plaintext':<12} {'agree':<5} "
          f"{'|dlogit|':>8}  {'rounds':>6}  {'bytes':>10}  {'seconds':>7}")


def print_row(n: int, row: Row) -> None:
    print(f"{n:>2}  {row.index:>5}  {row.true_class:<12.12} {row.private_class:<14.14} {row.plaintext_class:<12.12} "
          f"{'yes' if row.agree else 'NO':<5} {row.max_logit_error:>8.4f}  {row.rounds if row.rounds is not None else '?':>6}  "
          f"{format_bytes(row.bytes):>10}  {row.seconds:>7.2f}", flush=True)


def print_summary(rows: list[Row]) -> None:
    agree = sum(r.agree for r in rows)
    correct = sum(r.correct for r in rows)
    secs = sum(r.seconds for r in rows) / len(rows)
    print(f"agreement with the plaintext model: {agree}/{len(rows)}; "
          f"correct (true class): {correct}/{len(rows)}; mean {secs:.2f} s per image")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _mpcvit_command() -> str:
    """How this shell can run mpcvit again: ``mpcvit`` when that is what runs now, else this script's path or module."""
    import shutil

    script = Path(sys.argv[0])
    if script.name == "mpcvit":
        on_path = shutil.which("mpcvit")
        same = on_path is not None and Path(on_path).resolve() == script.resolve()
        return "mpcvit" if same else shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m mpcvit.cli"


def client_hint(stack: LocalStack, url: str, model: str, image: Path | None = None) -> list[str]:
    """Where the demo's CA certificate is and a ready-to-paste ``mpcvit classify`` line for this stack."""
    trust = stack.client_trust()
    picture = shlex.quote(str(image)) if image is not None else "IMAGE.png"
    if "ca" not in trust:  # --insecure: the parties sign no key, so no client can check them
        return ["no CA (--insecure): the parties' keys cannot be checked, so 'mpcvit classify' refuses this stack; "
                f"use the page, or demo mode: curl -F image=@{picture} -F model={model} {url}/v1/classify/demo"]
    ca = shlex.quote(str(trust["ca"]))
    return [
        f"CA certificate (ca.pem, for private clients): {trust['ca']}",
        f"classify an image privately: {_mpcvit_command()} classify {picture} --server {url} --model {model} --ca {ca}",
    ]


def _serve_until_interrupted(stack: LocalStack, url: str, hint: list[str]) -> None:
    """Wait for Ctrl-C (or SIGTERM), starting again any role that dies (``LocalStack.supervise``).

    A role that dies past its restart limit raises ``RoleFailed``: the stack stops and keeps its logs.
    """
    try:  # print inside the try: a Ctrl-C right after the line must still stop cleanly
        print(f"serving: open {url}/ in a browser (API {url}/v1/health); Ctrl-C to stop", flush=True)
        for line in hint:
            print(line, flush=True)
        while True:
            for message in stack.supervise():
                print(f"restart: {message}", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nCtrl-C: stopping", flush=True)


def _run_local(args: argparse.Namespace, model: str, checkpoint: Path, dataset: str) -> list[Row]:
    """Start the four processes, classify, optionally serve until Ctrl-C, stop them all."""
    from mpcvit.localstack import LocalStack, StackConfig

    cfg = StackConfig(
        max_restarts=args.max_restarts, pairs=args.pairs,
        models_dir=checkpoint.parent, model=model, insecure=args.insecure,
        coordinator_port=args.port, startup_timeout_s=args.timeout,
    )
    parties = "party 0, party 1" if args.pairs == 1 else f"{args.pairs} pairs of party 0 and party 1"
    print(f"starting dealer, {parties}, coordinator on 127.0.0.1 "
          f"({'plaintext gRPC' if args.insecure else 'mutual TLS'}) ...", flush=True)
    t0 = time.perf_counter()
    stack = LocalStack(cfg)
    try:
        with stack:
            assert stack.endpoints is not None
            url = stack.endpoints.coordinator_url
            print(f"ready in {time.perf_counter() - t0:.1f} s: coordinator {url} (logs in {stack.workdir / 'logs'})",
                  flush=True)
            print_header(model, dataset, f"{url} (private REST path)")
            rows = classify_images(url, model, checkpoint, args.images, args.timeout, args.save_images, stack.client_trust())
            print_summary(rows)
            if args.keep_running:
                saved = sorted(args.save_images.glob("*.png")) if args.save_images else []
                _serve_until_interrupted(stack, url, client_hint(stack, url, model, saved[0] if saved else None))
    finally:
        print("stopped dealer, parties and coordinator", flush=True)
        if stack.logs_kept is not None:
            print(f"the processes' logs are kept in {stack.logs_kept}", flush=True)
    return rows


def run(args: argparse.Namespace) -> int:
    if args.images < 1:
        raise ValueError(f"--images must be at least 1, got {args.images}")
    if args.pairs < 1:
        raise ValueError(f"--pairs must be at least 1, got {args.pairs}")
    if args.max_restarts < 0:
        raise ValueError(f"--max-restarts must be 0 or more, got {args.max_restarts}")
    models_dir = (args.models_dir or default_models_dir()).resolve()
    model = args.model or default_model(models_dir)
    checkpoint = find_checkpoint(models_dir, model)
    dataset = str(json.loads((checkpoint / "meta.json").read_text()).get("dataset", "digits"))
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the demo as cleanly as Ctrl-C
    # Ctrl-C always stops it, also when it was started with SIGINT ignored (a shell's background job inherits that)
    signal.signal(signal.SIGINT, _raise_interrupt)
    if args.server:
        if args.ca is None and args.pin is None:
            raise ValueError("with --server give --ca ca.pem (the deployment's CA certificate) or --pin twice, "
                             "to verify the parties' keys")
        print_header(model, dataset, args.server)
        rows = classify_images(args.server, model, checkpoint, args.images, args.timeout, args.save_images,
                               {"ca": args.ca, "pins": args.pin})
        print_summary(rows)
    else:
        rows = _run_local(args, model, checkpoint, dataset)
    if args.json:
        args.json.write_text(json.dumps({"model": model, "dataset": dataset, "rows": [asdict(r) for r in rows]}, indent=2))
    if not all(r.agree for r in rows):
        print("mpcvit demo: the secure class differs from the plaintext model's on some image", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    from mpcvit.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
