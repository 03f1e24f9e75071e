"""Numeric safety of the secure runtime: comparison-range margins and catastrophic truncation errors.

    python benchmarks/numeric_safety.py [--parts ranges,expected,empirical] [--out results/numeric_safety.json]

Three measurements, each written under its own key of the JSON file (a part
not run keeps what the file already holds):

* ``ranges`` (plaintext, float64, whole test split): for every committed
  checkpoint (``checkpoints/fashion-mnist``, ``checkpoints/digits``) the
  largest |x| each small-ring comparison of the secure runtime is fed
  (GeLU's |x| > 4 test, ReLU activations, ReLU-softmax and THE-X attention,
  softmax's max tree, the Newton starts of reciprocal and inv_sqrt, with the
  runtime's pre-scaling: ln_prescale for LayerNorm's variance, the sums and
  the 1/N scalings of the attentions, and the fss GeLU's sign gate on x,
  x - 4, x + 4), against the ring's valid bound 2^(k-1+t-f) - 2^(t-f)
  (``protocols.sign.valid_bound``); the input domains of softmax's exp
  (x >= -2^(n+1)) and of the Newton starts; and, for models with
  LayerNorm, a bound on the GeLU input and on the attention scores that holds
  for EVERY input (|LN(x)| has norm <= sqrt(C), so |fc1(LN(x))_j| <=
  sqrt(C) |W'_j| + |b'_j|).
* ``expected`` (secure, two party processes, ``protocols.probe``): per local
  truncation site, the expected number of catastrophic truncation failures
  per inference, sum |z| / 2^64, on real test images for one checkpoint per
  variant at 4_4_28, and on random-weight 7_4_32 models (element counts of
  the bigger shape); the 7_4_32 figure for trained weights is extrapolated
  site by site: elements at 7_4_32 times the trained 4_4_28 model's mean
  |z| / 2^64 per element at the same site. ``--settings``: "after" (the
  defaults), "ablation" (lower_bits=0, exp_offsets=False), "head" (the
  defaults of a checkout of the code before the fix, with this script and
  ``protocols/probe.py`` copied in: the "before" figures).
* ``empirical`` (secure, ``protocols.evaluate``'s party function): N secure
  inferences on test images; images whose logits differ from plaintext by
  more than 1 anywhere, per setting.

``--smoke`` runs every part in seconds (``tests/benchmarks/test_smoke.py``):
the digits checkpoints only (16 test images each for ranges), vit_2_4_8 for
expected (2 images; its "7_4_32 random" model at 2_4_8) and empirical (2
images), the costs of vit_2_4_8; it writes only to an ``--out`` that is not
the committed report.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mpcvit.prg import new_key  # noqa: E402
from protocols.local import run_two_party  # noqa: E402
from protocols.sign import valid_bound  # noqa: E402
from protocols.ops import FOURIER_MARGIN, FOURIER_RANGE  # noqa: E402

CHECKPOINT_DIRS = ("checkpoints/fashion-mnist", "checkpoints/digits")
PROBE_MODELS = ("vit_4_4_28", "mpcformer_4_4_28", "thex_4_4_28", "relu_4_4_28", "scale_4_4_28",
                "mpcvit_4_4_28_mu0.3", "mpcvitplus_4_4_28_mu0.3")
# name -> SecureConfig overrides; "head" is the same empty override run on a checkout of the code before
# this change (benchmarks/numeric_safety.py and protocols/probe.py copied in), so it measures the old defaults
# "fss1" is not an override: it is the whole runtime before the whole-cost work (``protocols.config.runtime_config``)
SETTINGS = {"after": {}, "ablation": {"lower_bits": 0, "exp_offsets": False}, "head": {}, "fss1": {}}
ROW_SETTINGS = ("head", "ablation", "fss1", "after")  # the order of the report's rows
COST_VARIANTS = ("vit", "mpcformer", "thex", "relu", "scale", "mpcvit", "mpcvitplus")
# where each part looks; --smoke swaps in SMOKE_SCOPE (the digits checkpoints, the smallest shape)
SCOPE = {"checkpoint_dirs": CHECKPOINT_DIRS, "probe_dir": "checkpoints/fashion-mnist", "dataset": "fashion-mnist",
         "big_shape": "7_4_32", "cost_shape": "7_4_32", "cost_variants": COST_VARIANTS}
SMOKE_SCOPE = {"checkpoint_dirs": ("checkpoints/digits",), "probe_dir": "checkpoints/digits", "dataset": "digits",
               "big_shape": "2_4_8", "cost_shape": "2_4_8", "cost_variants": ("vit",)}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _config(setting: str):  # noqa: ANN202
    from protocols.config import DEFAULT_CONFIG, runtime_config

    if setting == "fss1":
        return runtime_config("fss1")
    return DEFAULT_CONFIG.with_(**SETTINGS[setting])


# -- ranges: plaintext mirror of every comparison input ---------------------------------------------
class _Site:
    def __init__(self, ring: tuple[int, int] | None, f: int) -> None:
        self.max_abs = 0.0
        self.values = 0
        self.bound = valid_bound(*ring) / 2.0**f if ring else None
        self.ring = ring
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, t: torch.Tensor, value: torch.Tensor | None = None) -> None:
        """t: the comparison inputs; value: the quantity whose domain is tracked (default t)."""
        if t.numel():
            self.max_abs = max(self.max_abs, float(t.abs().max()))
            self.values += t.numel()
        v = t if value is None else value
        if v.numel():
            self.lo, self.hi = min(self.lo, float(v.min())), max(self.hi, float(v.max()))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"values": self.values, "max_abs": self.max_abs, "min": self.lo, "max": self.hi}
        if self.bound is not None:
            d.update(ring=list(self.ring), bound=self.bound, margin=(self.bound / self.max_abs if self.max_abs else None))
        return d


def _thresholds(lo: int, hi: int, per: int) -> torch.Tensor:
    return torch.tensor([2.0 ** (lo + j / per) for j in range((hi - lo) * per)], dtype=torch.float64)


def _range_inputs(x: torch.Tensor, lo: int, hi: int, per: int) -> torch.Tensor:
    """max over thresholds of |t_j - x| per element (what ``ops.range_start`` compares), flattened."""
    t = _thresholds(lo, hi, per)
    x = x.reshape(-1, 1)
    return torch.maximum((t.max() - x).abs(), (t.min() - x).abs()).reshape(-1)


def _max_tree_diffs(s: torch.Tensor) -> torch.Tensor:
    """The differences a - b the pairwise max tree of ``compare.max_rows`` compares, over the last dim."""
    out = []
    while s.shape[-1] > 1:
        n = s.shape[-1]
        half = n // 2
        a, b = s[..., :half], s[..., half : 2 * half]
        out.append((a - b).reshape(-1))
        m = torch.maximum(a, b)
        s = torch.cat([m, s[..., 2 * half :]], dim=-1) if n % 2 else m
    return torch.cat(out)


def _certified(model: Any, spec: Any) -> dict[str, float]:
    """Input-independent bounds for LayerNorm models: max |GeLU input| and max |attention score|."""
    from protocols.runtime import _fold_norm, _norm_affine, certified_gelu_bounds, prepare_weights

    C, H, D = spec.embed_dim, spec.num_heads, spec.head_dim
    gelu = max(certified_gelu_bounds(prepare_weights(model, spec), spec).values(), default=0.0)
    score = 0.0
    for l, blk in enumerate(model.blocks):
        w, b = _fold_norm(blk.attn.qkv.weight.detach().double(), blk.attn.qkv.bias.detach().double(), *_norm_affine(blk.norm1))
        for h, kind in enumerate(spec.attn[l]):
            if kind == "scale":
                continue
            rows = slice(h * D, (h + 1) * D)
            wq, bq = w[:C][rows], b[:C][rows]
            wk, bk = w[C : 2 * C][rows], b[C : 2 * C][rows]
            nq = torch.linalg.matrix_norm(wq, ord=2) * math.sqrt(C) + bq.norm()
            nk = torch.linalg.matrix_norm(wk, ord=2) * math.sqrt(C) + bk.norm()
            score = max(score, float(nq * nk) / math.sqrt(D))
    return {"gelu_input": gelu, "attention_score": score}


def ranges_for(ckpt: Path, batch: int = 500, limit: int | None = None) -> dict[str, Any]:
    import torch.nn.functional as F

    from mpcvit.checkpoint import load_checkpoint, normalise_input
    from mpcvit.data import load_dataset
    from mpcvit.models.vit import head_groups
    from protocols.config import DEFAULT_CONFIG as cfg
    from protocols.ops import GELU_T, SPLINE_KNOTS

    model, meta = load_checkpoint(ckpt)
    model = model.double().eval()
    spec = model.spec
    images, _ = load_dataset(meta.get("dataset", "fashion-mnist"), "test").tensors
    if limit:
        images = images[:limit]
    f, per, k2 = cfg.precision_bits, cfg.range_per_octave, cfg.ln_prescale**2
    sites: dict[str, _Site] = {}

    def site(name: str, ring: tuple[int, int] | None) -> _Site:
        return sites.setdefault(name, _Site(ring, f))

    def norm_var(x: torch.Tensor) -> None:
        if spec.norm != "layernorm":
            return
        var = x.var(-1, unbiased=False) * k2 + cfg.layernorm_eps * k2
        lo, hi = cfg.inv_sqrt_range
        site("inv_sqrt start (LayerNorm var * ln_prescale^2)", cfg.range_compare).add(_range_inputs(var, lo, hi, per), var)
        if cfg.fold_products:  # the default runtime's fine start: its own domain, thresholds and ring
            lo, hi = cfg.ln_range
            site("LayerNorm fine start (var * ln_prescale^2)", cfg.ln_compare).add(
                _range_inputs(var, lo, hi, cfg.ln_per_octave), var)

    def recip(name: str, x: torch.Tensor, lo: int, hi: int) -> None:
        site(f"reciprocal start ({name})", cfg.range_compare).add(_range_inputs(x, lo, hi, per), x)

    N = spec.num_tokens
    with torch.no_grad():
        for i in range(0, len(images), batch):
            t = model.embed(normalise_input(images[i : i + batch].double(), meta))
            for l, blk in enumerate(model.blocks):
                norm_var(t)
                q, kk, v = blk.attn.split_heads(blk.norm1(t))
                for kind, idx in head_groups(spec.attn[l]).items():
                    if kind == "scale":
                        continue
                    s = q[:, idx] @ kk[:, idx].transpose(-2, -1) * spec.head_dim**-0.5
                    if kind == "softmax":
                        site("softmax max tree (score differences)", cfg.relu_compare).add(_max_tree_diffs(s))
                        site("softmax max tree, default ring (score differences)", cfg.max_compare).add(_max_tree_diffs(s))
                        x = s - s.amax(-1, keepdim=True)
                        site(f"softmax exp input (x >= -2^{cfg.exp_iterations + 1})", None).add(x.reshape(-1))
                        hi = max(2, math.ceil(math.log2(N)) + 1)
                        recip("softmax sum", x.exp().sum(-1), -1, hi)
                    elif kind == "relu":
                        site("ReLU-softmax (scores)", cfg.relu_compare).add(s.reshape(-1))
                        recip("ReLU-softmax sum + eps", F.relu(s).sum(-1) + spec.relu_eps, *cfg.reciprocal_range)
                    elif kind == "thex":
                        u = s / spec.thex_order + 1.0
                        site("THE-X ReLU (s / n + 1)", cfg.relu_compare).add(u.reshape(-1))
                        e = F.relu(u) ** spec.thex_order
                        recip("THE-X (sum + eps) / N", (e.sum(-1) + spec.relu_eps) / N, *cfg.reciprocal_range)
                    elif kind == "2quad":
                        qq = (s + spec.quad_c) ** 2
                        recip("2Quad sum / N", qq.sum(-1) / N, *cfg.reciprocal_range)
                t = t + blk.attn(blk.norm1(t))
                norm_var(t)
                h = blk.mlp.fc1(blk.norm2(t))
                toks = spec.tokens_with_act(l)
                ha = h if toks is None else h[:, list(toks)]
                if spec.act[l] == "gelu" and not spec.mlp_is_linear(l):
                    test = torch.stack([GELU_T - ha, ha + GELU_T])
                    site("GeLU range test (4 - x, x + 4)", cfg.gelu_compare).add(test.reshape(-1), ha.reshape(-1))
                    gate = torch.stack([ha, ha - GELU_T, ha + GELU_T])  # the fss GeLU's shifts 0, 4, -4
                    site("GeLU sign gate (x, x - 4, x + 4)", cfg.gelu_gate).add(gate.reshape(-1), ha.reshape(-1))
                    knots = torch.tensor(SPLINE_KNOTS, dtype=ha.dtype).view(-1, *([1] * ha.dim()))
                    site("GeLU spline gate (x - knots)", cfg.gelu_spline_gate).add((ha.unsqueeze(0) - knots).reshape(-1),
                                                                                 ha.reshape(-1))
                elif spec.act[l] == "relu":
                    site("ReLU activation", cfg.relu_compare).add(ha.reshape(-1))
                t = t + blk.mlp(blk.norm2(t))
            norm_var(t)
    out: dict[str, Any] = {"images": len(images), "sites": {k: v.to_dict() for k, v in sites.items()}}
    if spec.norm == "layernorm":
        out["certified"] = _certified(model, spec)
    return out


def run_ranges(limit: int | None, scope: dict[str, Any] = SCOPE) -> dict[str, Any]:
    from protocols.config import DEFAULT_CONFIG as cfg

    models: dict[str, Any] = {}
    for d in scope["checkpoint_dirs"]:
        for ckpt in sorted((ROOT / d).iterdir()):
            if not (ckpt / "arch.json").exists():
                continue
            t0 = time.perf_counter()
            models[f"{d.split('/')[-1]}/{ckpt.name}"] = ranges_for(ckpt, limit=limit)
            _log(f"ranges {d}/{ckpt.name}: {time.perf_counter() - t0:.1f} s")
    # the worst case per site over all checkpoints
    worst: dict[str, Any] = {}
    for name, m in models.items():
        for s, v in m["sites"].items():
            w = worst.setdefault(s, {"max_abs": 0.0, "model": None, "bound": v.get("bound"), "min": math.inf, "max": -math.inf})
            if v["max_abs"] > w["max_abs"]:
                w["max_abs"], w["model"] = v["max_abs"], name
            w["min"], w["max"] = min(w["min"], v["min"]), max(w["max"], v["max"])
    for w in worst.values():
        w["margin"] = w["bound"] / w["max_abs"] if w["bound"] and w["max_abs"] else None
    cert = {k: max((m.get("certified", {}).get(k, 0.0) for m in models.values()), default=0.0)
            for k in ("gelu_input", "attention_score")}
    return {"rings": {"gelu": list(cfg.gelu_compare), "gelu_gate": list(cfg.gelu_gate), "relu": list(cfg.relu_compare),
                      "gelu_spline_gate": list(cfg.gelu_spline_gate), "max": list(cfg.max_compare), "ln": list(cfg.ln_compare),
                      "range": list(cfg.range_compare)},
            "worst": worst, "certified_worst": cert, "models": models}


# -- expected failures: the probe in a secure run ---------------------------------------------------
def _probe_party(rank: int, model: Any, meta: Any, setting: str, master_key: bytes, shares: list[torch.Tensor]) -> dict[str, Any]:
    from protocols.probe import Probe, probing
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT

    install_provider(DealerProvider(rank))
    secure = SecureViT.share(model if rank == 0 else None, model.spec, meta if rank == 0 else None, owner=0,
                             config=_config(setting), batch_source=InProcessDealer(master_key))
    probe = Probe()
    for s in shares:
        secure.plan(int(s.shape[0]))  # the dry run outside the probe
        with probing(probe):
            secure.forward_shares(s)
    return probe.to_dict()


def _probe(model: Any, meta: Any, images: torch.Tensor, setting: str, batch: int) -> dict[str, Any]:
    from mpcvit.sealing import share_fixed_point

    s0, s1 = [], []
    for i in range(0, len(images), batch):  # a fresh key from the OS per split (the cryptographic PRG)
        a, b = share_fixed_point(images[i : i + batch], 16)
        s0.append(a)
        s1.append(b)
    p, _ = run_two_party(_probe_party, model.eval(), meta, setting, new_key(), rank_args=((s0,), (s1,)), timeout=7200)
    n = len(images)
    sites = {k: {**v, "per_inference": v["expected_failures"] / n, "elements_per_inference": v["elements"] / n}
             for k, v in p["truncations"].items()}
    return {"images": n, "expected_per_inference": sum(v["expected_failures"] for v in p["truncations"].values()) / n,
            "wraps_seen": sum(v["wraps"] for v in p["truncations"].values()), "sites": sites, "compares": p["compares"]}


def _extrapolate(small: dict[str, Any], big: dict[str, Any]) -> dict[str, Any]:
    """Per site: elements per inference of ``big`` x mean |z| / 2^64 per element of ``small`` (same site)."""
    total, per_site = 0.0, {}
    for site, v in big["sites"].items():
        s = small["sites"].get(site)
        rate = (s["expected_failures"] / s["elements"]) if s and s["elements"] else v["expected_failures"] / max(v["elements"], 1)
        val = v["elements_per_inference"] * rate
        per_site[site] = val
        total += val
    return {"expected_per_inference": total, "sites": per_site}


def run_expected(n_images: int, batch: int, models: list[str], settings: list[str],
                 scope: dict[str, Any] = SCOPE) -> dict[str, Any]:
    from mpcvit.checkpoint import load_checkpoint
    from mpcvit.data import load_dataset
    from mpcvit.models.registry import create_model

    images, _ = load_dataset(scope["dataset"], "test").tensors
    images = images[:n_images]
    out: dict[str, Any] = {"images_4_4_28": n_images, "models": {}}
    for name in models:
        model, meta = load_checkpoint(ROOT / scope["probe_dir"] / name)
        variant = name.split("_")[0]
        torch.manual_seed(0)
        big = create_model(f"{variant}_{scope['big_shape']}", **({"attn": model.spec.attn + model.spec.attn[-1:] * 3,
                                                    "act": model.spec.act + model.spec.act[-1:] * 3,
                                                    "act_tokens": None} if variant in ("mpcvit", "mpcvitplus") else {}))
        big_images = torch.rand(2, *big.spec.input_shape, generator=torch.Generator().manual_seed(0))
        entry: dict[str, Any] = {"random_7_4_32_layout": {"attn": [list(a) for a in big.spec.attn], "act": list(big.spec.act)}}
        for setting in settings:
            t0 = time.perf_counter()
            small = _probe(model, meta, images, setting, batch)
            rnd = _probe(big, {}, big_images, setting, 1)
            entry[setting] = {"4_4_28": small, "7_4_32_random": rnd, "7_4_32_extrapolated": _extrapolate(small, rnd)}
            _log(f"expected {name} {setting}: 4_4_28 {small['expected_per_inference']:.3g}, 7_4_32 random "
                 f"{rnd['expected_per_inference']:.3g}, extrapolated {entry[setting]['7_4_32_extrapolated']['expected_per_inference']:.3g} "
                 f"per inference ({time.perf_counter() - t0:.0f} s)")
        out["models"][name] = entry
    return out


# -- empirical: many secure inferences, images with a catastrophic logit error -------------------------
def run_empirical(name: str, n_images: int, batch: int, settings: list[str], scope: dict[str, Any] = SCOPE) -> dict[str, Any]:
    from mpcvit.checkpoint import load_checkpoint, normalise_input
    from mpcvit.data import load_dataset
    from mpcvit.sealing import reconstruct_fixed_point, share_fixed_point
    from protocols.evaluate import _party

    model, meta = load_checkpoint(ROOT / scope["probe_dir"] / name)
    model = model.eval()
    images, _ = load_dataset(scope["dataset"], "test").tensors
    images = images[:n_images]
    with torch.no_grad():
        plain = model(normalise_input(images.float(), meta))
    out: dict[str, Any] = {"model": name, "images": n_images, "batch_size": batch}
    for setting in settings:
        config = _config(setting)
        bad, worst, t0 = 0, 0.0, time.perf_counter()
        chunk = batch * 5  # five batches per pair of party processes (bounded memory, progress)
        errors = []
        for start in range(0, n_images, chunk):
            part = images[start : start + chunk]
            s0, s1 = [], []
            for i in range(0, len(part), batch):  # a fresh key from the OS per split (the cryptographic PRG)
                a, b = share_fixed_point(part[i : i + batch], config.precision_bits)
                s0.append(a)
                s1.append(b)
            r0, r1 = run_two_party(_party, model, meta, config, new_key(),
                                   rank_args=((torch.cat(s0), batch), (torch.cat(s1), batch)), timeout=7200)
            private = torch.cat([reconstruct_fixed_point(torch.tensor(a), torch.tensor(b), config.precision_bits).double()
                                 for a, b in zip(r0["logit_shares"], r1["logit_shares"])])
            err = (private - plain[start : start + chunk].double()).abs().amax(1)
            errors.append(err)
            bad += int((err > 1).sum())
            worst = max(worst, float(err.max()))
            _log(f"empirical {name} {setting}: {start + len(part)}/{n_images} images, {bad} with an error > 1, "
                 f"max error {worst:.4g} ({time.perf_counter() - t0:.0f} s)")
        err = torch.cat(errors)
        out[setting] = {"config": dict(SETTINGS[setting]), "images_with_error_over_1": bad, "max_abs_logit_error": worst,
                        "median_max_logit_error": float(err.median()), "seconds": round(time.perf_counter() - t0, 1)}
    return out


# -- costs: rounds and bytes of one forward per variant at 7_4_32 -------------------------------------
def run_costs(setting: str, scope: dict[str, Any] = SCOPE) -> dict[str, Any]:
    from benchmarks.secure_costs import _party as costs_party

    names = [f"{v}_{scope['cost_shape']}" for v in scope["cost_variants"]]
    reports, _ = run_two_party(costs_party, names, 1, new_key(), timeout=3000)
    _log(f"costs {setting}: " + ", ".join(f"{r['model']} {r['rounds']} rounds {r['bytes']} bytes" for r in reports))
    return {setting: {r["model"]: {"rounds": r["rounds"], "bytes": r["bytes"]} for r in reports}}


# -- markdown ---------------------------------------------------------------------------------------
def _g(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def _short(site: str) -> str:
    """'ops function:line <- runtime function:line' -> a readable name."""
    op, _, rt = site.partition(" <- ")
    fn = op.split(":")[0]
    names = {"_attention": "attention product", "_block": "linear (qkv / proj)", "_mlp": "linear (fc1 / fc2)",
             "_embed": "linear (embedding)", "_forward": "linear (head)"}
    where = rt.split(":")[0]
    if fn in ("?", "linear"):
        return f"{names.get(where, where)} [{site}]"
    return f"{fn} [{site}]"


def _summary(r: dict[str, Any]) -> str:
    """The findings in a few bullets, numbers from the JSON."""
    out = ["## Summary\n"]
    rg, ex, em, co = r.get("ranges"), r.get("expected"), r.get("empirical"), r.get("costs")
    if rg:
        cmp_sites = {k: w for k, w in rg["worst"].items() if w.get("bound") and "start" not in k}
        worst = min(cmp_sites.items(), key=lambda kv: kv[1]["margin"])
        g = rg["worst"].get("GeLU range test (4 - x, x + 4)", {})
        cw = rg.get("certified_worst", {})
        site = "reciprocal start (THE-X (sum + eps) / N)"
        thex = {"max": 0.0, "min": math.inf, "model": "-"}
        for name, m in rg["models"].items():
            v = m["sites"].get(site)
            if v and v["max"] > thex["max"]:
                thex.update(max=v["max"], model=name)
            if v:
                thex["min"] = min(thex["min"], v["min"])
        out.append(f"* **Comparison ranges.** Over every committed checkpoint and its whole test split, the smallest "
                   f"margin of a comparison input to its ring's bound is {_g(worst[1]['margin'])}x ({worst[0]}, "
                   f"{worst[1]['model']}). GeLU's range test moved from ring (16, 12) (valid |x| <= 2048 - 2^-4; gelu(3000) "
                   f"came out 0) to (16, 14) (valid |x| <= 8192 - 2^-2, same 6 rounds, same bytes): largest test input "
                   f"{_g(g.get('max_abs'), 4)}, and for LayerNorm models no image can push the GeLU input past "
                   f"{_g(cw.get('gelu_input'), 3)} (bound from the weights). Newton starts: the reciprocal's domain "
                   f"[2^-12, 2^12] was too small for THE-X ((sum + eps) / N up to {_g(thex['max'], 5)}, "
                   f"{thex['model']}; x (1/x) came out -1.2 at x = 8000 and -9.4 at x = 10270: Goldschmidt diverges "
                   "above the domain); it is now [2^-14, 2^16] (12 more thresholds in the same comparison, no round). "
                   f"THE-X's margins stay the thinnest: {_g(2.0**16 / thex['max'], 2)}x above, "
                   f"{_g(thex['min'] / 2.0**-14, 2)}x below (at the bottom the whole row of e is ~0, so the output is "
                   "~0 whatever 1/x), and 1/x of values above ~1e3 is a few ulps of 2^-16 (a relative error of "
                   "10-30 % in those rows' normalisation, as before): THE-X's (1 + s/n)^n is not range-safe.")
    if ex:
        vit = ex["models"].get("vit_4_4_28", {})
        def ext(e: dict[str, Any], s: str) -> float | None:
            return e[s]["7_4_32_extrapolated"]["expected_per_inference"] if s in e else None
        afters = [ext(e, "after") for e in ex["models"].values() if "after" in e]
        heads = [ext(e, "head") for e in ex["models"].values() if "head" in e]
        out.append(f"* **Catastrophic truncation errors, expected per inference** (sum of |z| / 2^64 over every local "
                   f"truncation): vit_7_4_32 (extrapolated from trained vit_4_4_28) {_g(ext(vit, 'head'))} before, "
                   f"{_g(ext(vit, 'after'))} after; vit_4_4_28 {_g(vit.get('head', {}).get('4_4_28', {}).get('expected_per_inference'))}"
                   f" -> {_g(vit.get('after', {}).get('4_4_28', {}).get('expected_per_inference'))}. Over the seven variants at "
                   f"7_4_32: at most {_g(max(heads) if heads else None)} before, at most {_g(max(afters) if afters else None)} after "
                   "(the target was < 1e-4). The fix costs no round and no byte for the products: operands lowered "
                   "locally (`lower_bits = 4`), exp squaring v - c instead of v, GeLU coefficients on a 2^-8 grid, "
                   "divisions by public integers instead of products with 1/n.")
    if ex and any("fss1" in e for e in ex["models"].values()):
        both = {n: e for n, e in ex["models"].items() if "fss1" in e and "after" in e}
        def worst(setting: str, part: str) -> float:
            return max(e[setting][part]["expected_per_inference"] for e in both.values())
        out.append(f"* **The whole-cost runtime** (\"after\" is now the default runtime, fss: the Fourier GeLU on every "
                   f"certified layer (every committed checkpoint's), the folded "
                   f"LayerNorm, the folded reciprocals; \"fss1\" the runtime before it, run in the same sitting, "
                   f"{len(both)} variants): expected catastrophic errors per inference at most {_g(worst('fss1', '4_4_28'))} "
                   f"(fss1) and {_g(worst('after', '4_4_28'))} (after) on the trained 4_4_28 checkpoints, "
                   f"{_g(worst('fss1', '7_4_32_random'))} and {_g(worst('after', '7_4_32_random'))} at 7_4_32 with random "
                   "weights. The probe now also sees the ops' own share truncations (`ops.truncate_shares`: `lower`, the "
                   "range starts' lines, the spline's coefficients, the Fourier GeLU's sum), which it missed before.")
    if em:
        cells = ", ".join(f"{s}: {em[s]['images_with_error_over_1']} of {em['images']} (largest error "
                          f"{_g(em[s]['max_abs_logit_error'], 3)})" for s in ("head", "fss1", "after") if s in em)
        out.append(f"* **Empirical**, {em['model']}, images with a logit error > 1: {cells}. At an expected rate below "
                   "1e-4 none is expected in 1,000; `tests/protocols/test_numeric_safety.py` checks the rate itself on "
                   "products made large on purpose (z = 2^58: 493 wraps for 500 expected in 32,000, each one a "
                   "catastrophic error).")
    if co and "head" in co and "after" in co:
        same = all(co["after"][m]["rounds"] == co["head"][m]["rounds"] for m in co["after"] if m in co["head"])
        d = {m: co["after"][m]["bytes"] - co["head"][m]["bytes"] for m in co["after"] if m in co["head"]}
        out.append(f"* **Cost**: rounds {'unchanged for every variant' if same else 'CHANGED'}; bytes unchanged for "
                   f"vit_7_4_32 and scale_7_4_32, +{max(d.values()) / 2**20:.1f} MiB at most (the wider reciprocal domain "
                   "of ReLU-softmax / 2Quad / THE-X), so vit_7_4_32's WAN latency is unchanged.")
    return "\n".join(out) + "\n"


def markdown(r: dict[str, Any]) -> str:
    L: list[str] = []
    add = L.append
    add("# Numeric safety: comparison ranges and catastrophic truncation errors\n")
    add("Made by `benchmarks/numeric_safety.py` (the commands below, in this order; each merges its part into the JSON). "
        f"Machine: {r.get('machine', '?')}, two party processes on 2 shared cores.\n")
    for c in r.get("commands", []):
        add(f"    {c}")
    add("")
    add(_summary(r))
    add('"head" is the code before this change (its defaults: GeLU range test on (16, 12), CrypTen\'s exp, no lowered '
        'operands, products with public reals at 2^(2f), reciprocal domain [2^-12, 2^12]) run with this script and '
        '`protocols/probe.py` copied in; "after" is this code\'s defaults (rows marked after that sit beside fss1 '
        'rows were re-run with the whole-cost runtime, the default now); "ablation" is this code with '
        '`lower_bits=0, exp_offsets=False`; "fss1" is this code with the runtime before the whole-cost work '
        '(`runtime_config("fss1")`), run in the same sitting as those after rows.\n')
    if r.get("note"):
        add(r["note"] + "\n")
    rg = r.get("ranges")
    if rg:
        add("## 1. Comparison inputs against their ring's valid range\n")
        add(f"Plaintext float64 mirror of what the secure runtime feeds each comparison, over the whole test split of "
            f"every committed checkpoint ({len(rg['models'])} models: checkpoints/fashion-mnist 10,000 images each, "
            "checkpoints/digits 360). A comparison on ring (k, t) is exact for |x| <= 2^(k-1+t-16) - 2^(t-16) (real "
            "units; `protocols.sign.valid_bound`: the carry (DCF sign gate) or borrow (ring circuit) out of the t "
            "dropped bits costs the last 2^(t-16) of 2^(k-1+t-16)); beyond, the bit is garbage. The fss GeLU's sign gate "
            "compares x, x - 4 and x + 4 (the default, `gelu = \"fss\"`); the range test 4 -+ x is the circuits' "
            "(`gelu = \"poly\"`). Margin = bound / largest |x| seen (worst model).\n")
        add("| comparison site | ring (k, t) | valid for abs(x) <= | largest abs(x) | worst model | margin |")
        add("|---|---|---:|---:|---|---:|")
        for site, w in sorted(rg["worst"].items()):
            if w.get("bound") is None or "start" in site:
                continue
            ring = next(m["sites"][site]["ring"] for m in rg["models"].values() if site in m["sites"])
            add(f"| {site} | ({ring[0]}, {ring[1]}) | {_g(w['bound'], 10)} | {_g(w['max_abs'], 4)} | {w['model']} | "
                f"{_g(w['margin'], 3)}x |")
        add("")
        add("The Newton starts compare x with public thresholds t_j = 2^(lo + j/2) < 2^hi on the ring (32, 2) "
            "(valid for |t_j - x| <= 2^17 - 2^-14): with hi <= 16 the thresholds are in range, and so is t_j - x for "
            "every 0 < x <= 2^17 - 2^-14. What the data must respect is the start's domain [2^lo, 2^hi]: above it the start is too "
            "large and Goldschmidt / Newton diverge (e_0 < -1), below it they converge only partly. Margins: 2^hi / "
            "max and min / 2^lo (the softmax sum lies in [1, N] by construction):\n")
        add("| value | domain | measured min | measured max | margin above | margin below |")
        add("|---|---|---:|---:|---:|---:|")
        for site, w in sorted(rg["worst"].items()):
            if "start" not in site and "exp" not in site:
                continue
            if "exp" in site:
                dom, lo, hi = "[-512, 0]", None, None
                add(f"| {site} | {dom} | {_g(w['min'], 4)} | {_g(w['max'], 4)} | - | {_g(-512 / w['min'], 3)}x |")
                continue
            if site == "reciprocal start (softmax sum)":
                add(f"| {site} | [2^-1, 2^(ceil(log2 N) + 1)] | {_g(w['min'], 4)} | {_g(w['max'], 5)} | "
                    "2x (sum in [1, N]) | 2x (sum >= 1) |")
                continue
            if "fine start" in site:  # the default runtime's LayerNorm start: SecureConfig.ln_range
                from protocols.config import DEFAULT_CONFIG

                lo, hi = DEFAULT_CONFIG.ln_range
            else:
                lo, hi = (-14, 14) if "inv_sqrt" in site else (-14, 16)
            dom = f"[2^{lo}, 2^{hi}]" + (" (was [2^-12, 2^12])" if (lo, hi) == (-14, 16) else "")
            add(f"| {site} | {dom} | {_g(w['min'], 4)} | {_g(w['max'], 5)} | {_g(2.0**hi / w['max'], 3)}x | "
                f"{_g(w['min'] / 2.0**lo, 3)}x |")
        cw = rg.get("certified_worst", {})
        add("")
        add("Bounds that hold for EVERY input image (models with LayerNorm; |LN(x)| has norm <= sqrt(C), so "
            "|fc1(LN(x))_j| <= sqrt(C) |W'_j| + |b'_j| and |q k| / sqrt(D) <= (sqrt(C) |W'_q| + |b_q|) (sqrt(C) |W'_k| + |b_k|) / sqrt(D) "
            f"with gamma, beta folded into W', b'): GeLU input |x| <= {_g(cw.get('gelu_input'), 4)} (so the range test's "
            f"inputs 4 -+ x stay below {_g(cw.get('gelu_input', 0) + 4, 4)}, and the Fourier GeLU, valid for |x| <= "
            f"{_g(FOURIER_RANGE, 3)}, runs wherever the bound times {FOURIER_MARGIN} is within that: "
            f"{_g(FOURIER_RANGE / max(cw.get('gelu_input', 0) * FOURIER_MARGIN, 1e-9), 3)}x margin for the worst layer), attention score <= "
            f"{_g(cw.get('attention_score'), 4)} (so the max tree's differences stay below {_g(2 * cw.get('attention_score', 0), 4)}) "
            "over all committed LayerNorm checkpoints (worst model), whatever the image.\n")
        add("Largest |x| per model and site (GeLU: the test inputs 4 -+ x; Newton starts: the largest x (the data, "
            "not the thresholds); exp: the smallest x; certified: |x| of the GeLU input / the score, any image):\n")
        sites = sorted({k for m in rg["models"].values() for k in m["sites"]})
        short = {k: (k.replace("reciprocal start (", "1/x: ").replace("inv_sqrt start (", "1/sqrt: ").split(" (")[0]
                     .rstrip(")")) for k in sites}
        add("| model | " + " | ".join(short[k] for k in sites) + " | certified GeLU / score |")
        add("|---|" + "---:|" * (len(sites) + 1))
        for name, m in rg["models"].items():
            def cell(k: str) -> str:
                v = m["sites"].get(k)
                if v is None:
                    return ""
                return _g(v["max"] if "start" in k else v["min"] if "exp" in k else v["max_abs"], 3)

            cells = [cell(k) for k in sites]
            c = m.get("certified")
            add(f"| {name} | " + " | ".join(cells) + f" | {(_g(c['gelu_input'], 3) + ' / ' + _g(c['attention_score'], 3)) if c else '-'} |")
        add("")
    ex = r.get("expected")
    if ex:
        add("## 2. Catastrophic truncation errors\n")
        add("A local 2PC truncation of z (a product in ring units, at scale 2^(2f) unless lowered) fails, an error "
            "of about 2^48 ulp, when the two uniform shares wrap around 2^64: probability |z| / 2^64. The probe "
            "(`protocols/probe.py`, measurement only) opens every truncated z in a secure run and sums |z| / 2^64 per site: "
            f"the expected number of catastrophic errors per inference. 4_4_28: the trained checkpoint, first "
            f"{ex.get('images_4_4_28')} Fashion-MNIST test images. 7_4_32 random: the same variant at 7_4_32 with random "
            "weights (seed 0) on 2 random images (mpcvit/mpcvitplus: the checkpoint's head layout, last layer repeated). "
            "7_4_32 extrapolated: per site, the 7_4_32 element count times the trained 4_4_28 model's mean |z| / 2^64 per "
            "element at the same site (trained magnitudes, bigger shape).\n")
        add("| model | setting | 4_4_28 trained | 7_4_32 random | 7_4_32 extrapolated | wraps seen |")
        add("|---|---|---:|---:|---:|---:|")
        for name, e in ex["models"].items():
            for setting in ROW_SETTINGS:
                if setting in e:
                    v = e[setting]
                    add(f"| {name} | {setting} | {_g(v['4_4_28']['expected_per_inference'])} | "
                        f"{_g(v['7_4_32_random']['expected_per_inference'])} | "
                        f"{_g(v['7_4_32_extrapolated']['expected_per_inference'])} | "
                        f"{v['4_4_28']['wraps_seen'] + v['7_4_32_random']['wraps_seen']} |")
        add("")
        add("The same secure runs replayed every comparison input (the probe opens them): values compared, how many "
            "lay outside their ring's valid range, and the largest |x| per comparison site (ops function <- runtime line; "
            "range starts include the public thresholds):\n")
        add("| model | setting | values compared | out of range | largest abs(x) per site |")
        add("|---|---|---:|---:|---|")
        for name, e in ex["models"].items():
            for setting in ("head", "fss1", "after"):
                if setting in e:
                    cmp_ = e[setting]["4_4_28"]["compares"]
                    per = "; ".join(f"{k.split(' <- ')[0].split(':')[0]} <- {k.split(' <- ')[1].split(':')[0]} "
                                    f"{_g(v['max_abs'], 3)} (ring {v['ring'][0]}, {v['ring'][1]})" for k, v in cmp_.items())
                    add(f"| {name} | {setting} | {sum(v['values'] for v in cmp_.values())} | "
                        f"{sum(v['out_of_range'] for v in cmp_.values())} | {per} |")
        add("")
        for name in ("vit_4_4_28", "mpcformer_4_4_28"):
            e = ex["models"].get(name, {})
            for setting in ("head", "fss1", "after"):
                if setting not in e:
                    continue
                ext = e[setting]["7_4_32_extrapolated"]["sites"]
                top = sorted(ext.items(), key=lambda kv: -kv[1])[:8]
                add(f"Largest sites, {name.replace('4_4_28', '7_4_32')} extrapolated, {setting} "
                    f"(total {_g(e[setting]['7_4_32_extrapolated']['expected_per_inference'])}):\n")
                add("| site | expected per inference |")
                add("|---|---:|")
                for k, v in top:
                    add(f"| {_short(k)} | {_g(v)} |")
                add("")
        if ex["models"].get("vit_4_4_28", {}).get("head"):
            add("Sites are named by source line of the code that ran. In head's code: layernorm:273 is LayerNorm's "
                "variance square (k xc)^2, layernorm:274 its final product k xc / sqrt(var'), softmax_rows:217 "
                "CrypTen's exp (8 squares of v near 1), gelu_poly_steps:308 the products with the coefficients c_4..c_7 "
                "(up to 53, at 2^(2f)), quad_rows:243 2Quad's (s + c)^2. In this code: gelu_poly_steps:422 is GeLU's x^2 "
                "(not lowered: its error reaches the output through coefficients up to 53), exp_nonpositive:296 / 301 the "
                "offset squares, layernorm:366 the final product with k xc lowered, inv_sqrt_nr:252 Newton's (x y) y, "
                "square:146 the lowered squares.\n")
    em = r.get("empirical")
    if em:
        add("## 3. Secure inferences with a catastrophic error\n")
        add(f"{em['model']}, the first {em['images']} Fashion-MNIST test images, batches of {em['batch_size']} "
            "(dealer provider, in-process), private logits vs the plaintext model's:\n")
        add("| setting | images | images with a logit error > 1 | largest logit error | median of per-image max error |")
        add("|---|---:|---:|---:|---:|")
        for setting in ROW_SETTINGS:
            if setting in em:
                v = em[setting]
                add(f"| {setting} | {em['images']} | {v['images_with_error_over_1']} | {_g(v['max_abs_logit_error'], 4)} | "
                    f"{_g(v['median_max_logit_error'], 3)} |")
        add("")
    co = r.get("costs")
    if co and "head" in co and "after" in co:
        add("## 4. Cost of the fix (one forward, batch 1, 7_4_32, party 0's counts)\n")
        add("| model | rounds head | rounds after | bytes head | bytes after | bytes change |")
        add("|---|---:|---:|---:|---:|---:|")
        for name, a in co["after"].items():
            h = co["head"].get(name)
            if h:
                add(f"| {name} | {h['rounds']} | {a['rounds']} | {h['bytes']} | {a['bytes']} | "
                    f"{100 * (a['bytes'] - h['bytes']) / h['bytes']:+.2f} % |")
        add("")
    return "\n".join(L) + "\n"


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over ``old``, dictionaries merged key by key (lists and numbers replaced)."""
    out = dict(old)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _replace_settings(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (a part's ``{"models": {name: {setting: ...}}, ...}``) over ``old``: each (model, setting) measured now
    replaces its old entry whole, so a site the code no longer has (or names by another line) does not linger."""
    out = _merge(old, {k: v for k, v in new.items() if k != "models"})
    models = dict(out.get("models", {}))
    for name, per in new.get("models", {}).items():
        models[name] = {**models.get(name, {}), **per}
    out["models"] = models
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="ranges,expected,empirical,costs",
                        help="comma-separated: ranges, expected, empirical, costs (rounds and bytes at 7_4_32), md "
                             "(rewrite the markdown next to --out from the JSON)")
    parser.add_argument("--out", default=str(ROOT / "results/numeric_safety.json"), help="JSON file (parts merged in)")
    parser.add_argument("--range-limit", type=int, default=None, help="test images per checkpoint for ranges (default all)")
    parser.add_argument("--probe-images", type=int, default=50, help="test images per 4_4_28 model for expected")
    parser.add_argument("--probe-models", default=",".join(PROBE_MODELS), help="fashion-mnist checkpoints for expected")
    parser.add_argument("--empirical-model", default="vit_4_4_28", help="fashion-mnist checkpoint for empirical")
    parser.add_argument("--empirical-images", type=int, default=1000, help="secure inferences for empirical")
    parser.add_argument("--settings", default="after", help=f"comma-separated, of {', '.join(SETTINGS)} (see the docstring)")
    parser.add_argument("--batch-size", type=int, default=10,
                        help="images per secure forward (default 10: every op stays under fss_max_values, so the DCF gates run as served)")
    parser.add_argument("--smoke", action="store_true", help="every part in seconds on the digits checkpoints (see the docstring)")
    args = parser.parse_args(argv)
    scope = SCOPE
    if args.smoke:
        if Path(args.out).resolve() == (ROOT / "results/numeric_safety.json").resolve():
            parser.error("--smoke writes a throwaway report: give another --out")
        scope = SMOKE_SCOPE
        args.range_limit, args.probe_images, args.empirical_images, args.batch_size = 16, 2, 2, 2
        args.probe_models = args.empirical_model = "vit_2_4_8"
    torch.set_num_threads(1)
    out_path = Path(args.out)
    result: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(parts) - {"md"}:
        result.setdefault("commands", [])
        command = "python benchmarks/numeric_safety.py " + " ".join(sys.argv[1:] if argv is None else argv)
        if result["commands"][-1:] != [command]:  # the same command again replaces its part: listed once
            result["commands"].append(command)
    settings = [x for x in args.settings.split(",") if x]
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown setting(s) {sorted(unknown)}")
    result["machine"] = f"{platform.machine()} {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    result["settings"] = SETTINGS

    fresh: dict[str, Any] = {}
    measured: dict[str, dict[str, Any]] = {}  # parts measured now per (model, setting): re-applied over any merge

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if out_path.exists():  # merge with what another run wrote meanwhile (parts and settings)
            result.update(_merge(json.loads(out_path.read_text()), result))
        result.update(fresh)  # a part measured now replaces its old self whole (no stale checkpoints)
        for part, new in measured.items():
            result[part] = _replace_settings(result.get(part, {}), new)
        out_path.write_text(json.dumps(result, indent=1) + "\n")

    if "ranges" in parts:
        result["ranges"] = fresh["ranges"] = run_ranges(args.range_limit, scope)
        save()
    if "expected" in parts:
        measured["expected"] = run_expected(args.probe_images, args.batch_size, args.probe_models.split(","), settings, scope)
        result["expected"] = _replace_settings(result.get("expected", {}), measured["expected"])
        save()
    if "costs" in parts:
        for setting in settings:
            result["costs"] = _merge(result.get("costs", {}), run_costs(setting, scope))
        save()
    if "empirical" in parts:
        result["empirical"] = _merge(result.get("empirical", {}),
                                     run_empirical(args.empirical_model, args.empirical_images, args.batch_size, settings, scope))
        save()
    if "md" in parts:
        out_path.with_suffix(".md").write_text(markdown(result))
    _log(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
