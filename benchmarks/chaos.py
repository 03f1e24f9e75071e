"""Chaos test of the local stack: faults in every role while clients classify, and every answer checked.

Starts the local stack (``mpcvit.localstack``: dealer with ``--state``, so its
master secret survives its restarts, two parties, the coordinator; mutual TLS)
serving a small digits checkpoint, and runs ``--clients`` threads, each a
``PrivateClient`` (the SDK) doing private classifications one after another
on digits test images. Meanwhile a fault thread injects, in turn and again
and again, faults into the roles:

* ``kill:<role>``: SIGKILL the role's process group, start it again with the
  same command and port (``LocalStack.supervise``), for the dealer, party 0,
  party 1 and the coordinator;
* ``stop:<role>``: SIGSTOP the role for a few seconds, then SIGCONT;
* ``kill_dealer_mid_prefetch``: a burst of extra requests; as soon as the first
  of them is answered (the parties then fetch the next material ahead), SIGKILL
  the dealer and start it again;
* ``kill_both_parties``: SIGKILL party 0 and party 1 at once, start both again.

After each fault it waits until the service answers again: the recovery time
is the time from the role being back (listening again, or SIGCONTed) to the
first successful answer to a request sent after that. The next fault comes a
few seconds after the recovery.

Every HTTP 200 answer is opened and compared with the plaintext model's
logits: a *wrong* answer is one whose class differs or whose logits are off by
more than ``--tolerance``. The SDK's integrity net refuses garbage logits
(``mpcvit.client.ImplausibleOutput``, from mismatched dealer material); such a
200 is counted apart (``garbage_200_refused_by_sdk``), and is never returned to
the caller. Every non-200 response (including the 503s the SDK retries
itself) is recorded with its status, message, and the fault in effect, and
so is every request that failed without a response (connection refused or
reset while the coordinator is down).

    python -m benchmarks.chaos --minutes 6 --clients 8 --out results/chaos/full.json
    python -m benchmarks.chaos --quick --out chaos-quick.json       # the quick tier: < 2 min on 2 cores

The JSON holds the command, the machine, the totals (answered, wrong, errors
by status, faults by kind, recovery times), every fault and every error. The
process exits 1 if any answer was wrong (or a 200 was garbage), 2 if the
service did not answer again after a fault, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("chaos")

ROLES = ("dealer", "party0", "party1", "coordinator")
FULL_CYCLE = (
    "kill:dealer", "kill:party0", "stop:dealer", "kill:party1", "kill:coordinator", "stop:party0",
    "kill_dealer_mid_prefetch", "stop:party1", "kill_both_parties", "stop:coordinator",
)
QUICK_FAULTS = ("kill:party1", "stop:dealer", "kill_dealer_mid_prefetch", "kill:coordinator", "kill_both_parties")


# -- what the clients saw ---------------------------------------------------------


@dataclass
class Fault:
    kind: str
    roles: list[str]
    t_inject: float  # seconds since the run's start
    t_back: float | None = None  # the role(s) listening again / SIGCONTed
    t_recovered: float | None = None  # the first successful answer to a request sent after t_back
    detail: str = ""

    @property
    def recovery_s(self) -> float | None:
        if self.t_back is None or self.t_recovered is None:
            return None
        return round(self.t_recovered - self.t_back, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "roles": self.roles, "t_inject_s": round(self.t_inject, 3),
            "t_back_s": None if self.t_back is None else round(self.t_back, 3),
            "back_after_s": None if self.t_back is None else round(self.t_back - self.t_inject, 3),
            "recovered": self.t_recovered is not None, "recovery_s": self.recovery_s, "detail": self.detail,
        }


@dataclass
class Ledger:
    """Everything the clients and the fault thread saw, under one lock."""

    t0: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: int = 0  # classify() returned a result
    http_200: int = 0  # every 200 from /v1/classify that was opened
    wrong: list[dict[str, Any]] = field(default_factory=list)  # returned to the caller and wrong
    garbage: list[dict[str, Any]] = field(default_factory=list)  # a 200 whose logits the SDK refused
    max_logit_error: float = 0.0
    responses: Counter = field(default_factory=Counter)  # every non-200 HTTP response, by status
    failures: Counter = field(default_factory=Counter)  # classify() calls that raised, by cause
    errors: list[dict[str, Any]] = field(default_factory=list)  # each non-200 / failure, with the fault in effect
    successes: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered), seconds since t0
    faults: list[Fault] = field(default_factory=list)
    current: str = "none"  # the fault in effect (from its injection to its recovery)
    last: str = "none"
    success_event: threading.Condition = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.success_event = threading.Condition(self.lock)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def fault_label(self) -> str:
        return self.current if self.current != "none" else f"none (after {self.last})"

    def error(self, where: str, status: str, message: str) -> None:
        with self.lock:
            self.errors.append({"t_s": round(self.now(), 3), "where": where, "status": status,
                                "message": message[:300], "fault": self.fault_label()})


# -- the clients ------------------------------------------------------------------


_opened = threading.local()


def _install_recorder() -> None:
    """Wrap the SDK's ``open_output`` so that every opened 200 answer is seen, garbage included."""
    import mpcvit.client as sdk

    if getattr(sdk.open_output, "_chaos", False):
        return
    original = sdk.open_output

    def recording_open_output(request: Any, shares: Any, keys: Any, bits: int = sdk.DEFAULT_PRECISION_BITS) -> torch.Tensor:
        seen = getattr(_opened, "answers", None)
        try:
            logits = original(request, shares, keys, bits)
        except sdk.ImplausibleOutput as exc:
            if seen is not None:
                seen.append(("garbage", str(exc)))
            raise
        if seen is not None:
            seen.append(("logits", logits.detach().clone()))
        return logits

    recording_open_output._chaos = True  # type: ignore[attr-defined]
    sdk.open_output = recording_open_output  # type: ignore[assignment]


