"""Rendering the benchmark: results.json, results.md (the tables a person reads) and the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.bench_models import FULL_MODE_NOTE, PROTOCOL_AGE
from benchmarks.bench_summary import add_cost_table_estimates, best_latency, fmt_seconds, party_cpu_max, rows_by, wan_cold_s
from benchmarks.published import NETWORKS, published_for
from mpcvit.models import ArchSpec


def write_results(doc: dict[str, Any], out: Path, plots: bool = True) -> list[Path]:
    """results.json, results.md and (optionally) the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for row in doc["results"]:
        if row["batch"] != 1:
            row["published"] = None  # the published figures are batch 1 (older results compared every batch)
    if "cost_table" not in doc or not doc["cost_table"].get("available"):
        add_cost_table_estimates(doc)
    paths = [out / "results.json", out / "results.md"]
    text = json.dumps(doc, indent=2) + "\n"
    if not paths[0].is_file() or paths[0].read_text() != text:
        paths[0].write_text(text)
    if plots:
        from benchmarks.plots import make_plots

        paths += make_plots(doc, out)
    paths[1].write_text(markdown(doc, [p.name for p in paths[2:]]))
    return paths


# -- results.md -----------------------------------------------------------------------


def _dirty(git: dict[str, Any]) -> str:
    code = git.get("uncommitted_code")
    if code:
        return f" + uncommitted changes to {', '.join(code)} (results.json holds the SHA-256 of every source file run)"
    return " (the code that ran is committed; other paths had uncommitted changes)" if git.get("dirty_paths") else ""


def _token_note(model: dict[str, Any]) -> str:
    """MPCViT+'s per-token GeLU: on how many tokens each layer keeps it."""
    toks = model.get("spec", {}).get("act_tokens")
    if not toks:
        return ""
    spec = ArchSpec.from_dict(model["spec"])
    counts = [("all" if t is None else str(len(t))) if not spec.mlp_is_linear(l) else "0" for l, t in enumerate(toks)]
    return f" (GeLU on {', '.join(counts)} of {spec.num_tokens} tokens per layer, identity on the rest)"


def _load(avg: list[float] | None) -> str:
    return f"{avg[0]:.1f}" if avg else "not recorded"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _measured_cell(row: dict[str, Any]) -> str:
    m = row.get("latency_measured_s")
    if not m:
        return "-"
    return f"{fmt_seconds(m['median'])} [{fmt_seconds(m['min'])}-{fmt_seconds(m['max'])}] n={m['n']}"


def _check_cell(row: dict[str, Any]) -> str:
    c = row.get("check")
    return "-" if not c else f"{c['max_abs_logit_error']:.2g}"


def _acc_cell(row: dict[str, Any]) -> str:
    acc = row.get("accuracy")
    if acc:
        return f"{acc['value']:.2f} ({acc['dataset']})"
    pub = published_for(row["model"], row["arch"])
    return f"paper: {pub.accuracy:.2f} ({pub.dataset})" if pub else "-"


def label(row: dict[str, Any], multi: bool = False) -> str:
    """A row's model name; with the protocol set appended when the run has more than one (``vit (fss)``)."""
    return f"{row['model']} ({row['protocols']})" if multi and row.get("protocols") else str(row["model"])


def protocol_sets(doc: dict[str, Any]) -> list[str]:
    """The protocol sets of a run's rows, in run order (empty for results made before the switch existed)."""
    out: list[str] = []
    for r in doc["results"]:
        p = r.get("protocols")
        if p and p not in out:
            out.append(p)
    return out


PROTOCOL_TEXT = {
    "fss": "`SecureConfig()`, the current runtime: DCF sign gates (two-round select gate on ReLU-softmax heads), the Fourier GeLU on certified layers",
    "product": "`SecureConfig(relu_softmax_gate=\"product\")`, the current runtime with the ReLU-softmax heads on the one-round product gate (the default before the select gate)",
    "spline": "`SecureConfig(gelu=\"spline\", relu_softmax_gate=\"product\")`, the product runtime with the spline GeLU on every layer (the default before the Fourier GeLU)",
    "fss1": "`SecureConfig.fss1()`, the fss runtime before the whole-cost work",
    "circuits": "`SecureConfig.circuits()`, the small-ring comparison circuits of the runtime before DCF sign gates",
}


