"""MPC-aware search: relaxed == discrete at 0/1, the cost regulariser's gradient, derive rules, fused MLPs, the loop."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mpcvit.cli import main as cli_main
from mpcvit.models import ArchSpec, VisionTransformer, model_spec
from mpcvit.search import (
    THREE_WAY,
    TWO_WAY,
    CostTerms,
    PlaceholderCostModel,
    RelaxedViT,
    SearchResult,
    cost_regulariser,
    cost_terms,
    derive_budget,
    derive_ratio,
)
from mpcvit.search.derive import load_search

BASE = "vit_2_4_8"


def _relaxed(act_mode: str = "none", candidates: tuple[str, ...] = TWO_WAY, seed: int = 0) -> RelaxedViT:
    torch.manual_seed(seed)
    model = RelaxedViT(model_spec(BASE), candidates, act_mode)  # type: ignore[arg-type]
    model.eval()
    return model


def _result(model: RelaxedViT) -> SearchResult:
    betas = model.act_betas()
    return SearchResult(
        base=model.spec,
        candidates=model.candidates,
        act_mode=model.act_mode,
        head_weights=model.head_weights().detach().tolist(),
        betas=None if betas is None else betas.detach().tolist(),
        info={},
    )


def _discrete_output(model: RelaxedViT, spec: ArchSpec, x: torch.Tensor) -> torch.Tensor:
    discrete = VisionTransformer(spec)
    discrete.load_state_dict(model.weight_state_dict())
    discrete.eval()
    return discrete(x)


@pytest.mark.parametrize("act_mode", ["none", "layer", "token"])
def test_relaxed_equals_discrete_at_zero_one_two_way(act_mode: str) -> None:
    model = _relaxed(act_mode)
    L, H, N = model.spec.depth, model.spec.num_heads, model.spec.num_tokens
    gen = torch.Generator().manual_seed(3)
    alphas = (torch.rand(L, H, generator=gen) > 0.5).float()
    alphas[0, 0], alphas[1, 1] = 1.0, 0.0  # both kinds present
    units = 1 if act_mode == "layer" else N
    betas = (torch.rand(L, units, generator=gen) > 0.5).float() if act_mode != "none" else None
    if betas is not None:
        betas[0] = 0.0  # layer 0 fully linear (fused at export)
        betas[1, 0] = 1.0
    model.set_arch(alphas, betas)
    # derive at the ratio that keeps exactly the alpha = 1 heads and the beta = 1 units
    spec = derive_ratio(_result(model), mu=float(alphas.mean()))
    assert [[k == "relu" for k in layer] for layer in spec.attn] == alphas.bool().tolist()
    if act_mode != "none":
        assert spec.act[0] == "identity" and spec.mlp_is_linear(0)
    x = torch.randn(5, *model.spec.input_shape)
    torch.testing.assert_close(model(x), _discrete_output(model, spec, x), rtol=1e-5, atol=1e-6)


def test_relaxed_equals_discrete_at_one_hot_three_way() -> None:
    model = _relaxed(candidates=THREE_WAY)
    L, H = model.spec.depth, model.spec.num_heads
    choice = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]])  # indices into (softmax, relu, scale)
    logits = torch.full((L, H, 3), -1e4).scatter(-1, choice.unsqueeze(-1), 1e4)
    model.set_arch(logits)
    spec = derive_ratio(_result(model), mu=5 / 8)  # the five non-scaling heads
    assert spec.attn == tuple(tuple(THREE_WAY[int(c)] for c in row) for row in choice)
    x = torch.randn(4, *model.spec.input_shape)
    torch.testing.assert_close(model(x), _discrete_output(model, spec, x), rtol=1e-5, atol=1e-6)


def test_regulariser_gradient_pushes_expensive_heads_toward_cheaper_choice() -> None:
    model = _relaxed()
    L, H = model.spec.depth, model.spec.num_heads
    relu_cost = torch.linspace(1.0, 4.0, L * H).view(L, H)  # ReLU-softmax costlier, by different amounts
    head = torch.stack([relu_cost, torch.full((L, H), 0.5)], dim=-1)  # (L, H, 2): (relu, scale)
    terms = CostTerms(head=head, act=None, network="wan")
    lam = 0.7
    reg = cost_regulariser(model, terms, lam)
    alphas = list(model.arch_parameters())
    grads = torch.stack(torch.autograd.grad(reg, alphas))  # (L, H)
    expected = lam * (relu_cost - 0.5) / terms.reference
    torch.testing.assert_close(grads, expected)
    assert (grads > 0).all()  # gradient descent lowers every alpha (toward scaling) ...
    opt = torch.optim.SGD(alphas, lr=0.05)
    for _ in range(10):
        opt.zero_grad()
        cost_regulariser(model, terms, lam).backward()
        opt.step()
        model.clamp_arch_()
    after = model.head_weights()[..., 0].detach()
    assert (after < 0.5).all()
    assert after[-1, -1] < after[0, 0]  # ... and the most expensive head furthest


def test_regulariser_prices_gelu_from_cost_model() -> None:
    model = _relaxed("token")
    costs = PlaceholderCostModel()
    terms = cost_terms(model, costs, "wan")
    spec = model.spec
    assert terms.head.shape == (spec.depth, spec.num_heads, 2)
    assert terms.head[0, 0, 0] == pytest.approx(costs.head_cost("relu", spec, "wan"))
    assert terms.act is not None and terms.act.shape == (spec.depth, spec.num_tokens)
    per_token = (costs.act_cost("gelu", spec, spec.num_tokens, "wan") - costs.act_cost("identity", spec, spec.num_tokens, "wan")) / spec.num_tokens
    assert float(terms.act[0, 0]) == pytest.approx(per_token)
    betas = list(p for n, p in model.named_parameters() if n.endswith("arch_beta"))
    grads = torch.autograd.grad(cost_regulariser(model, terms, 1.0), betas)
    assert all((g > 0).all() for g in grads)


@pytest.mark.parametrize("mu", [0.0, 0.1, 0.25, 0.5, 0.7, 1.0])
def test_derive_ratio_keeps_top_mu_heads(mu: float) -> None:
    model = _relaxed()
    L, H = model.spec.depth, model.spec.num_heads
    alphas = torch.randperm(L * H, generator=torch.Generator().manual_seed(1)).float().view(L, H) / (L * H)
    model.set_arch(alphas)
    spec = derive_ratio(_result(model), mu)
    kept = torch.tensor([[k == "relu" for k in layer] for layer in spec.attn])
    assert int(kept.sum()) == math.floor(mu * L * H + 0.5)
    assert set(spec.count_heads()) <= {"relu", "scale"}
    if 0 < kept.sum() < L * H:
        assert alphas[kept].min() > alphas[~kept].max()  # ranked over all layers
    with pytest.raises(ValueError):
        derive_ratio(_result(model), 1.5)


def test_derive_budget_respects_budget_and_spends_it() -> None:
    model = _relaxed("token")
    gen = torch.Generator().manual_seed(2)
    model.set_arch(torch.rand(2, 4, generator=gen), torch.rand(2, model.spec.num_tokens, generator=gen))
    result, costs = _result(model), PlaceholderCostModel()
    cheapest = derive_budget(result, 1e9, "wan", costs)  # everything affordable
    assert cheapest.count_heads() == {"relu": 8} and cheapest.act == ("gelu", "gelu") and cheapest.act_tokens is None
    floor = costs.arch_latency(model.spec.with_(attn=[["scale"] * 4] * 2, act=["identity"] * 2), "wan")
    top = costs.arch_latency(cheapest, "wan")
    previous = 0.0
    for frac in (0.2, 0.5, 0.8):
        budget = floor + frac * (top - floor)
        spec = derive_budget(result, budget, "wan", costs)
        latency = costs.arch_latency(spec, "wan")
        assert latency <= budget
        assert latency >= previous
        previous = latency
        assert ArchSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="below the cheapest"):
        derive_budget(result, floor * 0.5, "wan", costs)


def test_fused_mlp_equals_unfused() -> None:
    torch.manual_seed(0)
    spec = model_spec(BASE, act=["identity", "gelu"])
    assert spec.mlp_is_linear(0) and not spec.mlp_is_linear(1)
    model = VisionTransformer(spec).eval()
    mlp = model.blocks[0].mlp
    x = torch.randn(3, spec.num_tokens, spec.embed_dim)
    w, b = mlp.fused_linear()
    torch.testing.assert_close(F.linear(x, w, b), mlp(x), rtol=1e-5, atol=1e-6)
    # and per-token linearisation with no token left is linear too
    assert model_spec(BASE, act_tokens=[[], None]).mlp_is_linear(0)


def test_search_cli_resumes_and_derives(tmp_path) -> None:
    out = tmp_path / "search"
    common = ["search", "--dataset", "digits", "--model", BASE, "--network", "lan", "--lambda", "0.5",
              "--out", str(out), "--plus", "--train-limit", "256", "--eval-limit", "100", "--costs", "placeholder",
              "--threads", "1", "--no-progress"]
    assert cli_main([*common, "--epochs", "1"]) == 0
    first = json.loads((out / "alphas.json").read_text())
    assert first["epoch"] == 1 and first["cost_source"] == "placeholder"
    assert cli_main([*common, "--epochs", "2"]) == 0  # resumes, runs only epoch 2
    log_lines = (out / "search_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log_lines] == [1, 2]
    result = load_search(out)
    assert result.info["epoch"] == 2 and result.betas is not None
    assert all(0.0 <= b <= 1.0 for row in result.betas for b in row)
    changed = ["0.9" if a == "0.5" else a for a in common]
    assert cli_main([*changed, "--epochs", "3"]) == 1  # a different search in the same directory is refused
    arch = tmp_path / "arch.json"
    assert cli_main(["derive", "--search", str(out), "--mu", "0.5", "--costs", "placeholder", "--out", str(arch)]) == 0
    spec = ArchSpec.from_json(arch.read_text())
    assert spec.count_heads() == {"relu": 4, "scale": 4}
    assert spec.name == "mpcvitplus_2_4_8"
    assert set(spec.extra["search"]["estimated_latency_s"]) == {"lan", "wan"}


def test_pareto_marks_front_and_domination(tmp_path) -> None:
    from mpcvit.checkpoint import save_checkpoint
    from mpcvit.search import pareto

    root = tmp_path / "ck"
    accs = {"vit_2_4_8": 0.97, "scale_2_4_8": 0.90, "mpcformer_2_4_8": 0.93}
    for name, acc in accs.items():
        save_checkpoint(root / name, VisionTransformer(model_spec(name)), {"test_accuracy": acc})
    ours = model_spec("mpcvit_2_4_8").with_(extra={"search": {"mu": 0.5}})
    save_checkpoint(root / "mpcvit_2_4_8_mu0.5", VisionTransformer(ours), {"test_accuracy": 0.965})
    stem = tmp_path / "out" / "pareto"
    assert pareto.main(["--checkpoints", str(root), "--out", str(stem), "--costs", "placeholder"]) == 0
    data = json.loads(stem.with_suffix(".json").read_text())
    assert stem.with_suffix(".png").stat().st_size > 10_000
    by_name = {p["name"]: p for p in data["points"]}
    assert by_name["mpcvit_2_4_8_mu0.5"]["label"] == "MPCViT mu=0.5"
    assert by_name["mpcvit_2_4_8_mu0.5"]["latency_s"]["wan"] < by_name["vit_2_4_8"]["latency_s"]["wan"]
    for net in ("lan", "wan"):
        front = data["analysis"][net]["pareto_front"]
        assert "vit_2_4_8" in front and "mpcvit_2_4_8_mu0.5" in front  # most accurate; accurate and cheaper
        assert data["analysis"][net]["ours"]["mpcvit_2_4_8_mu0.5"]["dominated_by_baselines"] == []
    assert data["analysis"]["vs_softmax_vit"]["mpcvit_2_4_8_mu0.5"]["accuracy_gap_points"] == 0.5


def test_retrain_with_distillation_writes_checkpoint(tmp_path) -> None:
    from mpcvit.checkpoint import load_checkpoint
    from mpcvit.search.retrain import main as retrain_main

    teacher, student = tmp_path / "teacher", tmp_path / "student"
    common = ["--dataset", "digits", "--epochs", "1", "--train-limit", "200", "--no-progress"]
    assert retrain_main(["--model", BASE, *common, "--out", str(teacher), "--work", str(tmp_path / "w1")]) == 0
    arch = tmp_path / "arch.json"
    arch.write_text(model_spec("mpcvitplus_2_4_8", act_tokens=[[0, 3], None]).to_json())
    argv = ["--arch", str(arch), "--teacher", str(teacher), *common, "--out", str(student), "--work", str(tmp_path / "w2")]
    assert retrain_main(argv) == 0
    model, meta = load_checkpoint(student)
    assert model.spec.act_tokens == ((0, 3), None)
    assert meta["teacher"] == str(teacher) and meta["train_limit"] == 200
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and meta["command"].startswith("python -m mpcvit.search.retrain")


def test_table_cost_model_reads_measured_entries() -> None:
    from mpcvit.search.table import TableCostModel
    from protocols.costs import NETWORKS, estimate

    def entry(rounds: int, nbytes: int, seconds: float, per: str) -> dict[str, object]:
        return {"rounds": rounds, "bytes": nbytes, "seconds": seconds, "per": per}

    ops = {f"attention-{k}": entry(r, b, s, "head") for k, r, b, s in
           [("softmax", 60, 400_000, 0.02), ("relu", 20, 150_000, 0.01), ("scale", 0, 20_000, 0.001),
            ("2quad", 10, 90_000, 0.01), ("thex", 15, 120_000, 0.01)]}
    ops.update({f"activation-{k}": entry(r, b, s, "layer") for k, r, b, s in
                [("gelu", 12, 800_000, 0.05), ("relu", 8, 500_000, 0.03), ("quad", 1, 50_000, 0.002),
                 ("identity", 0, 0, 0.0)]})
    for op in ("attention-matmul", "linear", "linear-fused", "norm-layernorm", "norm-affine"):
        ops[op] = entry(2, 10_000, 0.001, "layer")
    for op in ("embed", "head", "norm-final"):
        ops[op] = entry(1, 5_000, 0.001, "model")
    costs = TableCostModel({"entries": {"2_4_8": ops}})
    spec = model_spec("mpcvitplus_2_4_8", act_tokens=[None, [0, 1]])
    wan = NETWORKS["wan"]
    assert costs.head_cost("relu", spec, "wan") == pytest.approx(0.01 + 75_000 * 8 / wan.bandwidth_bps + 20 * wan.rtt_s / 4)
    assert costs.act_cost("gelu", spec, 0, "wan") == 0.0 and costs.act_cost("identity", spec, 17, "wan") == 0.0
    half = costs.act_cost("gelu", spec, spec.num_tokens // 2, "wan") - 12 * wan.rtt_s
    full = costs.act_cost("gelu", spec, spec.num_tokens, "wan") - 12 * wan.rtt_s
    assert half == pytest.approx(full * (spec.num_tokens // 2) / spec.num_tokens)
    assert costs.arch_latency(spec, "lan") == pytest.approx(estimate(spec, "lan", costs.table)["latency_s"])
    assert costs.arch_latency(model_spec("scale_2_4_8"), "wan") < costs.arch_latency(model_spec("vit_2_4_8"), "wan")


def test_pareto_averages_seeds_from_run_records(tmp_path) -> None:
    from mpcvit.checkpoint import save_checkpoint
    from mpcvit.search import pareto

    root, runs = tmp_path / "ck", tmp_path / "runs"
    runs.mkdir()
    for name in ("vit_2_4_8", "mpcformer_2_4_8"):
        save_checkpoint(root / name, VisionTransformer(model_spec(name)), {"test_accuracy": 0.5, "distilled": False})
    records = {"vit_2_4_8": 0.90, "vit_2_4_8_seed1": 0.92, "vit_2_4_8_seed2": 0.94, "vit_2_4_8_e80": 0.99,
               "mpcformer_2_4_8": 0.91}
    for name, acc in records.items():
        (runs / f"{name}.json").write_text(json.dumps({"test_accuracy": acc}))
    stem = tmp_path / "out" / "pareto"
    argv = ["--checkpoints", str(root), "--runs", str(runs), "--out", str(stem), "--costs", "placeholder"]
    assert pareto.main(argv) == 0
    by_name = {p["name"]: p for p in json.loads(stem.with_suffix(".json").read_text())["points"]}
    vit = by_name["vit_2_4_8"]
    assert vit["accuracies"] == [0.90, 0.92, 0.94] and abs(vit["accuracy"] - 0.92) < 1e-12  # the probe is left out
    assert abs(vit["accuracy_std"] - 0.02) < 1e-12
    assert by_name["mpcformer_2_4_8"]["accuracy_std"] is None and by_name["mpcformer_2_4_8"]["label"] == "MPCFormer no KD"
    assert "+- 2.00" in stem.with_suffix(".md").read_text()
