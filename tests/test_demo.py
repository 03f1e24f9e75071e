"""``mpcvit demo`` and ``mpcvit.localstack``: the four local processes come up, classify real images
privately with the plaintext model's classes, and leave no process behind.

Leftovers are found by a marker: the demo runs with a unique ``MPCVIT_TEST_TAG`` in its environment,
which every child and grandchild inherits; after it exits, no process may still carry the tag.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.commands.demo import find_checkpoint, pick_images, summarise_costs
from mpcvit.localstack import Endpoints, LocalStack, RoleFailed, StackConfig, coordinator_ready, free_ports, http_health, tcp_ready

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
    return {**os.environ, "MPCVIT_TEST_TAG": tag, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


def _role_pid(tag: str, role: str) -> int:
    """The pid of a demo role (``dealer``, ``party0``, ``party1``, ``coordinator``) among the tagged processes."""
    want = {"dealer": ["dealer"], "party0": ["party", "--rank", "0"], "party1": ["party", "--rank", "1"],
            "coordinator": ["serve"]}[role]
    for pid in processes_tagged(tag):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "mpcvit.cli" in argv:
            rest = argv[argv.index("mpcvit.cli") + 1:]
            if rest[:len(want)] == want:
                return pid
    raise AssertionError(f"no live {role} process among {processes_tagged(tag)}")


def _wait_healthy(url: str, limit_s: float = 180.0) -> None:
    end = time.monotonic() + limit_s
    while not coordinator_ready(http_health(f"{url}/v1/health")):
        assert time.monotonic() < end, f"{url} did not report healthy again"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 420)
def test_demo_end_to_end_survives_each_role_dying_then_ctrl_c(tmp_path: Path) -> None:
    """``mpcvit demo --images 2 --keep-running`` with the digits model; each role killed; then Ctrl-C.

    One start of the four processes (they take a while on 2 cores) checks all of it:

    * the two secure classes equal the plaintext model's and costs are reported; the page URL answers health;
    * each role in turn (party 1, party 0, dealer, coordinator) is SIGKILLed while a private request is
      in flight: that request may fail (a clean error), the demo says it started the role again, and the
      next request -- no manual step -- gives the plaintext model's class;
    * SIGINT stops every process and the demo exits 0.
    """
    model, tag, out = _digits_model(), uuid.uuid4().hex, tmp_path / "demo.json"
    argv = [sys.executable, "-m", "mpcvit.cli", "demo", "--images", "2", "--model", model, "--json", str(out),
            "--keep-running"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=_demo_env(tag), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    def next_line_starting(prefix: str, limit_s: float = DEMO_TIMEOUT_S) -> str:
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            try:
                seen.append(lines.get(timeout=1.0))
            except queue.Empty:
                continue
            if seen[-1].startswith(prefix):
                return seen[-1]
        raise AssertionError(f"no line starting {prefix!r}:\n{''.join(seen)}")

    threading.Thread(target=read, daemon=True).start()
    try:
        ready = next_line_starting("ready in ")
        ca = Path(ready.split("(logs in ", 1)[1].rstrip().rstrip(")")).parent / "certs" / "ca" / "ca.pem"
        url = next_line_starting("serving:").split("open ", 1)[1].split()[0].rstrip("/")
        assert next_line_starting("CA certificate (ca.pem, for private clients): ").split(": ", 1)[1].strip() == str(ca)
        command = next_line_starting("classify an image privately: ")
        assert f"classify IMAGE.png --server {url} --model {model} --ca " in command and command.rstrip().endswith(str(ca))
        assert coordinator_ready(http_health(f"{url}/v1/health"))
        _kill_each_role_mid_request(tag, url, ca, model, next_line_starting)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # where is it stuck? faulthandler prints every thread's stack on SIGABRT
            proc.send_signal(signal.SIGABRT)
            time.sleep(2)
            while not lines.empty():
                seen.append(lines.get())
            raise AssertionError("the demo did not stop within 60 s of Ctrl-C:\n" + "".join(seen[-200:])) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = wait_no_tagged(tag)
    time.sleep(0.2)  # the reader thread drains the pipe's last lines
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    assert proc.returncode == 0, output
    assert "agreement with the plaintext model: 2/2" in output
    assert "stopped dealer, parties and coordinator" in output and "logs are kept" not in output
    assert "WARNING mpcvit.localstack" not in output  # each restart is said once, by the "restart:" line
    result = json.loads(out.read_text())
    assert result["model"] == model and len(result["rows"]) == 2
    for row in result["rows"]:
        assert row["private_class"] == row["plaintext_class"] and row["agree"], row
        assert row["max_logit_error"] < 0.5, row
        assert row["rounds"] > 0 and row["bytes"] > 0 and row["seconds"] > 0, row
    assert left == [], f"processes left behind: {left}"


def _kill_each_role_mid_request(tag: str, url: str, ca: Path, model: str, next_line_starting: Any) -> None:
    from mpcvit.client import PrivateClient

    net, meta = load_checkpoint(find_checkpoint(CHECKPOINTS, model))
    _, images, _ = pick_images(str(meta.get("dataset", "digits")), 2)
    with torch.no_grad():
        expected = net(normalise_input(images, meta)).argmax(dim=-1).tolist()

    def classify(i: int) -> Any:
        with PrivateClient(url, ca=ca, timeout=120) as client:
            return client.classify(images[i], model=model)

    for n, role in enumerate(("party1", "party0", "dealer", "coordinator")):
        pid = _role_pid(tag, role)
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(classify, n % 2)
            os.kill(pid, signal.SIGKILL)
            try:  # the request that was in flight: its answer, or a clean error (503, 504, a closed connection)
                res = in_flight.result(timeout=180)
                assert res.class_index == expected[n % 2], role
            except AssertionError:
                raise
            except Exception as exc:  # noqa: BLE001
                assert not isinstance(exc, TimeoutError), f"the request in flight when {role} died hung: {exc}"
        line = next_line_starting("restart: ", limit_s=60)
        assert line.startswith(f"restart: {role} was killed by SIGKILL; started it again (restart 1 of at most 3"), line
        _wait_healthy(url)
        res = classify(1 - n % 2)  # the next request, no manual step in between
        assert res.class_index == expected[1 - n % 2], (role, res)
        assert res.costs["total"]["rounds"] > 0


def test_each_local_process_gets_only_its_own_certificate_directory(tmp_path: Path) -> None:
    stack = LocalStack(StackConfig(models_dir=tmp_path, model="m", workdir=tmp_path))
    ep = Endpoints(dealer="127.0.0.1:1", party0="127.0.0.1:2", party1="127.0.0.1:3", coordinator_url="http://127.0.0.1:4")
    for role, argv in stack._commands(ep).items():
        assert argv[argv.index("--certs") + 1] == str(tmp_path / "certs" / role), role
    assert stack.client_trust() == {"ca": tmp_path / "certs" / "ca" / "ca.pem"}
    insecure = LocalStack(StackConfig(models_dir=tmp_path, model="m", workdir=tmp_path, insecure=True))
    assert all("--certs" not in argv and "--insecure" in argv for argv in insecure._commands(ep).values())
    assert insecure.client_trust() == {"trust_coordinator": True}


def test_keep_running_says_where_ca_pem_is_and_how_to_classify(tmp_path: Path) -> None:
    from mpcvit.commands.demo import client_hint

    stack = LocalStack(StackConfig(models_dir=tmp_path, model="m", workdir=tmp_path / "work dir"))
    ca = tmp_path / "work dir" / "certs" / "ca" / "ca.pem"
    where, command = client_hint(stack, "http://127.0.0.1:4", "vit_2_4_8")
    assert where == f"CA certificate (ca.pem, for private clients): {ca}"
    assert " classify IMAGE.png --server http://127.0.0.1:4 --model vit_2_4_8 --ca " in command
    assert command.endswith(f"--ca '{ca}'")  # quoted: ready to paste
    insecure = LocalStack(StackConfig(models_dir=tmp_path, model="m", workdir=tmp_path, insecure=True))
    (line,) = client_hint(insecure, "http://127.0.0.1:4", "vit_2_4_8", tmp_path / "a.png")
    assert "no CA (--insecure)" in line and f"image=@{tmp_path / 'a.png'}" in line


# -- supervision: a role that dies is started again, up to a limit ------------------------


def _wait_exit(stack: LocalStack, role: str) -> None:
    proc = next(p for p in stack.procs if p.role == role)
    proc.popen.wait(timeout=30)


def test_supervise_starts_a_dead_role_again_and_keeps_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = uuid.uuid4().hex
    monkeypatch.setenv("MPCVIT_TEST_TAG", tag)
    stack = LocalStack(StackConfig(models_dir=tmp_path, model="none", workdir=tmp_path, grace_s=1.0, max_restarts=2))
    stack._make_workdir()
    marker = tmp_path / "ran-once"
    script = (f"import pathlib, sys, time; m = pathlib.Path({str(marker)!r})\n"
              "if not m.exists():\n    m.touch(); print('first run, failing', flush=True); sys.exit(3)\n"
              "print('second run, serving', flush=True); time.sleep(600)")
    stack._spawn("party1", [sys.executable, "-c", script])
    try:
        _wait_exit(stack, "party1")
        messages = stack.supervise()
        assert len(messages) == 1 and messages[0].startswith("party1 exited with code 3; started it again"), messages
        assert "restart 1 of at most 2" in messages[0] and str(tmp_path / "logs" / "party1.log") in messages[0]
        end = time.monotonic() + 30
        while "second run" not in (tmp_path / "logs" / "party1.log").read_text() and time.monotonic() < end:
            time.sleep(0.1)
        text = (tmp_path / "logs" / "party1.log").read_text()
        assert text.index("first run, failing") < text.index("party1 exited with code 3; started again") < text.index("second run")
        assert stack.supervise() == [] and stack.procs[0].popen.poll() is None  # alive: nothing to do
    finally:
        stack.stop()
    assert wait_no_tagged(tag) == []


def test_supervise_gives_up_past_the_restart_limit_and_the_logs_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    tag = uuid.uuid4().hex
    monkeypatch.setenv("MPCVIT_TEST_TAG", tag)
    stack = LocalStack(StackConfig(models_dir=Path("."), model="none", grace_s=1.0, max_restarts=1))
    stack._make_workdir()  # a temporary work directory, as the demo has
    (stack.workdir / "certs" / "party0").mkdir(parents=True)
    (stack.workdir / "certs" / "party0" / "party0.key").write_text("secret")
    stack._spawn("dealer", [sys.executable, "-c", "import sys; print('dealer crashed', flush=True); sys.exit(5)"])
    try:
        _wait_exit(stack, "dealer")
        assert len(stack.supervise()) == 1
        _wait_exit(stack, "dealer")
        with pytest.raises(RoleFailed, match="dealer exited with code 5 again after 1 restarts") as err:
            stack.supervise()
    except BaseException as exc:
        stack.__exit__(type(exc), exc, None)
        raise
    stack.__exit__(RoleFailed, err.value, None)  # how the demo's `with` block ends on that failure
    assert "dealer crashed" in str(err.value)  # the tail of its log
    kept = stack.logs_kept
    assert kept is not None and (kept / "dealer.log").read_text().count("dealer crashed") == 2
    assert not (kept.parent / "certs").exists()  # keys are never left behind
    shutil.rmtree(kept.parent)
    assert wait_no_tagged(tag) == []


def test_a_stack_with_two_pairs_starts_replicas_with_their_party_s_certificate(tmp_path: Path) -> None:
    stack = LocalStack(StackConfig(models_dir=tmp_path, model="m", workdir=tmp_path, pairs=2, network="wan"))
    ep = Endpoints(dealer="127.0.0.1:1", party0="127.0.0.1:2", party1="127.0.0.1:3", coordinator_url="http://127.0.0.1:4",
                   more_pairs=(("127.0.0.1:5", "127.0.0.1:6"),))
    commands = stack._commands(ep)
    assert list(commands) == ["dealer", "party0", "party1", "party0-pair1", "party1-pair1", "coordinator"]
    replica = commands["party1-pair1"]
    assert replica[replica.index("--certs") + 1] == str(tmp_path / "certs" / "party1")  # replicas share party 1's key
    assert replica[replica.index("--listen") + 1] == "127.0.0.1:6" and replica[replica.index("--peer") + 1] == "127.0.0.1:5"
    assert replica[replica.index("--network") + 1] == "wan"
    serve = commands["coordinator"]
    assert "--party0" not in serve
    assert [serve[i + 1] for i, a in enumerate(serve) if a == "--pair"] == ["127.0.0.1:2,127.0.0.1:3", "127.0.0.1:5,127.0.0.1:6"]


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--pairs", "0", "--pairs must be at least 1, got 0"),
    ("--max-restarts", "-1", "--max-restarts must be 0 or more, got -1"),
])
def test_demo_refuses_bad_numbers_in_one_line(flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mpcvit.cli import main

    assert main(["demo", flag, value]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"mpcvit demo: error: {message}", err


def test_a_role_ends_with_the_stack_that_started_it(tmp_path: Path) -> None:
    """A role sets its own parent-death signal at start (no Python runs between fork and exec): SIGKILL the process
    that started it, and the role is gone within seconds."""
    import signal
    import subprocess
    import sys
    import time

    child = tmp_path / "child.pid"
    (tmp_path / "role.py").write_text(
        "import os, time\n"
        "from mpcvit.localstack import die_with_parent_from_env\n"
        "die_with_parent_from_env()\n"
        f"open({str(child)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    starter = (
        "import os, subprocess, sys, time\n"
        "from mpcvit.localstack import PARENT_ENV\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'role.py')!r}], env={{**os.environ, PARENT_ENV: str(os.getpid())}},"
        " start_new_session=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not child.exists() or not child.read_text():
        assert time.monotonic() < deadline, "the role did not start"
        time.sleep(0.1)
    pid = int(child.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower():
        assert time.monotonic() < deadline, "the role outlived the stack that started it"
        time.sleep(0.1)
