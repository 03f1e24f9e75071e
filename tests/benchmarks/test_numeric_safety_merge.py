"""A numeric-safety part re-measured replaces each (model, setting) whole: no site of older code lingers."""

from __future__ import annotations

from benchmarks.numeric_safety import _replace_settings


def test_a_remeasured_setting_replaces_its_sites_and_keeps_the_others() -> None:
    old = {"images_4_4_28": 50, "models": {
        "vit": {"after": {"sites": {"gelu <- _mlp:10": 1.0, "stale <- _mlp:99": 2.0}}, "fss1": {"sites": {"x": 3.0}}},
        "thex": {"after": {"sites": {"y": 4.0}}}}}
    new = {"images_4_4_28": 50, "models": {"vit": {"after": {"sites": {"gelu <- _mlp:12": 5.0}}}}}
    out = _replace_settings(old, new)
    assert out["models"]["vit"]["after"] == {"sites": {"gelu <- _mlp:12": 5.0}}  # the stale line-99 site is gone
    assert out["models"]["vit"]["fss1"] == old["models"]["vit"]["fss1"]  # a setting not re-measured stays
    assert out["models"]["thex"] == old["models"]["thex"]
    assert old["models"]["vit"]["after"]["sites"]["stale <- _mlp:99"] == 2.0  # the input is not modified
