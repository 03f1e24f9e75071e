"""schemathesis ``--checks all`` against the coordinator (real uvicorn on loopback, the fake parties): the server and its
OpenAPI document agree: no 5xx, every response conforms to the schema, schema-valid data is accepted and schema-violating
data refused (what no schema can state is in ``schemathesis_hooks.py`` and ``schemathesis.toml``).

Quick tier (always): a few examples per operation, the examples and fuzzing phases, well under a minute.
Long tier: ``MPCVIT_SCHEMATHESIS_LONG=1 python -m pytest -q tests/server/test_schemathesis.py`` runs every phase
(coverage included) with more examples and writes the report to ``results/schemathesis_long.txt``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.server.conftest import LiveServer

pytest.importorskip("schemathesis", reason="schemathesis (a dev dependency) is not installed")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LONG = os.environ.get("MPCVIT_SCHEMATHESIS_LONG") == "1"


def run_schemathesis(server: LiveServer, examples: int, phases: str, timeout_s: float) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    doc_grid = max((e.spec.grid for e in server.app.state.coordinator.catalog.entries.values()), default=1)
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    cmd = [st, "--config-file", "tests/server/schemathesis.toml", "run", f"{server.url}/openapi.json", "--checks", "all",
           "--max-examples", str(examples), "--phases", phases, "--seed", "1", "--no-color", "--output-truncate", "true"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.server.schemathesis_hooks", "MPCVIT_ST_MIN_SIDE": str(doc_grid),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return cmd, subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)


@pytest.mark.timeout(120)
@pytest.mark.skipif(LONG, reason="the long tier runs instead")
def test_schemathesis_checks_all_quick(live: Callable[..., LiveServer]) -> None:
    with live() as server:
        _, done = run_schemathesis(server, examples=5, phases="examples,fuzzing", timeout_s=100)
    tail = done.stdout[-4000:]
    assert done.returncode == 0, tail
    assert re.search(r"\d+ generated, \d+ passed", tail), tail


@pytest.mark.timeout(1800)
@pytest.mark.skipif(not LONG, reason="long tier: set MPCVIT_SCHEMATHESIS_LONG=1")
def test_schemathesis_checks_all_long(live: Callable[..., LiveServer]) -> None:
    with live() as server:
        cmd, done = run_schemathesis(server, examples=50, phases="examples,coverage,fuzzing", timeout_s=1700)
    shown = " ".join(["MPCVIT_SCHEMATHESIS_LONG=1 python -m pytest -q tests/server/test_schemathesis.py", "#", "runs:",
                      *("st" if i == 0 else re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", a) for i, a in enumerate(cmd))])
    out = ROOT / "results" / "schemathesis_long.txt"
    report = done.stdout[-200_000:].replace(str(ROOT) + os.sep, "")  # paths relative to the repository
    out.write_text(f"$ {shown}\n(exit status {done.returncode})\n\n{report}")
    assert done.returncode == 0, done.stdout[-4000:]
