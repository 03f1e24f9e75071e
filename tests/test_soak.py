"""The soak benchmark's quick tier: the local stack answers a few hundred private requests correctly, and no role's
resident memory keeps growing over the second half (loose bound; the long tier is ``python -m benchmarks.soak``,
committed under ``results/soak/``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import soak

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "digits" / soak.DEFAULT_MODEL


def test_summarise_judges_growth_over_the_second_half() -> None:
    flat = [{"requests": n, "rss_mb": {"dealer": 300.0 + (5.0 if n < 20 else 0.0), "party0": 300.0 + 2 * n}} for n in range(0, 101, 2)]
    roles = soak.summarise(flat, 100, warmup=0.25, bound_mb=32.0, bound_pct=5.0, judged=True)
    assert roles["dealer"]["plateau"] is True and roles["dealer"]["growth_second_half_mb"] == 0.0
    assert roles["party0"]["plateau"] is False and roles["party0"]["growth_second_half_mb"] == 90.0  # 2 MB per request
    assert soak.summarise(flat, 100, 0.25, 32.0, 5.0, judged=False)["party0"]["plateau"] is None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_soak_answers_right_and_memory_plateaus(tmp_path: Path) -> None:
    if not (CHECKPOINT / "arch.json").is_file():
        pytest.skip(f"no {CHECKPOINT.name} checkpoint")
    out = tmp_path / "soak.json"
    # loose: 64 MB + 10% per role over the second half of 160 requests (the long tier's bound is 32 MB + 5%)
    code = soak.main(["--requests", "160", "--clients", "4", "--images", "32", "--bound-mb", "64", "--bound-pct", "10",
                      "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["answered"] == 160 and result["wrong_answers"] == 0 and result["errors"] == 0, result["error_samples"]
    for role, r in result["roles"].items():
        assert r["plateau"] is True, (role, r)
    assert result["dealer_open_batches"]["end"] <= 8  # what the parties fetched ahead, at most; nothing piles up
    assert code == 0
    assert out.with_suffix(".png").stat().st_size > 0