def comparisons(sets: list[str]) -> list[tuple[str, str]]:
    """(old, new) pairs of a run: each protocol set against the newest one present (circuits < fss1 < spline < product < fss), in run order."""
    known = [p for p in PROTOCOL_AGE if p in sets]
    if len(known) < 2:
        return []
    return [(p, known[-1]) for p in sets if p in known[:-1]]


def _wan_link(doc: dict[str, Any]) -> tuple[float, float]:
    """(RTT s, bandwidth bit/s) of the run's WAN (the published WAN for results that did not record it)."""
    w = doc.get("networks", {}).get("wan")
    if w:
        return w["rtt_ms"] / 1e3, w["bandwidth_mbit_s"] * 1e6
    return NETWORKS["wan"].rtt_s, NETWORKS["wan"].bandwidth_bps


def _cold(row: dict[str, Any], wan: tuple[float, float]) -> float | None:
    """A WAN row's predicted cold latency (stored in newer results; computed for older ones)."""
    if row.get("network") != "wan":
        return None
    if "latency_wan_cold_predicted_s" in row:
        return row["latency_wan_cold_predicted_s"]
    return wan_cold_s(row, *wan)


def _cpu_cell(row: dict[str, Any]) -> str:
    c = row.get("cpu_s")
    return f"{fmt_seconds(c['party0'])} / {fmt_seconds(c['party1'])}" if c else "-"


def _offline_cells(row: dict[str, Any]) -> tuple[str, str]:
    """'party 0 / party 1' MB from the dealer, and the dealer's seconds, of one forward ('-' where not recorded)."""
    off = row.get("offline")
    if not off:
        return "-", "-"
    if off.get("dealer_s") is None:
        return "0 / 0 (no dealer)", "-"
    return f"{_mb(off['party0_bytes'])} / {_mb(off['party1_bytes'])}", fmt_seconds(_dealer_s(row))


def _cost_table(rows: list[dict[str, Any]], multi: bool = False, wan: tuple[float, float] | None = None) -> list[str]:
    with_protocols = any(r.get("protocols") for r in rows)
    proto_head, proto_rule = ("| protocols ", "|---") if with_protocols else ("", "")
    wan = wan or (NETWORKS["wan"].rtt_s, NETWORKS["wan"].bandwidth_bps)
    cold = any(r.get("network") == "wan" for r in rows)
    cold_head, cold_rule = ("| WAN cold s (predicted) ", "---:|") if cold else ("", "")
    lines = [
        f"| model {proto_head}| rounds | online MB sent p0 / p1 / total | offline MB from the dealer p0 / p1 | dealer CPU s "
        "| compute s | party CPU s p0 / p1 | predicted s (rounds x RTT) | predicted s (rounds x RTT/2) "
        f"| measured s, median [min-max] {cold_head}| accuracy % | max abs logit error vs plaintext |",
        f"|---{proto_rule}|---:|---|---|---:|---:|---|---:|---:|---|{cold_rule}---|---:|",
    ]
    for r in rows:
        b = r["bytes"]
        dealer_mb, dealer_s = _offline_cells(r)
        proto = f"| {r.get('protocols') or '-'}{' *' if r.get('protocols_note') else ''} " if with_protocols else ""
        cold_cell = f"| {fmt_seconds(_cold(r, wan))} " if cold else ""
        lines.append(
            f"| {r['model']} {proto}| {r['rounds']} | {_mb(b['party0_sent'])} / {_mb(b['party1_sent'])} / {_mb(b['total'])} | "
            f"{dealer_mb} | {dealer_s} | "
            f"{fmt_seconds(r['compute_s']['median'])} | {_cpu_cell(r)} | {fmt_seconds(r['latency_predicted_s'])} | "
            f"{fmt_seconds(r['latency_predicted_exchange_s'])} | {_measured_cell(r)} {cold_cell}| {_acc_cell(r)} | {_check_cell(r)} |"
        )
    notes = sorted({r["protocols_note"] for r in rows if r.get("protocols_note")})
    if notes:
        lines += [""] + [f"\\* {n}." for n in notes]
    return lines


def _ratio(new: float | None, old: float | None) -> str:
    return f"{new / old:.2f}x" if new is not None and old else "-"


def _pair(a: Any, b: Any, fmt: Any) -> str:
    return " / ".join("-" if v is None else fmt(v) for v in (a, b))


def _dealer_mb(row: dict[str, Any]) -> float | None:
    """Both parties' material from the dealer per forward (bytes), or None where not recorded."""
    off = row.get("offline") or {}
    return off.get("total_bytes")


