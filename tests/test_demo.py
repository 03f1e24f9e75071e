"""``mpcvit demo`` and ``mpcvit.localstack``: the four local processes come up, classify real images
privately with the plaintext model's classes, and leave no process behind.

Leftovers are found by a marker: the demo runs with a unique ``MPCVIT_TEST_TAG`` in its environment,
which every child and grandchild inherits; after it exits, no process may still carry the tag.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mpcvit.commands.demo import find_checkpoint, summarise_costs
from mpcvit.localstack import Endpoints, LocalStack, StackConfig, coordinator_ready, free_ports, http_health, tcp_ready

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
DEMO_TIMEOUT_S = 300


def processes_tagged(tag: str) -> list[int]:
    """Pids of live processes whose environment holds ``MPCVIT_TEST_TAG=tag`` (zombies excluded)."""
    marker = f"MPCVIT_TEST_TAG={tag}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def wait_no_tagged(tag: str, timeout_s: float = 10.0) -> list[int]:
    end = time.monotonic() + timeout_s
    while (left := processes_tagged(tag)) and time.monotonic() < end:
        time.sleep(0.2)
    return left


# -- unit tests: no secure computation ----------------------------------------------


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(4)
    assert len(set(ports)) == 4 and all(p > 0 for p in ports)
    assert not any(tcp_ready(f"127.0.0.1:{p}", 0.2) for p in ports)


@pytest.mark.parametrize(
    ("body", "model", "ready"),
    [
        (None, None, False),
        ({"status": "ok"}, None, True),
        ({"ok": True, "parties": [], "dealer_reachable": True}, "m", True),
        ({"ok": False, "parties": []}, None, False),
        ({"status": "degraded"}, None, False),
        ({"status": "ok", "models": ["a", "b"]}, "b", True),
        ({"status": "ok", "models": [{"name": "a"}]}, "b", False),
    ],
)
def test_coordinator_ready(body: dict | None, model: str | None, ready: bool) -> None:
    assert coordinator_ready(body, model) is ready


def test_summarise_costs_shapes() -> None:
    assert summarise_costs({"rounds": 10, "bytes_sent": 5, "bytes_received": 7}) == (10, 12)
    per_party = {"parties": [{"rounds": 9, "bytes_sent": 100}, {"rounds": 10, "bytes_sent": 50}]}
    assert summarise_costs(per_party) == (10, 150)
    assert summarise_costs({}) == (None, None)
    coordinator = {"total": {"rounds": 40, "bytes": 1000, "seconds": 0.5}, "parties": [{"rounds": 40, "bytes_sent": 1}]}
    assert summarise_costs(coordinator) == (40, 1000)


def test_stop_kills_the_whole_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that ignores SIGTERM and has a grandchild is gone after stop()."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv("MPCVIT_TEST_TAG", tag)
    stack = LocalStack(StackConfig(models_dir=tmp_path, model="none", workdir=tmp_path, grace_s=1.0))
    (tmp_path / "logs").mkdir()
    script = "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
             "subprocess.Popen(['sleep', '600']); time.sleep(600)"
    stack._spawn("stubborn", [sys.executable, "-c", script])
    end = time.monotonic() + 10
    while len(processes_tagged(tag)) < 2 and time.monotonic() < end:
        time.sleep(0.1)
    assert len(processes_tagged(tag)) == 2
    stack.stop()
    assert wait_no_tagged(tag) == []


# -- end to end: the four processes, mutual TLS, the private REST path -------------------


def _digits_model() -> str:
    for name in ("mpcvit_2_4_8", "relu_2_4_8", "vit_2_4_8"):
        try:
            find_checkpoint(CHECKPOINTS, name)
            return name
        except ValueError:
            continue
    pytest.skip(f"no digits checkpoint under {CHECKPOINTS}")


def _demo_env(tag: str) -> dict[str, str]:
    return {**os.environ, "MPCVIT_TEST_TAG": tag, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_demo_end_to_end_then_ctrl_c(tmp_path: Path) -> None:
    """``mpcvit demo --images 2 --keep-running`` with the digits model, then Ctrl-C.

    One start of the four processes (they take a while on 2 cores) checks both: the two secure classes
    equal the plaintext model's and costs are reported; the page URL it prints answers health; SIGINT
    stops every process and the demo exits 0.
    """
    model, tag, out = _digits_model(), uuid.uuid4().hex, tmp_path / "demo.json"
    argv = [sys.executable, "-m", "mpcvit.cli", "demo", "--images", "2", "--model", model, "--json", str(out),
            "--keep-running"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=_demo_env(tag), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving:"):
                break
        assert lines and lines[-1].startswith("serving:"), "".join(lines)
        url = lines[-1].split("open ", 1)[1].split()[0].rstrip("/")
        assert coordinator_ready(http_health(f"{url}/v1/health"))
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = wait_no_tagged(tag)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "agreement with the plaintext model: 2/2" in output
    assert "stopped dealer, parties and coordinator" in rest
    result = json.loads(out.read_text())
    assert result["model"] == model and len(result["rows"]) == 2
    for row in result["rows"]:
        assert row["private_class"] == row["plaintext_class"] and row["agree"], row
        assert row["max_logit_error"] < 0.5, row
        assert row["rounds"] > 0 and row["bytes"] > 0 and row["seconds"] > 0, row
    assert left == [], f"processes left behind: {left}"


def test_each_local_process_gets_only_its_own_certificate_directory(tmp_path: Path) -> None:
    stack = LocalStack(StackConfig(models_dir=tmp_path, model="m", workdir=tmp_path))
    ep = Endpoints(dealer="127.0.0.1:1", party0="127.0.0.1:2", party1="127.0.0.1:3", coordinator_url="http://127.0.0.1:4")
    for role, argv in stack._commands(ep).items():
        assert argv[argv.index("--certs") + 1] == str(tmp_path / "certs" / role), role
    assert stack.client_trust() == {"ca": tmp_path / "certs" / "ca" / "ca.pem"}
    insecure = LocalStack(StackConfig(models_dir=tmp_path, model="m", workdir=tmp_path, insecure=True))
    assert all("--certs" not in argv and "--insecure" in argv for argv in insecure._commands(ep).values())
    assert insecure.client_trust() == {"trust_coordinator": True}
