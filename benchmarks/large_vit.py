#!/usr/bin/env python3
"""Costs of a standard-size ViT (ViT-B/16, DeiT-Tiny at 224 px) under the project's 2PC runtime, on this machine.

    python benchmarks/large_vit.py --model deit_tiny_patch16_224 --out results/bench/deit_tiny
    python benchmarks/large_vit.py --model vit_base_patch16_224 --measure-depth 1 --out results/bench/vit_b16 \\
        [--reference crypten_reference.py]

Random weights (costs do not depend on values), batch 1, the dealer provider
(randomness prefetched: the online phase is what is timed), two party
processes on this machine over CrypTen's gloo communicator. Three parts:

1. **Plan** (exact, the whole model): each party's dry run of the forward
   (``SecureViT.planned_costs``: nothing is exchanged; every protocol is
   data-oblivious, so rounds and bytes are those of the real forward), the
   dealer's correction bytes, the dry run's local compute seconds and each
   process's peak resident memory.
2. **Measured** 2PC forward of the model (the second after loading: the first
   also pays what is paid once per load, recorded as ``first_forward``), or, with ``--measure-depth K``, of
   the same model cut to its first K blocks: rounds, bytes, compute seconds
   and each process's peak memory. With K < depth the full model's compute is
   PREDICTED from two measured forwards (K and 2K blocks: their difference
   is K full blocks) as the K-block forward plus (depth - K) blocks; the
   K-block forward already holds the embedding, the head and the last block,
   which with token pooling computes only the class token (cheaper than a
   full block). Every such figure says so.
3. **Latency** on LAN and WAN PREDICTED as compute + rounds x RTT + bytes /
   bandwidth (DESIGN.md's links; the busier party's bytes).

Beside them: CrypTen's and SHAFT's published ViT-B/16 figures, and (with
``--reference SCRIPT``, a plain-CrypTen forward taking ``--depth --dim
--heads --tokens --mlp`` and printing rounds, bytes, seconds as one JSON
line) plain CrypTen measured here on ``--measure-depth`` blocks of the same
shape, scaled to the full depth where cut (labelled).

Round counts follow the runtime's comparison protocols; rerun this command
after they change.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.published import NETWORKS  # noqa: E402
from mpcvit.models.spec import ArchSpec  # noqa: E402
from mpcvit.prg import new_key  # noqa: E402
from mpcvit.timm_import import PRESETS  # noqa: E402
from protocols.local import run_two_party  # noqa: E402

log = logging.getLogger("large_vit")

GIB = 2**30
# ViT-B/16, 224 px, batch 1, two parties: the published figures (rounds; total communication, both parties)
PUBLISHED = {
    "crypten": {"rounds": 2530, "gib": 14.4, "source": "CrypTen's ViT-B/16 figures as SHAFT (NDSS 2025) reports them"},
    "shaft": {"rounds": 1468, "gib": 18.4, "source": "SHAFT (NDSS 2025), a CrypTen fork"},
}
TARGET = {"rounds": 600, "gib": 5.0, "note": "the project's target for ViT-B/16 (issue 16): both parties' online bytes"}


def preset_spec(name: str, depth: int | None = None, img_size: int | None = None) -> tuple[ArchSpec, dict[str, Any]]:
    """The timm preset as the project's ArchSpec (softmax heads, GeLU, timm's LayerNorm epsilon) and its meta.

    ``img_size`` (``--smoke``) replaces the preset's 224 px: fewer tokens, the same widths.
    """
    p = PRESETS[name]
    L = depth or p.depth
    spec = ArchSpec(img_size=img_size or p.img_size, in_chans=3, patch_size=p.patch_size, num_classes=1000, embed_dim=p.embed_dim,
                    depth=L, num_heads=p.num_heads, mlp_dim=4 * p.embed_dim, attn=tuple(("softmax",) * p.num_heads for _ in range(L)),
                    act=("gelu",) * L, norm_eps=1e-6, name=name)
    return spec, {"normalisation": {"mean": list(p.mean), "std": list(p.std)}}


def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _party(rank: int, spec_dict: dict[str, Any], meta: dict[str, Any], forward: bool, master_key: bytes) -> dict[str, Any]:
    """One party: share random weights, plan (dry run), and optionally one real forward on a random image."""
    import torch

    from mpcvit import sealing
    from mpcvit.models.vit import VisionTransformer
    from mpcvit.prg import derive_key
    from protocols.accounting import ensure_counting
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT

    ensure_counting()
    install_provider(DealerProvider(rank))
    spec = ArchSpec.from_dict(spec_dict)
    torch.manual_seed(0)
    model = VisionTransformer(spec).eval() if rank == 0 else None
    t0 = time.perf_counter()
    secure = SecureViT.share(model, spec, meta if rank == 0 else None, batch_source=InProcessDealer(master_key))  # plans batch 1
    share_and_plan_s = time.perf_counter() - t0
    del model
    planned = secure.planned_costs(1)
    out: dict[str, Any] = {
        "plan": {"rounds": planned.rounds, "bytes_sent": planned.bytes_sent, "dealer_bytes": planned.dealer_bytes,
                 "dry_run_seconds": round(planned.seconds, 2), "per_op": {k: v.rounds for k, v in planned.per_op.items()},
                 "per_op_bytes": {k: v.bytes for k, v in planned.per_op.items()}},
        "share_and_plan_seconds": round(share_and_plan_s, 2),
        "peak_mib_after_plan": _peak_mib(),
    }
    if forward:
        image = torch.rand(1, *spec.input_shape, generator=torch.Generator().manual_seed(1))
        share = sealing.share_fixed_point(image, secure.precision_bits, key=derive_key(master_key, "input"))[rank]
        _, first = secure.forward_shares(share)  # pays what is paid once per load (the weights' masks opened)
        out["first_forward"] = {"rounds": first.rounds, "bytes_sent": first.bytes_sent, "seconds": round(first.seconds, 2)}
        # what every later request costs: the dealer's material first (the offline phase, as a dealer makes it
        # ahead of a request), then a barrier, then the clock around the online forward alone
        from protocols.crypten_compat import crypten
        from protocols.providers import current_provider

        provider, dealer, plan = current_provider(), secure.batch_source, secure.plan(1)
        secure.batch_source = None  # the batch is begun here, outside the timed forward
        t0, c0 = time.perf_counter(), time.process_time()
        key, corrections = dealer.next_batch(rank, plan)
        provider.begin_batch(key, plan, corrections)
        dealer_s, dealer_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        crypten.communicator.get().barrier()
        t0 = time.perf_counter()
        _, report = secure.forward_shares(share)
        seconds = time.perf_counter() - t0
        provider.end_batch()
        out["forward"] = {"rounds": report.rounds, "bytes_sent": report.bytes_sent, "bytes_received": report.bytes_received,
                          "seconds": round(seconds, 2), "runtime_seconds": round(report.seconds, 2),
                          "dealer_bytes": report.dealer_bytes, "dealer_seconds": round(dealer_s, 2),
                          "dealer_cpu_seconds": round(dealer_cpu_s, 2),
                          "per_op_seconds": {k: round(v.seconds, 2) for k, v in report.per_op.items()},
                          "per_op_rounds": {k: v.rounds for k, v in report.per_op.items()},
                          "per_op_bytes": {k: v.bytes for k, v in report.per_op.items()},
                          "per_layer_seconds": {k: round(v.seconds, 2) for k, v in report.per_layer.items()}}
        out["peak_mib"] = _peak_mib()
    return out


def two_party(spec: ArchSpec, meta: dict[str, Any], forward: bool, timeout: float) -> list[dict[str, Any]]:
    log.info("%s depth %d: %s", spec.name, spec.depth, "plan + forward" if forward else "plan only")
    t0 = time.perf_counter()
    result = run_two_party(_party, spec.to_dict(), meta, forward, new_key(), timeout=timeout)
    log.info("  done in %.0f s", time.perf_counter() - t0)
    return result


def reference(script: str, spec: ArchSpec, depth: int, timeout: float) -> dict[str, Any]:
    """Plain CrypTen (the yardstick script) on ``depth`` blocks of the same shape, batched heads."""
    cmd = [sys.executable, script, "--attention", "softmax", "--act", "gelu", "--batch-heads", "--depth", str(depth),
           "--dim", str(spec.embed_dim), "--heads", str(spec.num_heads), "--tokens", str(spec.num_tokens), "--mlp", str(spec.mlp_dim)]
    log.info("plain CrypTen, %d block(s) ...", depth)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1]
    row = json.loads(line)
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return row


def predict(compute_s: float, rounds: int, bytes_one_way: int) -> dict[str, float]:
    return {n: round(net.predict(compute_s, rounds, bytes_one_way), 2) for n, net in NETWORKS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(PRESETS), default="deit_tiny_patch16_224")
    parser.add_argument("--measure-depth", type=int, default=0, help="measure a forward of this many blocks (0: the whole model)")
    parser.add_argument("--reference", default=None, metavar="SCRIPT", help="plain-CrypTen yardstick script (see the docstring)")
    parser.add_argument("--reference-depth", type=int, default=0,
                        help="blocks of the plain-CrypTen run (default: the measured depth), scaled to the full depth when fewer")
    parser.add_argument("--timeout", type=float, default=3000.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the script runs, in seconds: the preset's widths on 32 px images (4 patches) and 2 blocks "
                             "(tests/benchmarks/test_smoke.py); not a measurement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t_start = time.perf_counter()

    small = {"depth": 2, "img_size": 32} if args.smoke else {}
    spec, meta = preset_spec(args.model, **small)
    L = spec.depth
    K = args.measure_depth if 0 < args.measure_depth < L else 0
    doc: dict[str, Any] = {
        "benchmark": "large-vit",
        "command": "python benchmarks/large_vit.py " + " ".join(
            Path(a).name if i > 0 and (argv or sys.argv[1:])[i - 1] == "--reference" else a for i, a in enumerate(argv or sys.argv[1:])),
        "model": args.model, "spec": spec.summary(), "tokens": spec.num_tokens, "batch": 1,
        "provider": "dealer (in-process, corrections prefetched: online phase timed)", "transport": "gloo, two processes on this machine",
        "machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count()},
    }
    # 1. the whole model's plan; 2. a measured forward (whole, or K and 2K blocks)
    if K:
        full = two_party(spec, meta, forward=False, timeout=args.timeout)
        cut = [two_party(preset_spec(args.model, d, small.get("img_size"))[0], meta, forward=True, timeout=args.timeout)
               for d in (K, 2 * K)]
        per_block = (max(p["forward"]["seconds"] for p in cut[1]) - max(p["forward"]["seconds"] for p in cut[0])) / K
        first = max(p["forward"]["seconds"] for p in cut[0])  # embed, K - 1 full blocks, the last block, head
        compute = first + (L - K) * per_block
        compute_note = (f"PREDICTED: measured forwards of the first {K} and {2 * K} blocks give one full block's seconds "
                        f"({per_block:.2f} s); compute = the {K}-block forward ({first:.2f} s: embedding, head and a last block "
                        f"that computes {'only the class token' if spec.pool == 'token' else 'every token'}) + {L - K} x block")
        measured = {"depths": [K, 2 * K], "forwards": [[p["forward"] for p in c] for c in cut],
                    "peak_mib": [[p["peak_mib"] for p in c] for c in cut]}
        peak = [max(full[r]["peak_mib_after_plan"], cut[1][r]["peak_mib"]) for r in (0, 1)]
        peak_note = (f"the larger of the whole model's share + plan process and the {2 * K}-block forward's process; "
                     "a whole-model forward holds every block's weights and randomness at once, so it needs more")
    else:
        full = two_party(spec, meta, forward=True, timeout=args.timeout)
        compute = max(p["forward"]["seconds"] for p in full)
        compute_note = "measured: the whole model's 2PC forward (the slower party's wall time)"
        measured = {"depths": [L], "forwards": [[p["forward"] for p in full]]}
        peak = [p["peak_mib"] for p in full]
        peak_note = "each party process's peak resident memory over share, plan and forward (the in-process dealer's randomness included)"
        fwd = full[0]["forward"]
        assert fwd["rounds"] == full[0]["plan"]["rounds"], "the plan's rounds must be the forward's"
    plan0, plan1 = full[0]["plan"], full[1]["plan"]
    rounds = max(plan0["rounds"], plan1["rounds"])
    sent = [plan0["bytes_sent"], plan1["bytes_sent"]]
    online_gib = sum(sent) / GIB
    doc["costs"] = {
        "rounds": rounds,
        "online_bytes_sent": {"party0": sent[0], "party1": sent[1], "total": sum(sent), "total_gib": round(online_gib, 3)},
        "dealer_bytes": plan0["dealer_bytes"], "dealer_gib": round(plan0["dealer_bytes"] / GIB, 3),
        **({} if K else {
            "dealer_bytes_party1": full[1]["forward"]["dealer_bytes"],
            "dealer_seconds": [p["forward"]["dealer_seconds"] for p in full],
            "dealer_cpu_seconds": [p["forward"]["dealer_cpu_seconds"] for p in full],
            "dealer_note": "the in-process dealer making one party's material for one forward, before the clock starts "
                           "(party 0's: its corrections and both parties' DCF keys, as a dealer computes them)"}),
        "rounds_and_bytes_from": "each party's dry run of the whole model (exact; nothing exchanged)",
        "compute_seconds": round(compute, 2), "compute_note": compute_note,
        "peak_memory_mib": {"party0": peak[0], "party1": peak[1], "note": peak_note},
        "dry_run_seconds": [plan0["dry_run_seconds"], plan1["dry_run_seconds"]],
        "rounds_per_op": plan0["per_op"],
    }
    doc["latency_seconds"] = {
        **predict(compute, rounds, max(sent)),
        "note": "PREDICTED: compute + rounds x RTT + bytes / bandwidth (LAN 3 Gbit/s 0.3 ms, WAN 400 Mbit/s 40 ms; the busier party's bytes)"
                + ("" if not K else "; compute itself predicted as above"),
    }
    doc["measured"] = measured
    doc["published_vit_b16"] = PUBLISHED
    if args.model == "vit_base_patch16_224":
        doc["target"] = TARGET
        doc["versus_published"] = {k: {"rounds_ratio": round(rounds / v["rounds"], 3), "bytes_ratio": round(online_gib / v["gib"], 3)}
                                   for k, v in PUBLISHED.items()}
    if args.reference:
        d = args.reference_depth if 0 < args.reference_depth < L else (K or L)
        ref = reference(args.reference, spec, d, args.timeout)
        if "rounds" in ref and d < L:
            ref["scaled_to_full_depth"] = {"rounds": round(ref["rounds"] * L / d), "bytes": round(ref["bytes"] * L / d),
                                           "seconds": round(ref["seconds"] * L / d, 1),
                                           "note": f"PREDICTED: {d} block(s) measured, x {L} / {d} (embedding and head left out)"}
        doc["plain_crypten_here"] = ref
    doc["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    doc["load_average_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "README.md").write_text(render(doc))
    log.info("wrote %s", args.out)
    return 0


def render(doc: dict[str, Any]) -> str:
    c, lat = doc["costs"], doc["latency_seconds"]
    lines = [
        f"# {doc['model']} under 2PC (batch 1)", "",
        f"`{doc['command']}`", "",
        f"{doc['spec']}; {doc['tokens']} tokens. {doc['provider']}; {doc['transport']}.", "",
        "| | value |", "|---|---:|",
        f"| rounds | {c['rounds']:,} |",
        f"| online bytes sent, party 0 / party 1 | {c['online_bytes_sent']['party0'] / GIB:.3f} / {c['online_bytes_sent']['party1'] / GIB:.3f} GiB |",
        f"| online bytes, both parties | {c['online_bytes_sent']['total_gib']:.3f} GiB |",
        f"| dealer bytes (offline, to party 0) | {c['dealer_gib']:.3f} GiB |",
        *([f"| dealer bytes (offline, to party 1) | {c['dealer_bytes_party1'] / GIB:.3f} GiB |",
           f"| dealer seconds (wall / CPU, party 0's material) | {c['dealer_seconds'][0]:.1f} / {c['dealer_cpu_seconds'][0]:.1f} s |"]
          if "dealer_seconds" in c else []),
        f"| compute | {c['compute_seconds']:.1f} s |",
        f"| peak memory, party 0 / party 1 | {c['peak_memory_mib']['party0']:,.0f} / {c['peak_memory_mib']['party1']:,.0f} MiB |",
        f"| LAN latency (predicted) | {lat['lan']:.1f} s |",
        f"| WAN latency (predicted) | {lat['wan']:.1f} s |", "",
        f"Rounds and bytes: {c['rounds_and_bytes_from']}. Compute: {c['compute_note']}, the dealer's material made before the clock starts. Peak memory: {c['peak_memory_mib']['note']}. "
        f"Latency: {lat['note']}.", "",
        "Published ViT-B/16 figures (both parties, batch 1): "
        + "; ".join(f"{k}: {v['rounds']:,} rounds, {v['gib']} GiB ({v['source']})" for k, v in doc["published_vit_b16"].items()) + ".",
    ]
    if "versus_published" in doc:
        lines += ["", "Ours over published: " + "; ".join(
            f"{k}: {v['rounds_ratio']:.2f}x rounds, {v['bytes_ratio']:.2f}x bytes" for k, v in doc["versus_published"].items())
            + f". Target: <= {doc['target']['rounds']} rounds and <= {doc['target']['gib']} GiB."]
    ref = doc.get("plain_crypten_here")
    if ref and "rounds" in ref:
        scaled = ref.get("scaled_to_full_depth")
        lines += ["", f"Plain CrypTen measured here on {ref['depth']} block(s) of this shape (the yardstick script: batched heads, "
                  f"no embedding or head, CrypTen's default trusted-first-party provider): {ref['rounds']:,} rounds, "
                  f"{ref['bytes'] / GIB:.3f} GiB (party 0's counter, sent + received = both parties' online bytes), {ref['seconds']} s"
                  + (f"; scaled to the full depth: {scaled['rounds']:,} rounds, {scaled['bytes'] / GIB:.2f} GiB, {scaled['seconds']} s ({scaled['note']})" if scaled else "")
                  + "."]
    lines += ["", f"Run took {doc['wall_seconds']:.0f} s; load average at the end {doc['load_average_at_end']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