def _dealer_s(row: dict[str, Any]) -> float | None:
    """The dealer's CPU seconds per forward (its wall seconds in runs that did not record CPU)."""
    off = row.get("offline") or {}
    if off.get("dealer_cpu_s"):
        return off["dealer_cpu_s"]["median"]
    return off["dealer_s"]["median"] if off.get("dealer_s") else None


def side_by_side(rows: list[dict[str, Any]], old: str = "circuits", new: str = "fss",
                 wan: tuple[float, float] | None = None) -> list[str]:
    """Two protocol sets per model, old / new, and new / old of each figure.

    Online rounds and MB (both parties), the dealer's MB (both parties' material)
    and seconds per forward, each party's CPU seconds, latency (measured where
    both are measured, else predicted) and, on WAN, the predicted cold latency.
    """
    pairs = _pairs(rows, old, new)
    if not pairs:
        return []
    wan = wan or (NETWORKS["wan"].rtt_s, NETWORKS["wan"].bandwidth_bps)
    cold = any(r.get("network") == "wan" for _, a, b in pairs for r in (a, b))
    heads = ["rounds", "online MB", "dealer MB", "dealer CPU s", "party CPU s (max)", "latency s"] + (["WAN cold s"] if cold else [])
    lines = [
        f"| model | rounds {old} / {new} | online MB total {old} / {new} | dealer MB p0 + p1 {old} / {new} "
        f"| dealer CPU s {old} / {new} | party CPU s p0 / p1 {old} | party CPU s p0 / p1 {new} | latency s {old} / {new} "
        + (f"| WAN cold s (predicted) {old} / {new} " if cold else "")
        + "| " + " | ".join(f"{h} {new} / {old}" for h in heads) + " |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if cold else "") + "---:|" * len(heads),
    ]
    for model, a, b in pairs:
        la, lb = best_latency(a), best_latency(b)
        src = "measured" if a.get("latency_measured_s") and b.get("latency_measured_s") else "predicted"
        ca, cb = (_cold(r, wan) for r in (a, b))
        figures = [(a["rounds"], b["rounds"]), (a["bytes"]["total"], b["bytes"]["total"]), (_dealer_mb(a), _dealer_mb(b)),
                   (_dealer_s(a), _dealer_s(b)), (party_cpu_max(a), party_cpu_max(b)), (la, lb)] + ([(ca, cb)] if cold else [])
        lines.append(
            f"| {model} | {a['rounds']} / {b['rounds']} | {_mb(a['bytes']['total'])} / {_mb(b['bytes']['total'])} "
            f"| {_pair(_dealer_mb(a), _dealer_mb(b), _mb)} | {_pair(_dealer_s(a), _dealer_s(b), fmt_seconds)} "
            f"| {_cpu_cell(a)} | {_cpu_cell(b)} | {fmt_seconds(la)} / {fmt_seconds(lb)} ({src}) "
            + (f"| {_pair(ca, cb, fmt_seconds)} " if cold else "")
            + "| " + " | ".join(_ratio(y, x) for x, y in figures) + " |"
        )
    return lines


