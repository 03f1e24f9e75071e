"""MPC-aware architecture search: MPCViT (per-head attention) and MPCViT+ (plus per-layer / per-token GeLU).

- ``relaxed``: the relaxed ViT (alpha per head, beta per GeLU unit) reusing the model's modules;
- ``costs``: the MPC cost source (the measured table, or a marked placeholder) and networks;
- ``regularizer``: the expected-latency regulariser weighted by measured cost differences;
- ``loop``: the resumable search loop (``mpcvit search``);
- ``derive``: ratio-mu and latency-budget derivation into an ``ArchSpec`` (``mpcvit derive``);
- ``pareto``: accuracy vs estimated secure latency of every trained model (LAN and WAN).
"""

from mpcvit.search.costs import NETWORKS, CostModel, PlaceholderCostModel, get_cost_model
from mpcvit.search.derive import SearchResult, derive_budget, derive_ratio, load_search
from mpcvit.search.regularizer import CostTerms, cost_regulariser, cost_terms, expected_latency
from mpcvit.search.relaxed import THREE_WAY, TWO_WAY, RelaxedAttention, RelaxedMlp, RelaxedViT

__all__ = [
    "NETWORKS", "THREE_WAY", "TWO_WAY", "CostModel", "CostTerms", "PlaceholderCostModel", "RelaxedAttention",
    "RelaxedMlp", "RelaxedViT", "SearchResult", "cost_regulariser", "cost_terms", "derive_budget", "derive_ratio",
    "expected_latency", "get_cost_model", "load_search",
]
