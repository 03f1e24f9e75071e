"""Summarising the benchmark: the parties' raw results into result rows (rounds, bytes, latency, per-op costs, checks).

Latency is PREDICTED on each network by ``compute + rounds x RTT + bytes /
bandwidth`` (``bytes`` = what the busier party sends; the link is full
duplex) and MEASURED where the shaped gRPC transport ran it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from benchmarks.bench_models import DEFAULT_MUS, BenchSettings, ModelEntry, effective_protocols, resolve_entries
from benchmarks.published import NETWORKS, SOURCE, published_for
from mpcvit.models import ArchSpec


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _sent(report: dict[str, Any]) -> int:
    """Bytes one party sent: ``bytes_sent``, else half of CrypTen's sent + received count (every opening is symmetric)."""
    if "bytes_sent" in report:
        return int(report["bytes_sent"])
    return int(report.get("bytes", 0)) // 2


def summarise_entry(entry: ModelEntry, settings: BenchSettings, raw: list[dict[str, Any]], protocols: str = "fss") -> list[dict[str, Any]]:
    """One result row per (batch, network) of one model under one protocol set, from both parties' raw results."""
    rows = []
    config = raw[0].get("config") or {}
    requested = [p for p in settings.protocols if effective_protocols(p, settings.provider) == protocols]
    proto_note = None
    dcf_sets = [p for p in requested if p != "circuits"]
    if settings.provider == "tfp" and dcf_sets:
        proto_note = f"TFP makes no DCF keys: --protocols {','.join(dcf_sets)} ran the circuits (SecureConfig.circuits())"
    for batch in settings.batches:
        runs0 = [r for r in raw[0]["runs"] if r["batch"] == batch]
        runs1 = [r for r in raw[1]["runs"] if r["batch"] == batch]
        base0 = [r for r in runs0 if r["network"] is None]
        base1 = [r for r in runs1 if r["network"] is None]
        walls = [max(a["wall_s"], b["wall_s"]) for a, b in zip(base0, base1)]
        rep0, rep1 = base0[0]["report"], base1[0]["report"]
        rounds = int(max(rep0.get("rounds", 0), rep1.get("rounds", 0)))
        sent0, sent1 = _sent(rep0), _sent(rep1)
        wire = [r.get("wire_bytes_sent") for r in base0[:1] + base1[:1]]
        compute = _stats(walls)
        cpu = _party_cpu(base0, base1)
        check = _check(raw, batch)
        offline = _offline(settings.provider, runs0, runs1)
        for net_name in settings.networks:
            net = NETWORKS[net_name]
            shaped_runs = [max(a["wall_s"], b["wall_s"]) for a, b in zip(runs0, runs1) if a["network"] == net_name]
            pub = published_for(entry.label, entry.arch)
            predicted = net.predict(compute["median"], rounds, max(sent0, sent1))
            exchange = net.predict_exchange(compute["median"], rounds, max(sent0, sent1))
            measured = _stats(shaped_runs) if shaped_runs else None
            row: dict[str, Any] = {
                "model": entry.label, "variant": entry.variant, "arch": entry.arch, "name": f"{entry.variant}_{entry.arch}",
                "network": net_name, "batch": batch, "transport": settings.transport,
                "protocols": protocols, "protocols_requested": requested, "protocols_note": proto_note,
                "comparison": config.get("comparison"), "range_start": config.get("range_start"),
                "fixed_weight_masks": config.get("fixed_weight_masks"),
                "rounds": rounds,
                "bytes": {"party0_sent": sent0, "party1_sent": sent1, "total": sent0 + sent1,
                          "wire_party0_sent": wire[0], "wire_party1_sent": wire[1] if len(wire) > 1 else None},
                "dealer_bytes": rep0.get("dealer_bytes"),  # party 0's corrections, from the plan (the runtime's count)
                "offline": offline,
                "compute_s": compute,
                "cpu_s": cpu,
                "latency_predicted_s": predicted,
                "latency_predicted_exchange_s": exchange,
                "latency_measured_s": measured,
                "latency_measured_note": _measured_note(settings, net_name, batch, bool(shaped_runs)),
                "per_op": _per_op(rep0, rep1),
                "per_layer": rep0.get("per_layer"),
                "runtime_seconds": rep0.get("seconds"),
                "share_s": raw[0].get("share_s"),
                "accuracy": entry.accuracy,
                "arch_source": entry.arch_source,
                "published": None,
                "check": check,
            }
            if net_name == "wan":
                row["latency_wan_cold_predicted_s"] = wan_cold_s(row, net.rtt_s, net.bandwidth_bps)
            if pub is not None and net_name == "wan" and batch == 1:  # the published figures are batch 1
                ours = measured["median"] if measured else predicted
                row["published"] = {
                    "label": pub.label, "dataset": pub.dataset, "accuracy": pub.accuracy, "wan_seconds": pub.wan_seconds,
                    "ratio_ours_over_published": ours / pub.wan_seconds, "ours_from": "measured" if measured else "predicted",
                    "source": SOURCE,
                }
            rows.append(row)
    return rows