def _pairs(rows: list[dict[str, Any]], old: str, new: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(model, old row, new row) for every model that has both, in row order."""
    by: dict[tuple[str, str], dict[str, Any]] = {(r["model"], r.get("protocols") or ""): r for r in rows}
    out, seen = [], set()
    for r in rows:
        m = r["model"]
        if m not in seen and (m, old) in by and (m, new) in by:
            seen.add(m)
            out.append((m, by[(m, old)], by[(m, new)]))
    return out


def per_op_rounds(rows: list[dict[str, Any]], old: str = "circuits", new: str = "fss") -> list[str]:
    """Rounds per op kind, old -> new, one column per model (the CostReport's per-op breakdown)."""
    pairs = _pairs(rows, old, new)
    if not pairs:
        return []
    kinds = sorted({k for _, a, b in pairs for k in (*a.get("per_op", {}), *b.get("per_op", {}))})
    if not kinds:
        return ["(the runtime's CostReport carried no per-op breakdown)"]

    def cell(a: dict[str, Any], b: dict[str, Any], kind: str) -> str:
        oa, ob = a.get("per_op", {}).get(kind), b.get("per_op", {}).get(kind)
        if not oa and not ob:
            return "-"
        return f"{int(oa['rounds']) if oa else 0} -> {int(ob['rounds']) if ob else 0}"

    lines = [f"| op kind ({old} -> {new}) | " + " | ".join(m for m, _, _ in pairs) + " |", "|---|" + "---:|" * len(pairs)]
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(cell(a, b, k) for _, a, b in pairs) + " |")
    lines.append("| **all** | " + " | ".join(f"**{a['rounds']} -> {b['rounds']}**" for _, a, b in pairs) + " |")
    return lines


def _published_table(rows: list[dict[str, Any]], multi: bool = False) -> list[str]:
    lines = [
        "| model | published acc % | published WAN s (SPU) | ours measured s | ours predicted s | ours / published | at or below? |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        pub = r.get("published")
        if not pub:
            continue
        m = r.get("latency_measured_s")
        ratio = pub["ratio_ours_over_published"]
        suffix = f" ({r['protocols']})" if multi and r.get("protocols") else ""
        lines.append(
            f"| {pub['label']}{suffix} | {pub['accuracy']:.2f} | {pub['wan_seconds']:.2f} | {fmt_seconds(m['median']) if m else '-'} | "
            f"{fmt_seconds(r['latency_predicted_s'])} | {ratio:.2f}x ({pub['ours_from']}) | {'yes' if ratio <= 1.0 else 'NO'} |"
        )
    return lines


def ordering_checks(rows: list[dict[str, Any]]) -> list[str]:
    """The paper's ordering, checked on one network x batch: softmax ViT the most expensive; MPCViT below MPCFormer."""
    by = {r["model"]: r for r in rows}
    out = []
    if "vit" in by:
        costliest = max(rows, key=best_latency)
        out.append(f"- softmax ViT the most expensive: {'yes' if costliest['model'] == 'vit' else 'NO, ' + costliest['model'] + ' is'} "
                   f"(ViT {fmt_seconds(best_latency(by['vit']))} s, {by['vit']['rounds']} rounds)")
    if "mpcformer" in by:
        for label in sorted(k for k in by if k.startswith("mpcvit")):
            a, b = best_latency(by[label]), best_latency(by["mpcformer"])
            out.append(f"- {label} cheaper than MPCFormer: {'yes' if a < b else 'NO'} ({fmt_seconds(a)} s vs {fmt_seconds(b)} s; "
                       f"{by[label]['rounds']} vs {by['mpcformer']['rounds']} rounds; attention ops alone "
                       f"{_part(by[label], 'attention')} vs {_part(by['mpcformer'], 'attention')}, MLP activations alone "
                       f"{_part(by[label], 'activation')} vs {_part(by['mpcformer'], 'activation')})")
    return out


def _part(row: dict[str, Any], prefix: str) -> str:
    """Rounds and MB (both parties) of the op kinds whose name starts with ``prefix``."""
    ops = [v for k, v in row.get("per_op", {}).items() if k.startswith(prefix)]
    rounds = int(sum(o["rounds"] for o in ops))
    mb = sum(o["bytes_party0"] + o["bytes_party1"] for o in ops) / 1e6
    return f"{rounds} rounds / {mb:.0f} MB"


def _estimate_table(rows: list[dict[str, Any]], multi: bool = False) -> list[str]:
    lines = ["| model | rounds: table / measured | MB sent per party: table / measured | latency s: table estimate / measured |",
             "|---|---|---|---|"]
    for r in rows:
        e = r["cost_table_estimate"]
        lines.append(f"| {label(r, multi)} | {e['rounds']:.0f} / {r['rounds']} | {_mb(e['bytes_sent'])} / {_mb(r['bytes']['party0_sent'])} | "
                     f"{fmt_seconds(e['latency_s'])} / {fmt_seconds(best_latency(r))} |")
    return lines


def _per_op_table(rows: list[dict[str, Any]], multi: bool = False) -> list[str]:
    kinds = sorted({k for r in rows for k in r["per_op"]})
    if not kinds:
        return ["(the runtime's CostReport carried no per-op breakdown)"]
    lines = ["| model | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for r in rows:
        cells = []
        for k in kinds:
            op = r["per_op"].get(k)
            if not op:
                cells.append("-")
                continue
            dealer = f" / {_mb(op['dealer_bytes'])} MB dealer" if op.get("dealer_bytes") else ""
            cells.append(f"{int(op['rounds'])} r / {_mb(op['bytes_party0'] + op['bytes_party1'])} MB / {op['seconds']:.2f} s{dealer}")
        lines.append(f"| {label(r, multi)} | " + " | ".join(cells) + " |")
    return lines


def markdown(doc: dict[str, Any], plot_names: list[str]) -> str:
    """results.md: the tables a person reads."""
    s = doc["settings"]
    env = doc["machine"]
    lines = [
        "# Communication-cost benchmark",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {env['cpu_count']} CPUs, {env['cpu_model']}; torch {doc['versions']['torch']}, crypten {doc['versions']['crypten']}, "
        f"python {doc['versions']['python']}; git {doc['git']['commit'][:12]}{_dirty(doc['git'])}  ",
        f"Transport: {s['transport']}{' (shaped: one-way delay RTT/2 and bandwidth in the sender)' if s['shaped'] and s['transport'] == 'grpc' else ' (not shaped: predictions only)'}; "
        f"randomness provider: {doc['provider']}; protocols: {_protocols_text(doc)}; repeats {s['repeats']} (WAN {s['wan_repeats']}), warm-up {s['warmup']}; "
        f"this run took {doc['wall_seconds'] / 60:.1f} min.  ",
        f"Machine load (1-min load average) at start {_load(env.get('load_average_1_5_15'))}, at end "
        f"{_load(doc.get('load_average_at_end'))} on {env['cpu_count']} CPUs: other work shared the CPUs, so compute "
        "seconds (and the latencies that include them) are upper bounds; rounds and bytes are exact.  ",
        f"Networks: " + "; ".join(f"{n.upper()} {v['bandwidth_mbit_s']:g} Mbit/s, {v['rtt_ms']:g} ms RTT" for n, v in doc["networks"].items()) + ".  ",
        f"Predicted latency = {doc['latency_model'].removeprefix('predicted = ')}. Compute = the forward's wall-clock time over the unshaped "
        "transport (loopback). Rounds and bytes are the runtime's own counts (CrypTen's communicator counters) for one forward; "
        "weights are random (costs do not depend on values) unless a trained checkpoint exists at that shape.  ",
        "Every CrypTen round between two parties is a simultaneous exchange (both send, both wait for the other's message), "
        "so on the shaped link a round costs one one-way delay, RTT/2, not a full RTT: the measured latency follows "
        "compute + rounds x RTT/2 + bytes / bandwidth (the second prediction column), and DESIGN.md's rounds x RTT formula "
        "is an upper bound.  ",
        "Offline phase (every row): what each party receives from the dealer before a forward (its 32-byte batch key; "
        "party 0 the corrections of its triples and, with fss, its DCF keys and mask corrections; party 1, with fss, its DCF keys) "
        "and the dealer's CPU seconds (every thread of the process) to make both parties' material, per forward; it adds no online round and is not in the "
        "online rounds, bytes or latencies.  ",
        "Party CPU s p0 / p1: each party process's CPU seconds over one unshaped forward (`time.process_time`, all its "
        "threads, the transport's included; median), where recorded.  ",
        "WAN cold s (predicted), on WAN rows: the latency of a request whose dealer material is not yet with the parties, "
        "fetched over the same WAN link at request time: the warm latency (measured where measured, else predicted, as "
        "the ordering uses) + the larger of the two parties' material from the dealer x 8 / the WAN bandwidth + one RTT "
        "(each party fetches its own in parallel; the dealer's seconds are not added). It is a prediction, never "
        "measured." + _fixed_note(doc),
        "",
        f"Full mode: {FULL_MODE_NOTE}. Quick mode (`--quick`, CI): the 2_4_8 shape, one repeat, unshaped, well under a minute.",
        "",
        "## Architectures",
        "",
        "| model | shape | heads | MLP activations | where the architecture comes from |",
        "|---|---|---|---|---|",
    ]
    for m in doc["models"]:
        heads = ", ".join(f"{k} {v}" for k, v in sorted(m["heads"].items()))
        acts = ", ".join(f"{k} {v}" for k, v in m["activations"].items()) + _token_note(m)
        lines.append(f"| {m['label']} | {m['arch']} | {heads} | {acts} | {m['arch_source']} |")
    sets = protocol_sets(doc)
    multi = len(sets) > 1
    pairs_of_sets = comparisons(sets)
    wan = _wan_link(doc)
    for arch in s["archs"]:
        for batch in s["batches"]:
            for net in s["networks"]:
                rows = rows_by(doc, net, batch, arch)
                if not rows:
                    continue
                lines += ["", f"## {arch}, {net.upper()}, batch {batch}", ""] + _cost_table(rows, multi, wan)
                for old, new in pairs_of_sets:
                    pair = side_by_side(rows, old, new, wan)
                    if pair:
                        lines += ["", f"Old ({old}: {PROTOCOL_TEXT[old]}) vs new ({new}: {PROTOCOL_TEXT[new]}), "
                                  f"{net.upper()}, batch {batch}; the last columns are new / old:", ""] + pair
                for proto in sets or [None]:
                    checks = ordering_checks([r for r in rows if proto is None or r.get("protocols") == proto])
                    if checks:
                        under = f", {proto}" if multi else ""
                        lines += ["", f"Ordering{under} (measured latency where measured, else predicted):", ""] + checks
        wan1 = rows_by(doc, "wan", 1, arch)
        if any(r.get("published") for r in wan1):
            lines += ["", f"## {arch}: ours vs published (WAN, batch 1)", "", f"Published: {doc['published_source']}.", ""]
            lines += _published_table(wan1, multi)
        est_rows = [r for r in rows_by(doc, "wan" if "wan" in s["networks"] else s["networks"][0], 1, arch) if r.get("cost_table_estimate")]
        if est_rows:
            lines += ["", f"## {arch}: the cost table's estimate vs this measurement (batch 1, {est_rows[0]['network'].upper()})", "",
                      f"The search prices architectures from `{doc['cost_table']['path']}` (`{doc['cost_table']['command']}`); "
                      "its estimate prices every layer as a full layer.", ""] + _estimate_table(est_rows, multi)
        first_net = "wan" if "wan" in s["networks"] else s["networks"][0]
        op_rows = rows_by(doc, first_net, s["batches"][0], arch)
        if op_rows:
            lines += ["", f"## {arch}: per-op breakdown (batch {s['batches'][0]}; rounds / online MB both parties / compute s / the dealer's MB for both parties)", ""] + _per_op_table(op_rows, multi)
            for old, new in pairs_of_sets:
                rounds_table = per_op_rounds(op_rows, old, new)
                if rounds_table:
                    lines += ["", f"## {arch}: rounds per op kind, {old} -> {new} (batch {s['batches'][0]}, {first_net.upper()}; "
                              "old -> new per model)", ""] + rounds_table
    wire = [(r["bytes"].get("wire_party0_sent"), r["bytes"]["party0_sent"]) for r in doc["results"] if r["bytes"].get("wire_party0_sent")]
    if wire:
        ratios = [w / c for w, c in wire if c]
        lines += ["", f"Bytes cross-check: the payload bytes party 0 really put on the gRPC wire per forward are "
                  f"{min(ratios):.3f}-{max(ratios):.3f}x the runtime's count."]
    checks = [r["check"] for r in doc["results"] if r.get("check")]
    if checks:
        worst = max(c["max_abs_logit_error"] for c in checks)
        lines += ["", f"Correctness: the secure logits of the first measured forward of every model, opened, are within {worst:.3g} "
                  "of the plaintext logits of the same weights and image (last column of the cost tables). With random, untrained "
                  "weights the logits are all close to each other, so a top-1 comparison means little there; the logit error is "
                  "the check. With trained checkpoints (the quick mode's digits models) it is the runtime's usual accuracy."]
    if plot_names:
        lines += ["", "## Plots", ""] + [f"![{n}]({n})" for n in plot_names]
    return "\n".join(lines) + "\n"


def _fixed_note(doc: dict[str, Any]) -> str:
    fixed = sorted({r.get("protocols") or "-" for r in doc["results"] if r.get("fixed_weight_masks")})
    if not fixed:
        return ""
    return (f"  \nFixed weight masks ({', '.join(fixed)}): each weight's Beaver mask is drawn from the model keys and W - b "
            "opened once per model load (one round, weight-sized); that load-time opening is not in the per-forward figures.")


def _protocols_text(doc: dict[str, Any]) -> str:
    sets = protocol_sets(doc)
    if not sets:
        return "not recorded (results made before the protocol switch)"
    text = " and ".join(sets)
    if len(sets) > 1:
        text += " (" + "; ".join(f"old = {o}, new = {n}" for o, n in comparisons(sets)) + ")"
    dcf = [p for p in doc.get("settings", {}).get("protocols", []) if p != "circuits"]
    if doc.get("provider") == "tfp" and dcf:
        text += f"; TFP makes no DCF keys, so {' and '.join(dcf)} ran the circuits"
    return text


def rerender(out: Path) -> list[Path]:
    """Redraw results.md and the PNGs of a finished run from its results.json."""
    doc = json.loads((out / "results.json").read_text())
    return write_results(doc, out)
