"""The measured cost table (op kind x shape -> rounds, bytes, seconds) and latency estimates from it.

The table is measured from this runtime (``python -m protocols.costs``, which
writes ``results/cost_table.json``): for every registered shape, depth-2
models whose heads all have one attention kind are run in 2PC (dealer
provider, batch 1, random weights: costs do not depend on values) and the
costs of layer 0 (a full layer) are read per op kind:

* ``attention-<kind>`` (per head): the kind's normalisation plus its share of
  the two batched attention products; ``rounds`` are paid once per layer in
  which the kind appears, ``bytes`` / ``seconds`` are per head;
* ``attention-matmul`` (per layer): the 2 rounds of the batched Q K^T / K^T V and P V products;
* ``activation-<kind>`` (per layer, all tokens; ``bytes`` / ``seconds`` scale with the
  fraction of tokens that keep the activation);
* ``norm-layernorm`` (per layer: the two norms of a block, and with ``fold_products`` the qkv and fc1
  linears folded into them; ``norm-affine`` is free), ``linear`` (what is left: proj, fc2; without
  the fold qkv, proj, fc1, fc2), ``linear-affine`` (an affine-norm model's four linears),
  ``linear-fused`` (qkv, proj, fused MLP, less what the norms took), ``embed``, ``head`` (with the
  fold, the final norm too), ``norm-final`` (the final LayerNorm of the class token where unfolded).

``estimate(spec, network)`` sums them for an ``ArchSpec``:
``latency = seconds + rounds * RTT + bytes_sent / bandwidth`` where
``bytes_sent`` is half of CrypTen's per-party count (sent + received, symmetric).
Every layer is priced as a full layer (the runtime's class-token-only last
block is cheaper), so estimates are slightly conservative.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpcvit.models.registry import SHAPES, model_spec
from mpcvit.prg import new_key
from mpcvit.models.spec import ACT_KINDS, ATTN_KINDS, ArchSpec

log = logging.getLogger(__name__)

COST_TABLE_PATH = Path(__file__).resolve().parent.parent / "results" / "cost_table.json"
REGENERATE = "python -m protocols.costs --out results/cost_table.json"


@dataclass(frozen=True)
class Network:
    """A network setting: bandwidth in bits per second and round-trip time in seconds."""

    name: str
    bandwidth_bps: float
    rtt_s: float


NETWORKS: dict[str, Network] = {
    "lan": Network("lan", 3e9, 0.3e-3),
    "wan": Network("wan", 400e6, 40e-3),
}


def load_cost_table(path: str | Path | None = None) -> dict[str, Any]:
    """The cost table JSON: {"command", "entries": {shape: {op: {rounds, bytes, seconds, per}}}, ...}."""
    p = Path(path) if path is not None else COST_TABLE_PATH
    if not p.is_file():
        raise FileNotFoundError(f"no cost table at {p}; make it with: {REGENERATE}")
    table = json.loads(p.read_text())
    if "entries" not in table:
        raise ValueError(f"{p} is not a cost table (no 'entries')")
    return table


def shape_key(spec: ArchSpec) -> str:
    """The registry shape name of a spec ("7_4_32", ...), matched on its dimensions."""
    for name, dims in SHAPES.items():
        if all(getattr(spec, k) == v for k, v in dims.items() if k not in ("num_classes", "depth")):
            return name
    raise ValueError(f"no measured shape matches {spec.summary()}")


def estimate(spec: ArchSpec, network: str | Network = "wan", table: dict[str, Any] | None = None) -> dict[str, float]:
    """Rounds, bytes, compute seconds and latency of one inference of ``spec`` from the cost table."""
    net = NETWORKS[network] if isinstance(network, str) else network
    table = table or load_cost_table()
    e = table["entries"][shape_key(spec)]
    rounds, nbytes, secs = 0.0, 0.0, 0.0

    def add(entry: dict[str, Any], times: float = 1.0, with_rounds: bool = True) -> None:
        nonlocal rounds, nbytes, secs
        rounds += entry["rounds"] if with_rounds else 0
        nbytes += entry["bytes"] * times
        secs += entry["seconds"] * times

    add(e["embed"])
    add(e["head"])
    if spec.norm == "layernorm":
        add(e["norm-final"])
    for l in range(spec.depth):
        add(e["attention-matmul"])
        if spec.norm == "layernorm":
            add(e["norm-layernorm"])
        if spec.mlp_is_linear(l):
            add(e["linear-fused"])
        else:
            add(e["linear-affine"] if spec.norm == "affine" and "linear-affine" in e else e["linear"])
        for kind, count in _count(spec.attn[l]).items():
            entry = e[f"attention-{kind}"]
            rounds += entry["rounds"]
            add(entry, count, with_rounds=False)
        if not spec.mlp_is_linear(l) and spec.act[l] != "identity":
            toks = spec.tokens_with_act(l)
            frac = 1.0 if toks is None else len(toks) / spec.num_tokens
            entry = e[f"activation-{spec.act[l]}"]
            rounds += entry["rounds"]
            add(entry, frac, with_rounds=False)
    sent = nbytes / 2
    latency = secs + rounds * net.rtt_s + sent * 8 / net.bandwidth_bps
    return {"rounds": rounds, "bytes": nbytes, "seconds": secs, "latency_s": latency, "network": net.name}


def _count(kinds: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        out[k] = out.get(k, 0) + 1
    return out


# -- measuring -----------------------------------------------------------------------------
def _measure_party(rank: int, specs: list[ArchSpec], master_key: bytes) -> list[dict[str, Any]]:
    import torch

    from mpcvit.models.vit import VisionTransformer
    from mpcvit.prg import derive_key
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT

    install_provider(DealerProvider(rank))
    out = []
    for i, spec in enumerate(specs):
        torch.manual_seed(i)
        model = VisionTransformer(spec).eval() if rank == 0 else None
        secure = SecureViT.share(model, spec, None, owner=0, batch_source=InProcessDealer(derive_key(master_key, f"model/{i}")))
        x = torch.zeros(1, *spec.input_shape, dtype=torch.long)
        _, report = secure.forward_shares(x)
        out.append(report.to_dict())
    return out


def measurement_specs(shape: str) -> list[ArchSpec]:
    """Depth-2 uniform models covering every attention kind and every activation at ``shape``."""
    acts = list(ACT_KINDS) + ["gelu"] * (len(ATTN_KINDS) - len(ACT_KINDS))
    specs = []
    for kind, act in zip(ATTN_KINDS, acts):
        norm = "affine" if kind == "thex" else "layernorm"
        base = model_spec(f"vit_{shape}", depth=2)
        specs.append(base.with_(attn=((kind,) * base.num_heads,) * 2, act=(act, act), norm=norm, name=f"{kind}-{act}_{shape}"))
    return specs


def _entries(specs: list[ArchSpec], reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    e: dict[str, dict[str, Any]] = {}

    def get(rep: dict[str, Any], key: str) -> dict[str, Any]:
        return rep["per_layer_op"].get(key, {"rounds": 0, "bytes": 0, "seconds": 0.0})

    for spec, rep in zip(specs, reports):
        kind, act, H = spec.attn[0][0], spec.act[0], spec.num_heads
        att, mm = get(rep, f"layer0/attention-{kind}"), get(rep, "layer0/attention-matmul")
        e[f"attention-{kind}"] = {"per": "head", "rounds": att["rounds"], "bytes": (att["bytes"] + mm["bytes"]) / H,
                                  "seconds": (att["seconds"] + mm["seconds"]) / H}
        e["attention-matmul"] = {"per": "layer", "rounds": mm["rounds"], "bytes": 0, "seconds": 0.0}
        lin = dict(get(rep, "layer0/linear"), per="layer")
        if act == "identity":
            e["linear-fused"] = lin
        else:  # with a LayerNorm (folded) qkv and fc1 are costed in the norm: the affine model's linear has all four
            e["linear-affine" if spec.norm == "affine" else "linear"] = lin
        if act != "identity":
            e[f"activation-{act}"] = dict(get(rep, f"layer0/activation-{act}"), per="layer")
        if spec.norm == "layernorm":
            e["norm-layernorm"] = dict(get(rep, "layer0/norm"), per="layer")
        e["embed"] = dict(rep["per_op"]["embed"], per="model")
        e["head"] = dict(rep["per_op"]["head"], per="model")
        if spec.norm == "layernorm":
            e["norm-final"] = dict(get(rep, "head/norm"), per="model")
    e["norm-affine"] = {"per": "layer", "rounds": 0, "bytes": 0, "seconds": 0.0}
    e["activation-identity"] = {"per": "layer", "rounds": 0, "bytes": 0, "seconds": 0.0}
    for v in e.values():
        v["seconds"] = round(float(v["seconds"]), 5)
        v["bytes"] = int(round(v["bytes"]))
    return e


def measure(shapes: list[str], timeout: float = 3000.0) -> dict[str, Any]:
    """Measure the cost table for ``shapes`` in 2PC on this machine."""
    from protocols.local import run_two_party

    entries = {}
    for shape in shapes:
        t0 = time.perf_counter()
        specs = measurement_specs(shape)
        reports, _ = run_two_party(_measure_party, specs, new_key(), timeout=timeout)
        entries[shape] = _entries(specs, reports)
        log.info("measured shape %s in %.0f s", shape, time.perf_counter() - t0)
    return {
        "command": REGENERATE,
        "units": {"rounds": "communication rounds (party 0)", "bytes": "bytes sent + received by party 0 (CrypTen's count)",
                  "seconds": "wall seconds on this machine (2 cores, two party processes)"},
        "provider": "dealer",
        "batch_size": 1,
        "networks": {k: {"bandwidth_bps": n.bandwidth_bps, "rtt_s": n.rtt_s} for k, n in NETWORKS.items()},
        "latency_model": "seconds + rounds * rtt + (bytes / 2) * 8 / bandwidth",
        "entries": entries,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="measure the secure runtime's cost table")
    parser.add_argument("--out", default=str(COST_TABLE_PATH))
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    table = measure(args.shapes)
    out = Path(args.out)
    if out.is_file() and set(args.shapes) != set(SHAPES):  # keep shapes not re-measured
        old = json.loads(out.read_text()).get("entries", {})
        table["entries"] = {**old, **table["entries"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
