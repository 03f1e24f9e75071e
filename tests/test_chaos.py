"""The chaos benchmark's quick tier: faults in the running stack, and not one wrong answer.

``python -m benchmarks.chaos --quick`` starts the local stack (dealer with
``--state``, two parties, coordinator, mutual TLS) with the digits model, runs 4
SDK clients, and injects five faults, one after another: party 1 SIGKILLed and
started again, the dealer SIGSTOPped for a few seconds, the dealer SIGKILLed
right after a burst of requests (while the parties fetch material ahead), the
coordinator SIGKILLed and started again on its port, both parties SIGKILLed at
once. Every 200 answer is compared with the plaintext model's logits. About
75 s on 2 cores, stack start included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOG_LINES = 30  # lines of each role's log in a failure's message (the HTTP access lines left out)
ACCESS_LINE = re.compile(r'^INFO:\s+[\d.]+:\d+ - "')


def _log_tails(logs: Path) -> str:
    """The last lines of each role's log (``benchmarks.chaos --logs``), so that a failure says what the roles saw."""
    if not logs.is_dir():
        return "\n(no role logs kept)"
    parts = []
    for path in sorted(logs.glob("*.log")):
        lines = [l for l in path.read_text(errors="replace").splitlines() if not ACCESS_LINE.match(l)]
        parts.append(f"\n--- {path.name} (last {LOG_LINES} lines but HTTP access lines) ---\n" + "\n".join(lines[-LOG_LINES:]))
    return "".join(parts) or "\n(no role logs written)"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_chaos_tier_has_no_wrong_answer_and_recovers_after_every_fault(tmp_path: Path) -> None:
    if not (ROOT / "checkpoints" / "digits" / "vit_2_4_8" / "arch.json").is_file():
        pytest.skip("no digits checkpoint vit_2_4_8")
    out, logs = tmp_path / "chaos.json", tmp_path / "logs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "benchmarks.chaos", "--quick", "--out", str(out), "--logs", str(logs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=280, check=False)
    seconds = time.monotonic() - t0
    assert out.is_file(), f"no result (exit {done.returncode}):\n{done.stderr[-4000:]}{_log_tails(logs)}"
    result = json.loads(out.read_text())
    t = result["totals"]
    summary = json.dumps(t, indent=1) + "\n" + done.stderr[-3000:] + _log_tails(logs)
    assert t["wrong"] == 0, f"wrong answers: {result['wrong_answers']}\n{summary}"
    assert t["garbage_200_refused_by_sdk"] == 0, f"garbage 200 answers: {result['garbage_200']}\n{summary}"
    assert t["max_logit_error"] <= result["settings"]["tolerance"]
    assert t["faults"] >= 5 and len(t["faults_by_kind"]) >= 3, summary
    assert {"dealer", "party0", "party1", "coordinator"} <= set(t["roles_faulted"]), summary
    # the service answered again after each fault: a request sent after the role was back was answered
    assert t["not_recovered"] == [], summary
    assert all(f["recovered"] and f["recovery_s"] is not None for f in result["faults"]), result["faults"]
    assert t["answered"] >= 20, summary
    assert done.returncode == 0, summary
    assert seconds < 170, f"the quick tier took {seconds:.0f} s"