def _party_cpu(base0: list[dict[str, Any]], base1: list[dict[str, Any]]) -> dict[str, float] | None:
    """Each party's CPU seconds per forward (median over the unshaped forwards), or None where not recorded."""
    c0 = [r["cpu_s"] for r in base0 if r.get("cpu_s") is not None]
    c1 = [r["cpu_s"] for r in base1 if r.get("cpu_s") is not None]
    if not c0 or not c1:
        return None
    return {"party0": statistics.median(c0), "party1": statistics.median(c1), "n": min(len(c0), len(c1))}


def wan_cold_s(row: dict[str, Any], rtt_s: float, bandwidth_bps: float) -> float | None:
    """PREDICTED latency of a cold request on WAN: the dealer's material crosses the same link at request time.

    The warm latency (measured where measured, else predicted) plus the larger
    of the two parties' material from the dealer (key + material bytes) x 8 /
    bandwidth plus one RTT: each party fetches its own in parallel, so the
    larger one sets the time. None without a dealer (TFP) or offline figures.
    """
    off = row.get("offline") or {}
    if off.get("dealer_s") is None or off.get("party0_bytes") is None or off.get("party1_bytes") is None:
        return None
    return best_latency(row) + 8.0 * max(off["party0_bytes"], off["party1_bytes"]) / bandwidth_bps + rtt_s


def party_cpu_max(row: dict[str, Any]) -> float | None:
    """The busier party's CPU seconds per forward, or None where not recorded."""
    c = row.get("cpu_s")
    return max(c["party0"], c["party1"]) if c else None


def _offline(provider: str, runs0: list[dict[str, Any]], runs1: list[dict[str, Any]]) -> dict[str, Any]:
    """The offline phase of one forward: what each party receives from the dealer, and the dealer's seconds.

    Bytes per party: its 32-byte batch key plus its material (party 0: the
    corrections of every triple and its DCF keys with their mask corrections;
    party 1: its DCF keys). Seconds: the dealer's time to make both parties'
    material, per forward, over every forward run: party 0's
    ``InProcessDealer.dealer_seconds``, whose replay makes every triple and
    every DCF key pair (both parties' keys), as the gRPC dealer's one replay
    (``all_corrections``) does. Party 1's in-process replay repeats the DCF
    key generation only because the simulation runs one dealer per party; it
    is recorded apart (``dealer_s_party1_replay``), not added.
    """
    off0 = [r["offline"] for r in runs0 if r.get("offline")]
    off1 = [r["offline"] for r in runs1 if r.get("offline")]
    if provider != "dealer" or not off0 or not off1:
        return {"provider": provider, "party0_bytes": 0, "party1_bytes": 0, "total_bytes": 0, "dealer_s": None,
                "note": "no dealer: TFP draws the correlated randomness locally (no offline traffic counted)"}
    a, b = off0[0], off1[0]
    p0, p1 = a["key_bytes"] + a["material_bytes"], b["key_bytes"] + b["material_bytes"]
    return {
        "provider": provider,
        "party0_bytes": p0, "party1_bytes": p1, "total_bytes": p0 + p1,
        "party0_material_bytes": a["material_bytes"], "party1_material_bytes": b["material_bytes"],
        "key_bytes": a["key_bytes"],
        "requests": a["requests"], "dcf_requests": a["dcf_requests"],
        "dealer_s": _stats([x["dealer_s"] for x in off0]),
        **({"dealer_cpu_s": _stats([x["dealer_cpu_s"] for x in off0])} if all("dealer_cpu_s" in x for x in off0) else {}),
        "dealer_s_party1_replay": statistics.median(y["dealer_s"] for y in off1),
        "note": "per forward, before it (no online round): each party's key + material; dealer seconds = one replay making "
                "both parties' material (party 0's in-process dealer)",
    }


