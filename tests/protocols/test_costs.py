"""The cost table: its estimate follows the latency model, and the committed table / figures cover what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpcvit.models.registry import SHAPES, model_spec
from mpcvit.models.spec import ACT_KINDS, ATTN_KINDS
from protocols.costs import COST_TABLE_PATH, NETWORKS, estimate, load_cost_table

RESULTS = Path(__file__).resolve().parents[2] / "results"


def _synthetic() -> dict:
    one = {"rounds": 1, "bytes": 100, "seconds": 0.01}
    e = {f"attention-{k}": dict(one, rounds=10, per="head") for k in ATTN_KINDS}
    e.update({f"activation-{k}": dict(one, rounds=5, per="layer") for k in ACT_KINDS})
    e.update({k: dict(one, per="layer") for k in ("attention-matmul", "norm-layernorm", "linear", "linear-fused")})
    e.update({k: dict(one, per="model") for k in ("embed", "head", "norm-final")})
    e["norm-affine"] = {"rounds": 0, "bytes": 0, "seconds": 0.0, "per": "layer"}
    return {"entries": {s: e for s in SHAPES}}


def test_estimate_follows_the_latency_model() -> None:
    table = _synthetic()
    vit = estimate(model_spec("vit_2_4_8"), "wan", table)
    # per layer: matmul 1 + norm 1 + linear 1 + softmax 10 + gelu 5 = 18; model: embed + head + final norm = 3
    assert vit["rounds"] == 2 * 18 + 3
    assert vit["bytes"] == pytest.approx(3 * 100 + 2 * (3 * 100 + 4 * 100 + 100))
    wan = NETWORKS["wan"]
    assert vit["latency_s"] == pytest.approx(vit["seconds"] + vit["rounds"] * wan.rtt_s + vit["bytes"] / 2 * 8 / wan.bandwidth_bps)
    # mixed heads pay each kind's rounds once per layer, bytes per head; identity MLPs pay no activation
    plus = estimate(model_spec("mpcvitplus_2_4_8"), "lan", table)
    assert plus["rounds"] == 3 + (1 + 1 + 1 + 10 + 10 + 5) + (1 + 1 + 1 + 10 + 10)
    assert estimate(model_spec("scale_2_4_8"), "lan", table)["rounds"] < estimate(model_spec("vit_2_4_8"), "lan", table)["rounds"] + 1


@pytest.mark.skipif(not COST_TABLE_PATH.is_file(), reason="no measured cost table yet")
def test_measured_table_covers_every_shape_and_kind() -> None:
    table = load_cost_table()
    assert "protocols.costs" in table["command"]
    for shape in SHAPES:
        entries = table["entries"][shape]
        for k in ATTN_KINDS:
            assert entries[f"attention-{k}"]["per"] == "head"
        for k in ACT_KINDS:
            assert f"activation-{k}" in entries
        assert entries["attention-softmax"]["rounds"] > entries["attention-relu"]["rounds"] > entries["attention-scale"]["rounds"]
        vit = estimate(model_spec(f"vit_{shape}"), "wan", table)
        mpcvit = estimate(model_spec(f"mpcvit_{shape}"), "wan", table)
        assert mpcvit["latency_s"] < vit["latency_s"]


@pytest.mark.skipif(not (RESULTS / "secure_costs.json").is_file(), reason="no secure_costs.json yet")
def test_recorded_vit_7_4_32_beats_plain_crypten() -> None:
    result = json.loads((RESULTS / "secure_costs.json").read_text())
    vit = next(r for r in result["variants"] if r["model"] == "vit_7_4_32")
    assert vit["rounds"] < 1500  # plain CrypTen: 3,816 (per-head loop), 1,359 (batched heads)
    for ref in result.get("reference", []):
        assert vit["rounds"] < ref["rounds"]
        assert vit["seconds"] <= ref["seconds"] * 1.05  # no worse than plain CrypTen timed under the same load