def _message(response: Any) -> str:
    try:
        response.read()
        body = response.json()
        return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except Exception:  # noqa: BLE001
        return response.text[:300] if hasattr(response, "text") else ""


class Clients:
    """``count`` threads classifying in a loop until ``stop`` is set; every answer checked against ``expected``."""

    def __init__(self, url: str, trust: dict[str, Any], model: str, images: torch.Tensor, expected: torch.Tensor,
                 tolerance: float, ledger: Ledger, timeout_s: float) -> None:
        self.url, self.trust, self.model = url, trust, model
        self.images, self.expected, self.tolerance = images, expected, tolerance
        self.ledger, self.timeout_s = ledger, timeout_s
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._rng = random.Random(0)

    def _client(self) -> Any:
        import httpx

        from mpcvit.client import PrivateClient

        def on_response(response: httpx.Response) -> None:
            if response.status_code != 200:
                msg = _message(response)
                with self.ledger.lock:
                    self.ledger.responses[str(response.status_code)] += 1
                self.ledger.error(f"{response.request.method} {response.request.url.path}", str(response.status_code), msg)

        http = httpx.Client(base_url=self.url, timeout=self.timeout_s, event_hooks={"response": [on_response]})
        return PrivateClient(self.url, http_client=http, timeout=self.timeout_s, **self.trust)

    def classify_once(self, client: Any, i: int) -> bool:
        """One private classification of image ``i``; True when it was answered."""
        import httpx

        from mpcvit.client import ImplausibleOutput, ServerError

        _opened.answers = []
        sent = self.ledger.now()
        outcome: str | None = None
        result = None
        try:
            result = client.classify(self.images[i], model=self.model)
        except ServerError as exc:
            outcome = f"http {exc.status_code}"
        except ImplausibleOutput as exc:
            outcome = "implausible twice"
            self.ledger.error("classify", outcome, str(exc))
        except httpx.HTTPError as exc:
            outcome = f"no response: {type(exc).__name__}"
            self.ledger.error("POST /v1/classify", outcome, str(exc) or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 (counted, never fatal to the client thread)
            outcome = f"exception: {type(exc).__name__}"
            self.ledger.error("classify", outcome, repr(exc))
        done = self.ledger.now()
        answers, _opened.answers = _opened.answers, None
        want = self.expected[i]
        with self.ledger.lock:
            for what, value in answers:
                self.ledger.http_200 += 1
                if what == "garbage":
                    self.ledger.garbage.append({"t_s": round(done, 3), "image": i, "message": value,
                                                "fault": self.ledger.fault_label()})
            if result is not None:
                got = torch.tensor(result.logits, dtype=torch.float64)
                err = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
                self.ledger.max_logit_error = max(self.ledger.max_logit_error, err)
                if got.shape != want.shape or int(got.argmax()) != int(want.argmax()) or err > self.tolerance:
                    self.ledger.wrong.append({"t_s": round(done, 3), "image": i, "class": int(got.argmax()) if got.numel() else None,
                                              "expected_class": int(want.argmax()), "max_logit_error": err,
                                              "request_id": result.request_id, "fault": self.ledger.fault_label()})
                self.ledger.answered += 1
                self.ledger.successes.append((sent, done))
                self.ledger.success_event.notify_all()
            else:
                self.ledger.failures[outcome or "unknown"] += 1
        return result is not None

    def _loop(self, k: int) -> None:
        rng = random.Random(k)
        with self._client() as client:
            while not self.stop.is_set():
                if not self.classify_once(client, rng.randrange(len(self.images))):
                    self.stop.wait(0.5)

    def start(self, count: int) -> None:
        for k in range(count):
            t = threading.Thread(target=self._loop, args=(k,), name=f"client-{k}", daemon=True)
            t.start()
            self.threads.append(t)

    def burst(self, count: int) -> list[threading.Thread]:
        """``count`` extra requests at once, each in its own thread and client."""
        def one(k: int) -> None:
            with self._client() as client:
                self.classify_once(client, (k * 7) % len(self.images))

        threads = [threading.Thread(target=one, args=(k,), name=f"burst-{k}", daemon=True) for k in range(count)]
        for t in threads:
            t.start()
        return threads

    def join(self, timeout_s: float) -> None:
        self.stop.set()
        end = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(0.1, end - time.monotonic()))


