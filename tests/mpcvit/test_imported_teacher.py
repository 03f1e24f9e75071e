"""An imported timm ViT as the teacher of ``mpcvit train`` and the start of ``mpcvit search --init``.

The timm models are tiny, randomly initialised and shaped for sklearn's digits
(8x8x1, 10 classes), so every run here is one short epoch on a few images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mpcvit import cli
from mpcvit.checkpoint import load_checkpoint
from mpcvit.data import dataset_info, load_dataset
from mpcvit.models import ArchSpec, VisionTransformer, variant_of
from mpcvit.search.loop import SearchConfig, build_search_model
from mpcvit.timm_import import build_timm, import_timm_model
from mpcvit.train import TrainConfig, distillation_loss, normalise, token_features

DIGITS: dict[str, Any] = dict(img_size=8, patch_size=2, in_chans=1, num_classes=10, depth=2, embed_dim=32, num_heads=4)
QUICK = ["--threads", "1", "--no-progress"]


def _import(out: Path, *extra: str, **timm_args: Any) -> Path:
    args = {**DIGITS, **timm_args}
    argv = ["import", "--timm", "vit_tiny_patch16_224", "--random-init", "--out", str(out), *extra,
            *[f"--timm-arg={k}={json.dumps(v)}" for k, v in args.items()]]
    assert cli.main(argv) == 0
    return out


def _digits_norm() -> list[str]:
    norm = dataset_info("digits").normalisation()
    return ["--mean", *map(str, norm["mean"]), "--std", *map(str, norm["std"])]


def _first_logits(ckpt: Path) -> tuple[VisionTransformer, dict[str, Any], torch.Tensor]:
    model, meta = load_checkpoint(ckpt)
    x = load_dataset("digits", "test").tensors[0][:4]
    with torch.no_grad():
        return model, meta, model(normalise(x, meta["normalisation"]))


def test_train_and_search_start_from_an_imported_vit(tmp_path: Path) -> None:
    teacher_dir = _import(tmp_path / "byo", "--dataset", "digits", *_digits_norm(), global_pool="avg")
    teacher, _ = load_checkpoint(teacher_dir)
    assert teacher.spec.pool == "avg" and teacher.spec.norm_after_pool  # timm's fc_norm

    # a student of the teacher's architecture, MPC-friendly heads, started from its weights, distilled from it
    student_dir = tmp_path / "student"
    assert cli.main(["train", "--teacher", str(teacher_dir), "--arch", "teacher", "--dataset", "digits", "--epochs", "1",
                     "--limit", "16", "--out", str(student_dir), *QUICK]) == 0
    student, meta, logits = _first_logits(student_dir)
    assert student.spec == variant_of(teacher.spec, "mpcvit")
    assert student.spec.count_heads() == {"relu": 4, "scale": 4} and student.spec.pool == "avg"
    assert meta["distilled"] and meta["normalisation"] == dataset_info("digits").normalisation()
    assert "--arch teacher" in meta["command"]
    assert torch.isfinite(logits).all() and logits.shape == (4, 10)

    # the search starts from the imported weights and searches the imported architecture
    cfg = SearchConfig(dataset="digits", model=None, network="lan", lam=0.5, epochs=1, out=str(tmp_path / "s"),
                       init=str(teacher_dir))
    relaxed, norm = build_search_model(cfg)
    assert norm == dataset_info("digits").normalisation()
    for k, v in teacher.state_dict().items():
        assert torch.equal(relaxed.weight_state_dict()[k], v), k
    search_dir = tmp_path / "search"
    assert cli.main(["search", "--init", str(teacher_dir), "--dataset", "digits", "--network", "lan", "--plus",
                     "--epochs", "1", "--train-limit", "32", "--eval-limit", "16", "--costs", "placeholder",
                     "--out", str(search_dir), *QUICK]) == 0
    base = ArchSpec.from_dict(json.loads((search_dir / "alphas.json").read_text())["base_spec"])
    assert base == teacher.spec
    arch = tmp_path / "derived.json"
    assert cli.main(["derive", "--search", str(search_dir), "--mu", "0.5", "--costs", "placeholder", "--out", str(arch)]) == 0
    derived_dir = tmp_path / "derived"
    assert cli.main(["train", "--teacher", str(teacher_dir), "--arch", str(arch), "--dataset", "digits", "--epochs", "1",
                     "--limit", "16", "--out", str(derived_dir), *QUICK]) == 0
    derived, _, logits = _first_logits(derived_dir)
    assert derived.spec == ArchSpec.from_json(arch.read_text()) and derived.spec.pool == "avg"
    assert torch.isfinite(logits).all()


def test_teacher_normalisation_is_used_and_recorded_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher_dir = _import(tmp_path / "byo", "--dataset", "digits", "--mean", "0.5", "--std", "0.25")
    capsys.readouterr()
    argv = ["train", "--teacher", str(teacher_dir), "--arch", "teacher:relu", "--dataset", "digits", "--epochs", "1",
            "--limit", "16", "--out", str(tmp_path / "student"), *QUICK]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expects inputs normalised with mean 0.5 std 0.25, digits is normalised with" in err
    assert "pass --teacher-normalisation to use the checkpoint's, or re-import it with --mean 0.3" in err
    assert cli.main([*argv, "--teacher-normalisation"]) == 0
    student, meta, logits = _first_logits(tmp_path / "student")
    assert meta["normalisation"] == {"mean": [0.5], "std": [0.25]} and "--teacher-normalisation" in meta["command"]
    assert student.spec.count_heads() == {"relu": 8} and torch.isfinite(logits).all()
    search = ["search", "--init", str(teacher_dir), "--dataset", "digits", "--epochs", "1", "--train-limit", "16",
              "--eval-limit", "8", "--costs", "placeholder", "--out", str(tmp_path / "search"), *QUICK]
    assert cli.main(search) == 1
    assert "pass --init-normalisation" in capsys.readouterr().err
    assert cli.main([*search, "--init-normalisation"]) == 0
    # the search pipeline's retrain of a derived architecture, distilled from the same imported teacher
    from mpcvit.checkpoint import CheckpointError
    from mpcvit.search.retrain import retrain

    with pytest.raises(CheckpointError, match="pass --teacher-normalisation"):
        retrain(student.spec, "digits", str(teacher_dir), 1, tmp_path / "derived", train_limit=16, progress=False)
    meta = retrain(student.spec, "digits", str(teacher_dir), 1, tmp_path / "derived", train_limit=16, progress=False,
                   work=tmp_path / "work", teacher_normalisation=True)
    assert meta["normalisation"] == {"mean": [0.5], "std": [0.25]} and meta["teacher"] == str(teacher_dir)


def test_what_does_not_fit_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unnamed = _import(tmp_path / "unnamed", *_digits_norm())
    rgb = _import(tmp_path / "rgb", "--dataset", "digits", img_size=16, in_chans=3, patch_size=4)
    other = _import(tmp_path / "other", "--dataset", "fashion-mnist", *_digits_norm())
    wide = _import(tmp_path / "wide", "--dataset", "digits", *_digits_norm(), embed_dim=48)
    capsys.readouterr()

    def refused(*argv: str) -> str:
        assert cli.main([*argv, *QUICK]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err.strip()

    def train(teacher: Path, *extra: str) -> list[str]:
        return ["train", "--teacher", str(teacher), "--dataset", "digits", "--epochs", "1", "--limit", "16",
                "--out", str(tmp_path / "out"), *(extra or ("--arch", "teacher"))]

    search = ["search", "--dataset", "digits", "--epochs", "1", "--train-limit", "16", "--costs", "placeholder",
              "--out", str(tmp_path / "search")]
    assert refused(*train(unnamed)) == (f"mpcvit train: error: teacher {unnamed} names no dataset: if it was trained on "
                                        "digits, re-run its 'mpcvit import' with --dataset digits")
    assert refused(*search, "--init", str(unnamed)).startswith(f"mpcvit search: error: --init {unnamed} names no dataset")
    assert refused(*train(rgb)) == (f"mpcvit train: error: teacher {rgb} takes (3, 16, 16) -> 10 classes, digits is "
                                    "(1, 8, 8) -> 10 classes; import a timm model made for it (--timm-arg in_chans=1 "
                                    "--timm-arg img_size=8 --timm-arg num_classes=10, a patch_size dividing 8)")
    assert "takes (3, 16, 16) -> 10 classes" in refused(*search, "--init", str(rgb))
    assert refused(*train(other)).endswith(f"teacher {other} was trained on 'fashion-mnist', not 'digits'")
    assert "needs --teacher CKPT" in refused("train", "--arch", "teacher", "--dataset", "digits", "--epochs", "1",
                                             "--out", str(tmp_path / "x"))
    assert "unknown variant 'fast'" in refused(*train(wide, "--arch", "teacher:fast"))
    # a preset student of another width: feature distillation cannot compare them, the logits alone can
    assert refused(*train(wide, "--model", "vit_2_4_8")).endswith(
        "the student has 17 x 32: use --arch teacher, or --kd-feature-weight 0 to distil the logits only")
    assert cli.main([*train(wide, "--model", "vit_2_4_8", "--kd-feature-weight", "0"), *QUICK]) == 0
    assert "leave out --model" in refused(*search, "--init", str(wide), "--model", "vit_2_4_8")
    assert not (tmp_path / "search" / "alphas.json").exists()


TIMM_HEADS: list[dict[str, Any]] = [
    {},
    dict(global_pool="avg"),  # fc_norm after pooling
    dict(global_pool="avg", fc_norm=False),  # the final norm before pooling
    dict(no_embed_class=True, init_values=0.1, qkv_bias=False),
    dict(act_layer="relu"),
]


@pytest.mark.parametrize("options", TIMM_HEADS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_distillation_features_of_imported_structures(options: dict[str, Any]) -> None:
    torch.manual_seed(0)
    t = build_timm("vit_tiny_patch16_224", **{**DIGITS, **options})
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    teacher = import_timm_model(t.eval()).model
    same = VisionTransformer(variant_of(teacher.spec, "vit"))  # the teacher's own choices: it starts as the teacher
    same.load_state_dict(teacher.state_dict())
    assert same.spec.act == teacher.spec.act  # a ReLU teacher's student keeps ReLU where the variant has GeLU
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        t_feats = teacher.forward_features(x)
        t_tokens, t_logits = token_features(teacher, t_feats), teacher.forward_head(t_feats)
        s_feats = same.forward_features(x)
        s_tokens, s_logits = token_features(same, s_feats), same.forward_head(s_feats)
        assert torch.allclose(t_logits, t(x), atol=1e-5)
    assert t_tokens.shape == (3, teacher.spec.num_tokens, teacher.spec.embed_dim)
    if teacher.spec.norm_after_pool:  # the tokens are compared after the final norm, as for a norm-then-pool model
        assert torch.allclose(t_tokens, teacher.norm(t_feats))
        assert not torch.allclose(t_tokens, t_feats)
    cfg = TrainConfig(kd_alpha=0.5, label_smoothing=0.0)
    loss = distillation_loss(s_logits, s_tokens, t_logits, t_tokens, y, cfg)
    ce = torch.nn.functional.cross_entropy(s_logits, y)
    assert torch.allclose(loss, 0.5 * ce, atol=1e-6)  # the student starts at the teacher: no KL, no feature term
    student = VisionTransformer(variant_of(teacher.spec, "mpcvit"))
    student.load_state_dict(teacher.state_dict())
    feats = student.forward_features(x)
    logits = student.forward_head(feats)
    loss = distillation_loss(logits, token_features(student, feats), t_logits, t_tokens, y, cfg)
    assert torch.isfinite(loss) and loss > 0.5 * torch.nn.functional.cross_entropy(logits, y)  # KL and features pull
