"""Every script under benchmarks/ runs, in its smallest mode, so that no benchmark breaks silently.

The scripts are discovered (``benchmarks/*.py``) and each must have an entry in
``SMOKE``: a new script without one fails ``test_benchmark_runs``. A command
entry runs the script as its header says (``python benchmarks/X.py`` or
``python -m benchmarks.X``) in a subprocess (the renderers, which start no
party processes, in this process with ``runpy``, to save an interpreter's
start-up), writing only under the test's temporary directory, and checks the
exit status and the files it promises. A library module (no command line) is
imported. Paths that need tools absent
from CI are left out, each with its reason: the SecretFlow SPU measurement of
``spu_bench`` (a separate environment, ``make spu-env``; its rendering path
runs) and the ``--reference`` yardstick of ``secure_costs`` / ``large_vit``
(the shared plain-CrypTen reference script). About a minute on 2 cores.
"""

from __future__ import annotations

import importlib
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


def _copy(src: str, dst: str) -> Callable[[Path], None]:
    """Setup: a committed file copied into the temp dir (re-rendering writes next to it, never into results/)."""

    def setup(tmp: Path) -> None:
        (tmp / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / src, tmp / dst)

    return setup


@dataclass(frozen=True)
class Smoke:
    argv: tuple[str, ...] = ()  # after the interpreter; "{tmp}" is the test's temp dir; empty: a library, imported
    outputs: tuple[str, ...] = ()  # files (under {tmp}) the run must write
    setup: Callable[[Path], None] | None = field(default=None, compare=False)
    note: str = ""  # what is left out, and why
    in_process: bool = False  # "-m module" run with runpy here (renderers only: no party processes, no global state)


SMOKE: dict[str, Smoke] = {
    "agreement": Smoke(("-m", "benchmarks.agreement", "--smoke", "--out", "{tmp}/agreement.json"),
                       ("agreement.json", "agreement.md")),
    "before_after": Smoke(("-m", "benchmarks.before_after", "{tmp}/before.json", "{tmp}/after.json", "--out", "{tmp}/ba.md"),
                          ("ba.md",), lambda tmp: (_copy("results/bench/before/results.json", "before.json")(tmp),
                                                    _copy("results/bench/results.json", "after.json")(tmp)),
                          in_process=True),
    "bench": Smoke(("-m", "benchmarks.bench", "{tmp}/bench"), ("bench/results.md",),
                   _copy("results/bench/results.json", "bench/results.json"),
                   "re-renders a committed run; a fresh run (mpcvit bench --quick) is tests/benchmarks/test_bench.py's", True),
    "bench_models": Smoke(note="library of mpcvit bench"),
    "bench_render": Smoke(note="library of mpcvit bench"),
    "bench_run": Smoke(note="library of mpcvit bench"),
    "bench_summary": Smoke(note="library of mpcvit bench"),
    "soak": Smoke(("-m", "benchmarks.soak", "--requests", "4", "--clients", "1", "--out", "{tmp}/soak.json"), ("soak.json", "soak.png")),
    "chaos": Smoke(note="starts the stack and injects faults for about 75 s: its quick tier (--quick) runs in tests/test_chaos.py"),
    "compare_bench": Smoke(("benchmarks/compare_bench.py", "--sizes", "64", "--repeats", "1", "--out", "{tmp}/compare_bench.json"),
                           ("compare_bench.json",)),
    "dealer_material": Smoke(("-m", "benchmarks.dealer_material", "--arch", "2_4_8", "--models", "relu,vit",
                              "--runtimes", "product,fss", "--out", "{tmp}/dealer_material.json"),
                             ("dealer_material.json", "dealer_material.md")),
    "dcf_speed": Smoke(("benchmarks/dcf_speed.py", "--smoke", "--out", "{tmp}/dcf_speed.json"), ("dcf_speed.json",),
                       note="the baseline is read with git; without it only this tree is timed"),
    "large_vit": Smoke(("benchmarks/large_vit.py", "--smoke", "--out", "{tmp}/large_vit"),
                       ("large_vit/results.json", "large_vit/README.md"), note="--reference needs the shared CrypTen reference script"),
    "load_bench": Smoke(("benchmarks/load_bench.py", "--levels", "1", "--requests-per-client", "1", "--min-requests", "1",
                         "--images", "2", "--batch-size", "1", "--dealer-network", "lan", "--prefetch", "cold",
                         "--out", "{tmp}/load_bench.json"), ("load_bench.json",)),
    "numeric_safety": Smoke(("benchmarks/numeric_safety.py", "--smoke", "--parts", "ranges,expected,empirical,costs,md",
                             "--out", "{tmp}/numeric_safety.json"), ("numeric_safety.json", "numeric_safety.md")),
    "output_policy": Smoke(("-m", "benchmarks.output_policy", "--smoke", "--out", "{tmp}/output_policy.json"),
                           ("output_policy.json", "output_policy.md")),
    "plots": Smoke(("-m", "benchmarks.plots", "{tmp}/plots/results.json"), ("plots/costs_7_4_32.png",),
                   _copy("results/bench/results.json", "plots/results.json"), in_process=True),
    "published": Smoke(note="table of published figures"),
    "secure_costs": Smoke(("benchmarks/secure_costs.py", "--shape", "2_4_8", "--variants", "vit", "--repeats", "1",
                           "--out", "{tmp}/secure_costs"), ("secure_costs.json", "secure_costs.md"),
                          note="--reference needs the shared CrypTen reference script"),
    "spu_bench": Smoke(("-m", "benchmarks.spu_bench", "--render", "{tmp}/spu"), ("spu/table.md", "spu/wan_ours_spu_published.png"),
                       _copy("results/spu/results.json", "spu/results.json"),
                       "--arch / --agreement run SecretFlow SPU in its own environment (make spu-env), absent here: "
                       "only the rendering of a committed run", True),
    "transport_bench": Smoke(("benchmarks/transport_bench.py", "--model", "vit_2_4_8", "--warmup", "0", "--repeats", "1",
                              "--out", "{tmp}/transport_bench.json"), ("transport_bench.json",)),
}


def test_every_smoke_entry_is_a_script() -> None:
    stale = sorted(set(SMOKE) - set(SCRIPTS))
    assert not stale, f"SMOKE lists scripts that benchmarks/ no longer has: {stale}"


@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")  # runpy, benign
@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if name not in SMOKE:
        pytest.fail(f"benchmarks/{name}.py has no smoke entry: add its smallest mode to SMOKE in {Path(__file__).name}")
    smoke = SMOKE[name]
    if not smoke.argv:
        importlib.import_module(f"benchmarks.{name}")
        return
    if smoke.setup:
        smoke.setup(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in smoke.argv]
    if smoke.in_process:
        assert argv[0] == "-m"
        monkeypatch.setenv("MPLBACKEND", "Agg")
        monkeypatch.setattr(sys, "argv", [argv[1], *argv[2:]])
        try:
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            assert exc.code in (None, 0), f"{' '.join(argv)} exited {exc.code}"
    else:
        _run(name, argv)
    for out in smoke.outputs:
        assert (tmp_path / out).is_file() and (tmp_path / out).stat().st_size > 0, f"{name} did not write {out}"


def _run(name: str, argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, f"{name}: {' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
