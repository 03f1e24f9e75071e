"""The comparison benchmark: writes its JSON, and the small-ring protocols beat CrypTen's circuit in rounds and bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.compare_bench import OPS, main


def test_compare_bench_writes_json_and_ring_is_cheaper(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp.json"
    assert main(["--sizes", "500", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {(r["op"], r["comparison"]): r for r in data["rows"]}
    assert set(rows) == {(op, mode) for op in OPS for mode in ("crypten", "ring")}
    for op in OPS:
        ring, old = rows[(op, "ring")], rows[(op, "crypten")]
        assert ring["rounds"] < old["rounds"], op
        assert ring["bytes_per_value"] < old["bytes_per_value"] / 2, op
    assert "wrote" in capsys.readouterr().out


def test_compare_bench_refuses_bad_sizes() -> None:
    with pytest.raises(SystemExit):
        main(["--sizes", "ten"])
