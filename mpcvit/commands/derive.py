"""``mpcvit derive``: an ArchSpec JSON from a search, at a head ratio mu or at a latency budget."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

HELP = "derive an architecture spec from a search at a ratio or latency budget"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search", required=True, help="search directory (holds alphas.json)")
    rule = parser.add_mutually_exclusive_group(required=True)
    rule.add_argument("--mu", type=float, help="fraction of heads (over all layers) kept ReLU-softmax")
    rule.add_argument("--budget-seconds", type=float, help="latency budget on --network (greedy by alpha per cost)")
    parser.add_argument("--act-mu", type=float, default=None,
                        help="MPCViT+ with --mu: fraction of GeLU units kept (default: those with beta >= 0.5)")
    parser.add_argument("--network", choices=("lan", "wan"), default="wan")
    parser.add_argument("--costs", dest="cost_source", choices=("auto", "table", "placeholder"), default="auto")
    parser.add_argument("--out", required=True, help="ArchSpec JSON to write (train it with 'mpcvit train --arch')")


def run(args: argparse.Namespace) -> int:
    from mpcvit.search.costs import NETWORKS, get_cost_model
    from mpcvit.search.derive import derive_budget, derive_ratio, load_search

    result = load_search(args.search)
    costs = get_cost_model(args.cost_source)
    if args.mu is not None:
        spec = derive_ratio(result, args.mu, args.act_mu)
    else:
        spec = derive_budget(result, args.budget_seconds, args.network, costs)
    latency = {net: round(costs.arch_latency(spec, net), 4) for net in NETWORKS}
    search_info = dict(spec.extra.get("search", {}), search_dir=str(args.search), estimated_latency_s=latency,
                       cost_source=costs.source)
    spec = spec.with_(extra={"search": search_info})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(spec.to_json() + "\n")
    log.info("wrote %s: %s; estimated latency %s (%s costs)", out, spec.summary(), json.dumps(latency), costs.source)
    return 0