# -- the faults -------------------------------------------------------------------


class Faults:
    """Injects faults into the stack's roles, one at a time, and waits for the service to answer again."""

    def __init__(self, stack: Any, clients: Clients, ledger: Ledger, stop_s: tuple[float, float], calm_s: tuple[float, float],
                 recover_timeout_s: float, seed: int = 0) -> None:
        self.stack, self.clients, self.ledger = stack, clients, ledger
        self.stop_s, self.calm_s, self.recover_timeout_s = stop_s, calm_s, recover_timeout_s
        self.rng = random.Random(seed)

    def _proc(self, role: str) -> Any:
        return next(p for p in self.stack.procs if p.role == role)

    def _signal(self, role: str, sig: signal.Signals) -> None:
        try:
            os.killpg(self._proc(role).popen.pid, sig)
        except ProcessLookupError:
            pass

    def _kill(self, roles: list[str]) -> None:
        for role in roles:
            self._signal(role, signal.SIGKILL)
        for role in roles:
            self._proc(role).popen.wait(timeout=30)
        self.stack.supervise()  # starts them again (same command, port, certificates); it logs each restart

    def _wait_back(self, roles: list[str], limit_s: float = 120.0) -> bool:
        from mpcvit.localstack import http_health, tcp_ready

        ep = self.stack.endpoints
        end = time.monotonic() + limit_s
        pending = list(roles)
        while pending and time.monotonic() < end:
            for role in list(pending):
                if self._proc(role).popen.poll() is not None:
                    self.stack.supervise()  # died again while starting: start it again
                    continue
                if role == "coordinator":
                    ok = http_health(f"{ep.coordinator_url}/v1/health", timeout_s=2.0) is not None
                else:
                    ok = tcp_ready(getattr(ep, role), 0.5)
                if ok:
                    pending.remove(role)
            if pending:
                time.sleep(0.1)
        return not pending

    def inject(self, kind: str) -> Fault:
        """Inject one fault; returns once the roles are back (``t_back``), before the recovery."""
        ledger = self.ledger
        how, _, role = kind.partition(":")
        roles = {"kill_dealer_mid_prefetch": ["dealer"], "kill_both_parties": ["party0", "party1"]}.get(how, [role])
        fault = Fault(kind, roles, ledger.now())
        with ledger.lock:
            ledger.current = kind
            ledger.faults.append(fault)
        log.info("fault %d: %s", len(ledger.faults), kind)
        if how == "kill" or how == "kill_both_parties":
            self._kill(roles)
        elif how == "stop":
            pause = self.rng.uniform(*self.stop_s)
            self._signal(role, signal.SIGSTOP)
            time.sleep(pause)
            self._signal(role, signal.SIGCONT)
            fault.detail = f"stopped for {pause:.1f} s"
        elif how == "kill_dealer_mid_prefetch":
            with ledger.lock:
                before = len(ledger.successes)
            burst = self.clients.burst(8)
            end = time.monotonic() + 60
            with ledger.lock:  # the first answer after the burst went out: the parties now fetch ahead
                while len(ledger.successes) == before and time.monotonic() < end:
                    ledger.success_event.wait(0.5)
            time.sleep(self.rng.uniform(0.0, 0.2))
            fault.detail = f"SIGKILL {ledger.now() - fault.t_inject:.2f} s after a burst of {len(burst)} requests"
            self._kill(roles)
        else:
            raise ValueError(f"unknown fault {kind!r}")
        if not self._wait_back(roles):
            fault.detail += "; a role did not come back"
        fault.t_back = ledger.now()
        return fault

    def wait_recovered(self, fault: Fault) -> bool:
        ledger = self.ledger
        assert fault.t_back is not None
        end = time.monotonic() + self.recover_timeout_s
        with ledger.lock:
            while time.monotonic() < end:
                hit = [done for sent, done in ledger.successes if sent >= fault.t_back]
                if hit:
                    fault.t_recovered = min(hit)
                    break
                ledger.success_event.wait(0.5)
            ledger.last, ledger.current = fault.kind, "none"
        log.info("  %s: back after %.1f s, answering again %s", fault.kind, fault.t_back - fault.t_inject,
                 f"{fault.recovery_s:.1f} s later" if fault.recovery_s is not None else "NEVER (gave up)")
        return fault.t_recovered is not None

    def run(self, kinds: list[str] | tuple[str, ...], until: float, cycle: bool) -> None:
        """Faults from ``kinds`` in turn (over again when ``cycle``) until ``until`` (seconds since t0)."""
        i = 0
        while self.ledger.now() < until and not self.clients.stop.is_set():
            if i >= len(kinds) and not cycle:
                break
            time.sleep(self.rng.uniform(*self.calm_s))
            if self.ledger.now() >= until:
                break
            fault = self.inject(kinds[i % len(kinds)])
            self.wait_recovered(fault)
            i += 1