def _measured_note(settings: BenchSettings, net: str, batch: int, measured: bool) -> str:
    if measured:
        return "measured over the gRPC transport with its sender-side shaper (one-way delay RTT/2 + bandwidth)"
    if settings.transport == "inprocess":
        return "not measured: the inprocess (gloo) transport is not shaped; prediction only"
    if not settings.shaped:
        return "not measured: shaping switched off (quick mode); prediction only"
    return f"not measured: WAN is measured for batch <= {settings.wan_max_batch}; prediction only"


def _per_op(rep0: dict[str, Any], rep1: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-op-kind rounds, bytes (both parties' sent) and seconds, from the two CostReports."""
    ops0 = _op_table(rep0)
    ops1 = _op_table(rep1)
    out: dict[str, dict[str, float]] = {}
    for kind in ops0:
        a, b = ops0[kind], ops1.get(kind, {})
        out[kind] = {
            "rounds": float(max(a.get("rounds", 0), b.get("rounds", 0))),
            "bytes_party0": float(_sent(a)),
            "bytes_party1": float(_sent(b)) if b else 0.0,
            "seconds": float(max(a.get("seconds", 0.0), b.get("seconds", 0.0))),
            "dealer_bytes": float(a.get("dealer_bytes", 0)),  # both parties' material (from the plan)
        }
    return out


def _op_table(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for key in ("per_op", "per_op_kind", "ops", "by_op"):
        table = report.get(key)
        if isinstance(table, dict):
            return {str(k): (v if isinstance(v, dict) else {"seconds": v}) for k, v in table.items()}
    return {}


def _check(raw: list[dict[str, Any]], batch: int) -> dict[str, Any] | None:
    """Open the secure logits of the first measured forward and compare them with plaintext."""
    from mpcvit.sealing import reconstruct_fixed_point

    c0 = next((c for c in raw[0].get("checks", []) if c["batch"] == batch), None)
    c1 = next((c for c in raw[1].get("checks", []) if c["batch"] == batch), None)
    if not c0 or not c1 or c0.get("logits_share") is None or c1.get("logits_share") is None or "plain_logits" not in c0:
        return None
    secure = reconstruct_fixed_point(torch.tensor(c0["logits_share"]), torch.tensor(c1["logits_share"]))
    plain = torch.tensor(c0["plain_logits"], dtype=torch.float64)
    return {
        "max_abs_logit_error": float((secure - plain).abs().max()),
        "top1_agreement": float((secure.argmax(-1) == plain.argmax(-1)).double().mean()),
    }


def _spec_of(model: dict[str, Any]) -> ArchSpec | None:
    """A results.json model's ArchSpec (rebuilt for older results only when it resolves the same way again)."""
    if "spec" in model:
        return ArchSpec.from_dict(model["spec"])
    settings = BenchSettings(models=(model["variant"],), archs=(model["arch"],), mus=(model["mu"],) if model.get("mu") else DEFAULT_MUS)
    for e in resolve_entries(settings):
        if e.label == model["label"] and e.arch_source == model["arch_source"]:
            return e.spec
    return None


def add_cost_table_estimates(doc: dict[str, Any]) -> None:
    """Price every batch-1 row from the measured cost table (``protocols.costs``), the model the search optimises."""
    try:
        from protocols.costs import REGENERATE, estimate, load_cost_table

        table = load_cost_table()
    except (ImportError, FileNotFoundError, ValueError) as exc:
        doc.setdefault("cost_table", {"available": False, "reason": str(exc)})
        return
    specs = {(m["label"], m["arch"]): _spec_of(m) for m in doc["models"]}
    for r in doc["results"]:
        spec = specs.get((r["model"], r["arch"]))
        if spec is None or r["batch"] != 1:
            continue
        try:
            est = estimate(spec, r["network"], table)
        except (KeyError, ValueError):
            continue
        r["cost_table_estimate"] = {"rounds": est["rounds"], "bytes_sent": est["bytes"] / 2, "seconds": est["seconds"], "latency_s": est["latency_s"]}
    doc["cost_table"] = {"available": True, "path": "results/cost_table.json", "command": table.get("command", REGENERATE)}


def rows_by(doc: dict[str, Any], network: str, batch: int, arch: str | None = None) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r["network"] == network and r["batch"] == batch and (arch is None or r["arch"] == arch)]


def best_latency(row: dict[str, Any]) -> float:
    m = row.get("latency_measured_s")
    return float(m["median"]) if m else float(row["latency_predicted_s"])


def fmt_seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    return f"{s:.3g}" if s < 10 else f"{s:.1f}"
