"""The communication-cost benchmark: quick mode end to end, and the pieces it is built from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench import (
    ALL_MODELS,
    PROTOCOLS,
    BenchSettings,
    ModelEntry,
    markdown,
    mpcvit_entry,
    mpcvitplus_entry,
    ordering_checks,
    paper_ratio_attn,
    resolve_entries,
    scaled_attn,
    scaled_mlp,
    secure_config,
)
from benchmarks.bench_models import effective_protocols
from benchmarks.bench_render import comparisons
from benchmarks.published import NETWORKS, PUBLISHED, published_for
from mpcvit.cli import main
from mpcvit.models import SHAPES, model_spec

QUICK_LABELS = {"vit", "mpcformer", "thex", "relu", "scale", "mpcvit-mu0.7", "mpcvit-mu0.1", "mpcvitplus"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One quick-mode run through the CLI (2_4_8, every model, inprocess transport, one repeat)."""
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text()), out


@pytest.mark.timeout(240)
def test_quick_mode_has_every_model_and_field(quick: tuple[dict[str, Any], Path]) -> None:
    doc, out = quick
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["cpu_model"]
    assert set(doc["versions"]) >= {"torch", "crypten", "python"}
    assert len(doc["git"]["commit"]) == 40
    assert doc["provider"] == "dealer" and doc["settings"]["quick"] is True
    assert doc["protocols"] == ["fss"] and doc["settings"]["protocols"] == ["fss"]
    assert doc["settings"]["archs"] == ["2_4_8"]
    rows = doc["results"]
    for net in ("lan", "wan"):
        assert {r["model"] for r in rows if r["network"] == net} == QUICK_LABELS
    for r in rows:
        assert r["rounds"] > 0
        assert r["bytes"]["party0_sent"] > 0 and r["bytes"]["party1_sent"] > 0
        assert r["bytes"]["total"] == r["bytes"]["party0_sent"] + r["bytes"]["party1_sent"]
        assert r["compute_s"]["median"] > 0
        assert r["latency_measured_s"] is None and "not shaped" in r["latency_measured_note"]
        assert r["per_op"] and sum(op["rounds"] for op in r["per_op"].values()) == r["rounds"]
        assert r["arch_source"]
        assert r["protocols"] == "fss" and r["comparison"] == "fss" and r["protocols_note"] is None
        off = r["offline"]  # the offline phase: both parties' dealer material and the dealer's seconds, per forward
        assert off["dcf_requests"] > 0 and off["party1_material_bytes"] > 0  # party 1 receives DCF keys
        assert off["party0_material_bytes"] == r["dealer_bytes"]  # the runtime's plan-based count agrees
        assert off["party0_bytes"] == off["key_bytes"] + off["party0_material_bytes"] and off["key_bytes"] == 32
        assert off["total_bytes"] == off["party0_bytes"] + off["party1_bytes"]
        assert off["dealer_s"]["median"] > 0 and off["dealer_s"]["n"] == 1
        assert r["cpu_s"]["party0"] > 0 and r["cpu_s"]["party1"] > 0  # each party process's CPU over a forward
        net = NETWORKS[r["network"]]
        busier = max(r["bytes"]["party0_sent"], r["bytes"]["party1_sent"])
        assert r["latency_predicted_s"] == pytest.approx(r["compute_s"]["median"] + r["rounds"] * net.rtt_s + 8 * busier / net.bandwidth_bps)
        if r["network"] == "wan":  # the dealer's material over the same link at request time, each party its own
            cold = r["latency_predicted_s"] + 8 * max(off["party0_bytes"], off["party1_bytes"]) / net.bandwidth_bps + net.rtt_s
            assert r["latency_wan_cold_predicted_s"] == pytest.approx(cold)
        else:
            assert "latency_wan_cold_predicted_s" not in r
    trained = Path(__file__).resolve().parents[2] / "checkpoints" / "digits" / "vit_2_4_8" / "meta.json"
    if trained.is_file():  # a trained checkpoint at this shape: its weights are run and its accuracy is reported
        vit = next(r for r in rows if r["model"] == "vit")
        assert vit["accuracy"]["dataset"] == "digits" and vit["accuracy"]["value"] > 90
        assert vit["check"]["top1_agreement"] == 1.0
    for name in ("results.md", "latency_2_4_8.png", "costs_2_4_8.png", "per_op_2_4_8.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.timeout(240)
def test_quick_mode_secure_logits_match_plaintext(quick: tuple[dict[str, Any], Path]) -> None:
    """Every model's secure forward opens to the plaintext logits of the same weights (a real outcome, not just costs)."""
    doc, _ = quick
    for r in doc["results"]:
        assert r["check"] is not None, r["model"]
        assert r["check"]["max_abs_logit_error"] < 0.5, (r["model"], r["check"])


@pytest.mark.timeout(240)
def test_quick_mode_costs_order_as_the_protocols_do(quick: tuple[dict[str, Any], Path]) -> None:
    """Costs follow the protocols: softmax attention needs the most rounds; WAN predictions exceed LAN ones."""
    doc, _ = quick
    lan = {r["model"]: r for r in doc["results"] if r["network"] == "lan"}
    wan = {r["model"]: r for r in doc["results"] if r["network"] == "wan"}
    assert lan["vit"]["rounds"] == max(r["rounds"] for r in lan.values())
    assert lan["scale"]["rounds"] < lan["relu"]["rounds"] < lan["vit"]["rounds"]
    assert lan["mpcvit-mu0.1"]["rounds"] <= lan["mpcvit-mu0.7"]["rounds"]
    for m in lan:
        assert wan[m]["latency_predicted_s"] > lan[m]["latency_predicted_s"]
        assert wan[m]["rounds"] == lan[m]["rounds"]


def test_paper_ratio_places_round_mu_l_h_relu_heads() -> None:
    shape = SHAPES["7_4_32"]
    for mu, expected in ((0.7, 20), (0.1, 3), (0.5, 14)):
        attn = paper_ratio_attn(shape, mu)
        assert sum(h.count("relu") for h in attn) == expected
        assert sum(h.count("scale") for h in attn) == 28 - expected
        assert len(attn) == 7 and all(len(h) == 4 for h in attn)


def test_searched_pattern_scales_to_another_shape() -> None:
    src = model_spec("mpcvit_4_4_28", attn=(("relu",) * 4, ("relu", "relu", "scale", "scale"), ("scale",) * 4, ("scale",) * 4))
    attn = scaled_attn(src, SHAPES["7_4_32"])
    assert len(attn) == 7
    assert attn[0] == ("relu",) * 4 and attn[-1] == ("scale",) * 4
    model_spec("mpcvit_7_4_32", attn=attn)  # a valid spec


def test_searched_mlp_keeps_linear_layers_and_token_fractions() -> None:
    src = model_spec("mpcvitplus_4_4_28", act=("gelu", "gelu", "gelu", "identity"), act_tokens=((0, 1, 2, 3, 4), None, tuple(range(25)), None))
    act, toks = scaled_mlp(src, SHAPES["7_4_32"])
    assert act == ("gelu",) * 6 + ("identity",)
    assert toks is not None and [None if t is None else len(t) for t in toks] == [6, 6, None, None, 32, 32, None]  # 5/50 and 25/50 of 65 tokens
    spec = model_spec("mpcvitplus_7_4_32", act=act, act_tokens=toks)
    assert spec.mlp_is_linear(6) and not spec.mlp_is_linear(0)


def test_mpcvit_entries_say_where_their_architecture_comes_from() -> None:
    e = mpcvit_entry("7_4_32", 0.7)
    assert e.label == "mpcvit-mu0.7" and e.arch_source
    assert set(e.spec.count_heads()) <= {"relu", "scale"}
    plus = mpcvitplus_entry("7_4_32")
    assert any(plus.spec.mlp_is_linear(l) for l in range(plus.spec.depth)) or plus.spec.act_tokens is not None


def test_resolve_expands_mpcvit_per_mu_and_keeps_order() -> None:
    entries = resolve_entries(BenchSettings(models=("vit", "mpcvit", "thex"), archs=("7_4_32",), mus=(0.7, 0.1)))
    assert [e.label for e in entries] == ["vit", "mpcvit-mu0.7", "mpcvit-mu0.1", "thex"]


@pytest.mark.parametrize(
    "bad",
    [dict(models=("gpt",)), dict(archs=("3_3_3",)), dict(networks=("moon",)), dict(batches=(0,)),
     dict(transport="carrier-pigeon"), dict(repeats=0), dict(mus=(1.5,)), dict(provider="oracle"),
     dict(protocols=()), dict(protocols=("quantum",)), dict(protocols=("fss", "fss"))],
)
def test_settings_refuse_bad_input(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BenchSettings(**bad)


def test_cli_refuses_an_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--models", "gpt", "--out", str(tmp_path)]) == 1
    assert "unknown model" in capsys.readouterr().err


def test_network_prediction_is_compute_plus_rounds_rtt_plus_bytes_over_bandwidth() -> None:
    wan, lan = NETWORKS["wan"], NETWORKS["lan"]
    assert wan.predict(2.0, 1000, 50_000_000) == pytest.approx(2.0 + 1000 * 0.040 + 8 * 50e6 / 400e6)
    assert lan.predict(2.0, 1000, 50_000_000) == pytest.approx(2.0 + 1000 * 0.0003 + 8 * 50e6 / 3e9)
    assert wan.predict_exchange(2.0, 1000, 0) == pytest.approx(2.0 + 1000 * 0.020)


def test_published_figures_are_the_design_docs() -> None:
    assert published_for("vit", "7_4_32").wan_seconds == 112.23  # type: ignore[union-attr]
    assert published_for("mpcvit-mu0.1", "9_12_64").wan_seconds == 220.69  # type: ignore[union-attr]
    assert published_for("relu", "7_4_32") is None
    assert len(PUBLISHED) == 10


def _row(model: str, latency: float, rounds: int) -> dict[str, Any]:
    return {"model": model, "latency_measured_s": {"median": latency}, "latency_predicted_s": latency * 2, "rounds": rounds}


def test_ordering_checks_report_a_violation() -> None:
    rows = [_row("vit", 10.0, 900), _row("mpcformer", 5.0, 400), _row("mpcvit-mu0.7", 6.0, 500)]
    checks = ordering_checks(rows)
    assert checks[0].startswith("- softmax ViT the most expensive: yes")
    assert "mpcvit-mu0.7 cheaper than MPCFormer: NO" in checks[1]


def test_markdown_states_ratio_against_published(quick: tuple[dict[str, Any], Path]) -> None:
    """results.md puts our WAN latency beside the published one, with the ratio, when the shape has a published figure."""
    doc, _ = quick
    doc = json.loads(json.dumps(doc))
    for r in doc["results"]:  # pretend the quick run was at the paper's CIFAR shape
        r["arch"] = "7_4_32"
        pub = published_for(r["model"], "7_4_32")
        if pub and r["network"] == "wan":
            r["published"] = {"label": pub.label, "accuracy": pub.accuracy, "wan_seconds": pub.wan_seconds,
                              "ratio_ours_over_published": r["latency_predicted_s"] / pub.wan_seconds, "ours_from": "predicted"}
    doc["settings"]["archs"] = ["7_4_32"]
    md = markdown(doc, [])
    assert "ours vs published" in md and "112.23" in md and "ours / published" in md


def test_entries_are_plain_data() -> None:
    e = ModelEntry("vit", "vit", "2_4_8", model_spec("vit_2_4_8"), "registry preset")
    d = e.describe()
    assert d["heads"] == {"softmax": 8} and d["weights"] == "random (seeded)"
    assert set(ALL_MODELS) >= {"vit", "mpcformer", "thex", "mpcvit", "mpcvitplus"}


def test_rows_are_priced_from_the_cost_table(quick: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch-1 row carries the cost table's estimate for its exact spec, shown beside the measurement."""
    import protocols.costs as costs

    from benchmarks.bench import add_cost_table_estimates

    seen: list[str] = []

    def fake_estimate(spec: Any, network: str, table: Any) -> dict[str, float]:
        seen.append(spec.name)
        return {"rounds": 100.0, "bytes": 2e6, "seconds": 0.5, "latency_s": 4.5}

    monkeypatch.setattr(costs, "load_cost_table", lambda: {"entries": {}, "command": "python -m protocols.costs"})
    monkeypatch.setattr(costs, "estimate", fake_estimate)
    doc = json.loads(json.dumps(quick[0]))
    doc.pop("cost_table", None)
    add_cost_table_estimates(doc)
    assert all(r["cost_table_estimate"]["bytes_sent"] == 1e6 for r in doc["results"])
    assert len(seen) == len(doc["results"]) and "mpcvitplus_2_4_8" in seen
    assert "the cost table's estimate vs this measurement" in markdown(doc, [])


@pytest.mark.timeout(240)
def test_protocols_both_puts_circuits_and_fss_side_by_side(tmp_path: Path) -> None:
    """``--protocols both``: each model under the circuits and under fss, recorded per row, rendered side by side."""
    assert main(["bench", "--quick", "--models", "relu", "--network", "lan", "--protocols", "both", "--no-plots", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["protocols"] == ["circuits", "fss"] and doc["settings"]["protocols"] == ["circuits", "fss"]
    old, new = doc["results"]
    assert (old["protocols"], old["comparison"], new["protocols"], new["comparison"]) == ("circuits", "ring", "fss", "fss")
    assert old["fixed_weight_masks"] is False and new["fixed_weight_masks"] is True  # as the parties run them
    assert new["rounds"] < old["rounds"]
    for r in (old, new):
        assert sum(op["rounds"] for op in r["per_op"].values()) == r["rounds"]
        assert r["check"]["max_abs_logit_error"] < 0.5
    assert old["offline"]["party1_material_bytes"] == 0 and old["offline"]["dcf_requests"] == 0  # circuits: party 1 gets its key only
    assert new["offline"]["party1_material_bytes"] > 0 and new["offline"]["dcf_requests"] > 0
    md = (tmp_path / "results.md").read_text()
    assert "Old (circuits" in md and "rounds per op kind, circuits -> fss" in md
    assert f"**{old['rounds']} -> {new['rounds']}**" in md
    assert "offline MB from the dealer p0 / p1" in md


def test_tfp_runs_the_circuits_and_says_so() -> None:
    """TFP makes no DCF keys: ``fss`` and ``fss1`` under TFP run the circuits, once even when several are asked for."""
    assert BenchSettings(provider="tfp", protocols=("circuits", "fss")).runs_protocols() == ("circuits",)
    assert BenchSettings(provider="tfp", protocols=("fss",)).runs_protocols() == ("circuits",)
    assert BenchSettings(provider="tfp", protocols=("fss1", "fss")).runs_protocols() == ("circuits",)
    assert BenchSettings(protocols=("circuits", "fss")).runs_protocols() == ("circuits", "fss")
    assert BenchSettings(protocols=("fss1", "fss")).runs_protocols() == ("fss1", "fss")  # both DCF, kept apart


def test_fss1_is_the_config_of_that_name() -> None:
    from protocols.config import SecureConfig

    assert PROTOCOLS == ("fss", "product", "spline", "fss1", "circuits")
    assert secure_config("fss1", "dealer") == SecureConfig.fss1() and SecureConfig.fss1().relu_softmax_gate == "product"
    assert secure_config("product", "dealer") == SecureConfig(relu_softmax_gate="product")
    assert SecureConfig().gelu == "fourier" and SecureConfig().relu_softmax_gate == "select"
    assert secure_config("spline", "dealer") == SecureConfig(gelu="spline", relu_softmax_gate="product")
    assert effective_protocols("spline", "dealer") == "spline" and effective_protocols("product", "dealer") == "product"
    assert secure_config("fss", "dealer") == SecureConfig() and secure_config("circuits", "dealer") == SecureConfig.circuits()
    assert effective_protocols("fss1", "dealer") == "fss1" and effective_protocols("fss1", "tfp") == "circuits"


@pytest.mark.parametrize(("given", "parsed"), [("fss1,fss", ("fss1", "fss")), ("fss, fss1", ("fss", "fss1")),
                                               ("both", ("circuits", "fss")), ("circuits,fss1,fss", ("circuits", "fss1", "fss"))])
def test_cli_protocols_is_a_comma_list_in_run_order(given: str, parsed: tuple[str, ...], tmp_path: Path) -> None:
    from mpcvit.cli import build_parser
    from mpcvit.commands.bench import settings_from_args

    args = build_parser("bench").parse_args(["bench", "--protocols", given, "--out", str(tmp_path)])
    assert args.protocols == parsed and settings_from_args(args).protocols == parsed
    default = build_parser("bench").parse_args(["bench", "--out", str(tmp_path)])
    assert settings_from_args(default).protocols == ("fss",)


@pytest.mark.parametrize("given", ["fss,quantum", "fss,fss", ""])
def test_cli_refuses_an_unknown_protocol_set(given: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mpcvit.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser("bench").parse_args(["bench", "--protocols", given, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--protocols" in err and ("fss, product, spline, fss1, circuits" in err or "named twice" in err)


def test_comparisons_put_each_older_set_against_the_newest() -> None:
    assert comparisons(["fss1", "fss"]) == [("fss1", "fss")]
    assert comparisons(["fss", "circuits", "fss1"]) == [("circuits", "fss"), ("fss1", "fss")]
    assert comparisons(["fss1", "circuits"]) == [("circuits", "fss1")]
    assert comparisons(["fss"]) == [] and comparisons([]) == []


@pytest.mark.timeout(240)
def test_protocols_fss1_fss_side_by_side_with_cpu_and_cold(tmp_path: Path) -> None:
    """``--protocols fss1,fss``: rows for both, party CPU seconds, and results.md's fss1 -> fss tables with WAN cold."""
    assert main(["bench", "--quick", "--models", "relu", "--protocols", "fss1,fss", "--no-plots", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["protocols"] == ["fss1", "fss"] and doc["settings"]["protocols"] == ["fss1", "fss"]
    rows = {(r["protocols"], r["network"]): r for r in doc["results"]}
    assert set(rows) == {(p, n) for p in ("fss1", "fss") for n in ("lan", "wan")}
    for r in rows.values():
        assert r["comparison"] == "fss" and r["protocols_requested"] == [r["protocols"]]
        assert r["cpu_s"]["party0"] > 0 and r["cpu_s"]["party1"] > 0
        assert r["check"]["max_abs_logit_error"] < 0.5
    for p in ("fss1", "fss"):
        assert rows[(p, "wan")]["latency_wan_cold_predicted_s"] > rows[(p, "wan")]["latency_predicted_s"]
    md = (tmp_path / "results.md").read_text()
    assert "Old (fss1: `SecureConfig.fss1()`" in md and "new (fss: `SecureConfig()`" in md
    assert "rounds per op kind, fss1 -> fss" in md and "Old (circuits" not in md
    assert "party CPU s p0 / p1 fss1" in md and "party CPU s (max) fss / fss1" in md and "dealer MB fss / fss1" in md
    assert "| WAN cold s (predicted) |" in md and "WAN cold s (predicted) fss1 / fss" in md
    assert "It is a prediction" in md
    wan_table = md[md.index("Old (fss1", md.index("## 2_4_8, WAN")):]
    a, b = rows[("fss1", "wan")], rows[("fss", "wan")]
    line = next(l for l in wan_table.splitlines() if l.startswith("| relu |"))
    colds = f"{a['latency_wan_cold_predicted_s']:.3g} / {b['latency_wan_cold_predicted_s']:.3g}"
    assert colds in line
    # results made before party CPU and WAN cold were recorded still render, with "-" where a figure is missing
    for r in doc["results"]:
        del r["cpu_s"]
        r.pop("latency_wan_cold_predicted_s", None)
    old_md = markdown(doc, [])
    cost_row = next(l for l in old_md[old_md.index("## 2_4_8, LAN"):].splitlines() if l.startswith("| relu | fss1 |"))
    assert cost_row.split(" | ")[7] == "-"  # the party CPU column
    line = next(l for l in old_md[old_md.index("Old (fss1", old_md.index("## 2_4_8, WAN")):].splitlines() if l.startswith("| relu |"))
    assert "| - | - |" in line and colds in line  # no party CPU; the cold latency computed from the rows' own figures


@pytest.mark.timeout(240)
def test_tfp_row_names_the_protocols_it_ran(tmp_path: Path) -> None:
    assert main(["bench", "--quick", "--models", "relu", "--network", "lan", "--provider", "tfp", "--no-plots", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    (row,) = doc["results"]
    assert row["protocols"] == "circuits" and row["protocols_requested"] == ["fss"] and "TFP makes no DCF keys" in row["protocols_note"]
    assert row["offline"]["dealer_s"] is None and row["offline"]["total_bytes"] == 0
    md = (tmp_path / "results.md").read_text()
    assert "TFP makes no DCF keys" in md and "no dealer" in md


@pytest.mark.timeout(240)
def test_an_imported_checkpoint_is_benchmarked_as_an_arch(tmp_path: Path) -> None:
    """``--arch <checkpoint dir>``: the imported model itself (its weights, its pooling), secure logits open to its own."""
    import torch

    from mpcvit.checkpoint import save_checkpoint
    from mpcvit.timm_import import build_timm, import_timm_model

    torch.manual_seed(0)
    t = build_timm("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, embed_dim=32, num_heads=4, num_classes=10,
                   global_pool="avg")
    imported = import_timm_model(t, "vit_tiny_patch16_224")
    save_checkpoint(tmp_path / "byo", imported.model, imported.meta)
    assert resolve_entries(BenchSettings(archs=(str(tmp_path / "byo"),)))[0].spec == imported.model.spec
    with pytest.raises(ValueError, match="or give a checkpoint directory"):
        BenchSettings(archs=(str(tmp_path / "nothing"),))
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--arch", str(tmp_path / "byo"), "--no-plots", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    rows = doc["results"]
    assert {r["model"] for r in rows} == {"byo"} and {r["network"] for r in rows} == {"lan", "wan"}
    row = rows[0]
    assert row["rounds"] > 0 and row["bytes"]["total"] > 0 and row["dealer_bytes"] > 0
    assert row["check"]["top1_agreement"] == 1.0 and row["check"]["max_abs_logit_error"] < 0.05
    assert "imported from timm's vit_tiny_patch16_224" in row["arch_source"]
    assert doc["models"][0]["weights"] == "byo"  # a path outside the repository shows only its name