# -- the run ----------------------------------------------------------------------


def pick(checkpoint: Path, count: int, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits test images whose plaintext top-two logits are at least ``margin`` apart, and their logits (float64)."""
    from mpcvit.checkpoint import load_checkpoint, normalise_input
    from mpcvit.data import load_dataset

    net, meta = load_checkpoint(checkpoint)
    x = load_dataset("digits", "test").tensors[0]
    with torch.no_grad():
        logits = net(normalise_input(x, meta)).double()
    top2 = logits.topk(2, dim=-1).values
    keep = ((top2[:, 0] - top2[:, 1]) >= margin).nonzero().flatten()[:count]
    return x[keep], logits[keep]


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    s = sorted(values)
    return {"count": len(s), "min": round(s[0], 3), "p50": round(statistics.median(s), 3),
            "p90": round(s[min(len(s) - 1, int(0.9 * len(s)))], 3), "max": round(s[-1], 3), "mean": round(statistics.fmean(s), 3)}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


LOG_PATTERNS = {
    "coordinator: material mismatch, retried on fresh material": r"dealer material did not match",
    "coordinator: model loaded again on a restarted party": r"load(ed)? .* again|loaded again|reload",
    "parties: DATA_LOSS": r"DATA_LOSS",
    "any: Traceback": r"Traceback",
}


def scan_logs(logs: Path) -> dict[str, dict[str, int]]:
    """How often each pattern appears in each role's log (evidence for the report)."""
    out: dict[str, dict[str, int]] = {}
    for path in sorted(logs.glob("*.log")):
        text = path.read_text(errors="replace")
        counts = {name: len(re.findall(rx, text, flags=re.IGNORECASE)) for name, rx in LOG_PATTERNS.items()}
        out[path.stem] = {k: v for k, v in counts.items() if v}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mpcvit.localstack import LocalStack, StackConfig

    _install_recorder()
    checkpoint = args.models_dir / args.model
    images, expected = pick(checkpoint, args.images, args.margin)
    os.environ.setdefault("MPCVIT_BATCH_SIZE", str(args.batch_size))
    os.environ.setdefault("MPCVIT_REQUEST_TIMEOUT_S", "60")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = StackConfig(models_dir=args.models_dir, model=args.model, max_restarts=10_000, restart_window_s=60.0)
    t_start = time.monotonic()
    stack = LocalStack(config)
    ledger = Ledger()
    startup_s = elapsed = 0.0
    failed = True
    try:
        stack.start()
        startup_s = time.monotonic() - t_start
        assert stack.endpoints is not None
        log.info("stack ready in %.1f s at %s", startup_s, stack.endpoints.coordinator_url)
        ledger.t0 = time.monotonic()
        clients = Clients(stack.endpoints.coordinator_url, stack.client_trust(), args.model, images, expected,
                          args.tolerance, ledger, timeout_s=args.client_timeout)
        clients.start(args.clients)
        faults = Faults(stack, clients, ledger, stop_s=(args.stop_min, args.stop_max), calm_s=(args.calm_min, args.calm_max),
                        recover_timeout_s=args.recover_timeout, seed=args.seed)
        budget_s = args.seconds - (time.monotonic() - t_start) if args.quick else args.minutes * 60
        # no new fault in the last stretch, so that the last one's recovery fits in the budget
        faults.run(QUICK_FAULTS if args.quick else FULL_CYCLE, until=ledger.now() + max(0.0, budget_s - args.tail),
                   cycle=not args.quick)
        while ledger.now() < budget_s and not args.quick:
            time.sleep(1.0)
        if args.quick:  # a few more answers with no fault after the last recovery
            time.sleep(min(3.0, max(0.0, budget_s - ledger.now())))
        clients.join(args.client_timeout + 5)
        elapsed = ledger.now()
        failed = False
    finally:
        logs = stack.workdir / "logs"
        findings = scan_logs(logs) if logs.is_dir() else {}
        if args.logs is not None and logs.is_dir():
            shutil.copytree(logs, args.logs, dirs_exist_ok=True)
        stack.stop(keep_logs=failed)
    faults_list = ledger.faults
    recovery = [f.recovery_s for f in faults_list if f.recovery_s is not None]
    by_kind: dict[str, list[float]] = {}
    for f in faults_list:
        if f.recovery_s is not None:
            by_kind.setdefault(f.kind, []).append(f.recovery_s)
    not_recovered = [f.kind for f in faults_list if f.recovery_s is None]
    roles_faulted = sorted({r for f in faults_list for r in f.roles})
    return {
        "benchmark": "chaos: private classifications under faults in every role, every 200 answer checked against the plaintext model",
        "command": "python -m benchmarks.chaos " + " ".join(args.argv),
        "model": args.model,
        "settings": {
            "clients": args.clients, "minutes": None if args.quick else args.minutes, "quick": args.quick,
            "tolerance": args.tolerance, "images": len(images), "min_top2_margin": args.margin,
            "coordinator_batch_size": int(os.environ["MPCVIT_BATCH_SIZE"]),
            "stop_s": [args.stop_min, args.stop_max], "calm_s": [args.calm_min, args.calm_max],
            "stack": "local: dealer (--state) + party 0 + party 1 + coordinator, loopback, mutual TLS",
        },
        "startup_s": round(startup_s, 1),
        "seconds": round(elapsed, 1),
        "totals": {
            "answered": ledger.answered,
            "http_200_opened": ledger.http_200,
            "wrong": len(ledger.wrong),
            "garbage_200_refused_by_sdk": len(ledger.garbage),
            "max_logit_error": round(ledger.max_logit_error, 5),
            "failed_requests_by_cause": dict(ledger.failures.most_common()),
            "non_200_responses_by_status": dict(ledger.responses.most_common()),
            "errors_by_status": dict(Counter(e["status"] for e in ledger.errors).most_common()),
            "errors_without_fault_in_effect": sum(e["fault"].startswith("none") for e in ledger.errors),
            "faults": len(faults_list),
            "faults_by_kind": dict(Counter(f.kind for f in faults_list)),
            "roles_faulted": roles_faulted,
            "not_recovered": not_recovered,
            "recovery_s": _summary(recovery),
            "recovery_s_by_kind": {k: _summary(v) for k, v in sorted(by_kind.items())},
        },
        "faults": [f.to_dict() for f in faults_list],
        "wrong_answers": ledger.wrong,
        "garbage_200": ledger.garbage,
        "errors": ledger.errors[:2000],
        "errors_left_out": max(0, len(ledger.errors) - 2000),
        "log_findings": findings,
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "commit": _git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=6.0, help="how long the clients run under faults (full tier)")
    p.add_argument("--clients", type=int, default=8, help="client threads classifying in a loop")
    p.add_argument("--quick", action="store_true",
                   help=f"the quick tier: 4 clients, the faults {', '.join(QUICK_FAULTS)} once each, about {90} s in all")
    p.add_argument("--seconds", type=float, default=105.0, help="with --quick: the whole run's budget, stack start included")
    p.add_argument("--model", default="vit_2_4_8")
    p.add_argument("--models-dir", type=Path, default=ROOT / "checkpoints" / "digits")
    p.add_argument("--images", type=int, default=64, help="digits test images cycled through")
    p.add_argument("--margin", type=float, default=1.0, help="only images whose plaintext top-two logits are this far apart")
    p.add_argument("--tolerance", type=float, default=0.5, help="largest logit error of a right answer")
    p.add_argument("--batch-size", type=int, default=8, help="the coordinator's batch size")
    p.add_argument("--client-timeout", type=float, default=90.0)
    p.add_argument("--recover-timeout", type=float, default=120.0, help="how long to wait for an answer after a fault")
    p.add_argument("--stop-min", type=float, default=2.0)
    p.add_argument("--stop-max", type=float, default=5.0)
    p.add_argument("--calm-min", type=float, default=6.0, help="seconds between a recovery and the next fault")
    p.add_argument("--calm-max", type=float, default=12.0)
    p.add_argument("--tail", type=float, default=20.0, help="seconds at the end with no new fault")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logs", type=Path, default=None, help="copy the roles' logs here at the end")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "chaos" / "full.json")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.quick:
        if "--clients" not in args.argv:
            args.clients = 4
        args.calm_min, args.calm_max = min(args.calm_min, 1.0), min(args.calm_max, 2.0)
        args.stop_min, args.stop_max = min(args.stop_min, 2.0), min(args.stop_max, 3.0)
        args.recover_timeout = min(args.recover_timeout, 45.0)
        args.tail = 0.0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("mpcvit.client").setLevel(logging.WARNING)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    t = result["totals"]
    log.info("answered %d, wrong %d, garbage 200s %d, faults %d %s, not recovered %s, recovery %s; wrote %s",
             t["answered"], t["wrong"], t["garbage_200_refused_by_sdk"], t["faults"], t["faults_by_kind"],
             t["not_recovered"], t["recovery_s"], args.out)
    if t["wrong"] or t["garbage_200_refused_by_sdk"]:
        return 1
    if t["not_recovered"]:
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
