"""The demo's four processes (dealer, party 0, party 1, coordinator) on loopback.

The same topology as ``docker-compose.yml``, without Docker: ``LocalStack``
runs the PKI workflow in a work directory (``mpcvit certs local``: a CA in
``certs/ca/``, and per role its own key, request and signed certificate in
``certs/<role>/``), gives each process only its own directory
(``--certs certs/<role>``: its key, its certificate, ``ca.pem``; the CA key
stays in ``certs/ca/``, which no process reads), picks
free loopback ports, starts each role as ``python -m mpcvit.cli ROLE ...`` in
its own process group (its own session), waits until the coordinator reports
itself and both parties healthy, and stops everything on exit:

* ``stop()`` sends SIGTERM to each process group (coordinator first, dealer
  last), waits ``grace_s``, then SIGKILLs the groups still alive, so no
  grandchild outlives the demo either;
* on Linux each child also gets ``PR_SET_PDEATHSIG = SIGTERM``, so it ends
  even if the demo itself is SIGKILLed and never reaches ``stop()``.

Each process writes its log to ``<workdir>/logs/<role>.log``; a process that
dies while starting fails ``start()`` with the tail of its log.

Supervision (``mpcvit demo --keep-running``): ``supervise()`` starts again,
with the same command, ports and certificates, every role that has died, and
says so; a role that dies more than ``max_restarts`` times within
``restart_window_s`` raises :class:`RoleFailed` instead. A restarted role
appends to its log after a separator line, so the output of the run that died
stays. When the stack stops because of a failure, the logs stay on disk (the
certificates, private keys among them, are removed) and ``logs_kept`` says where.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("dealer", "party0", "party1", "coordinator")
LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class StackConfig:
    """What the local stack serves and how long it may take to come up."""

    models_dir: Path
    model: str
    insecure: bool = False
    workdir: Path | None = None  # a fresh temporary directory when None
    coordinator_port: int = 0  # 0: a free port
    startup_timeout_s: float = 180.0
    grace_s: float = 10.0
    max_restarts: int = 3  # per role within restart_window_s; one more death stops the stack
    restart_window_s: float = 600.0
    pairs: int = 1  # party pairs; the replicas of party R (roles party<R>-pair<k>) share party R's certificate and key
    network: str = "none"  # the parties' emulated peer link: none, lan or wan (parties/transport.py)
    sessions: int | None = None  # sessions each party runs at once (None: the party's default)
    dealer_network: str = "none"  # the emulated link from the dealer to each party: none, lan or wan
    prefetch: bool = True  # False: the parties fetch each batch's dealer material at its request (cold)


@dataclass(frozen=True)
class Endpoints:
    """Where each role listens (host:port for gRPC, a URL for the coordinator)."""

    dealer: str
    party0: str
    party1: str
    coordinator_url: str
    more_pairs: tuple[tuple[str, str], ...] = ()  # pairs 1.. (party 0, party 1) when the stack has several

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(self.party0, self.party1), *self.more_pairs]


@dataclass
class _Proc:
    role: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)
    restarts: list[float] = field(default_factory=list)  # monotonic times of its restarts


class RoleFailed(RuntimeError):
    """A supervised role died more often than its restart limit allows."""


# -- probes -----------------------------------------------------------------------


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports that were free a moment ago (all bound at once, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tcp_ready(address: str, timeout_s: float = 2.0) -> bool:
    """True when something accepts a TCP connection at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def http_health(url: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The JSON body of ``GET url`` when it answers 200, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (our own URL)
            if resp.status != 200:
                return None
            body = json.loads(resp.read() or b"{}")
            return body if isinstance(body, dict) else {"body": body}
    except (urllib.error.URLError, OSError, ValueError):
        return None


def coordinator_ready(body: dict[str, Any] | None, model: str | None = None) -> bool:
    """Whether a ``/v1/health`` body says the coordinator and both parties are ready.

    The coordinator answers 200 with ``{"ok": true, "parties": [...], ...}``
    only when both parties, their link and the dealer answer; a ``status``
    other than ok or a top-level ``models`` list without ``model`` also
    count as not ready.
    """
    if body is None or body.get("ok") is False:
        return False
    status = body.get("status")
    if status is not None and str(status).lower() not in ("ok", "healthy", "ready"):
        return False
    if model is not None and isinstance(body.get("models"), list) and body["models"]:
        names = {m if isinstance(m, str) else m.get("name") for m in body["models"]}
        return model in names
    return True


# -- the stack --------------------------------------------------------------------


PARENT_ENV = "MPCVIT_DIE_WITH_PARENT"  # the pid of the local stack that started this role


def die_with_parent_from_env() -> None:
    """In a role the local stack started (``PARENT_ENV`` set): end with SIGTERM when the stack's process dies.

    Done by the role itself at start (``mpcvit.cli.main``), not by a ``preexec_fn``: Python code run between
    fork and exec in a process whose gRPC threads are busy (the tests, the chaos benchmark) could touch gRPC's
    half-copied state there and abort the child ("epoll_wait error: Bad file descriptor", exit -6), and
    without a ``preexec_fn`` the child is started without running any Python before exec.
    """
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the stack died before the line above: nobody would signal us
        os.kill(os.getpid(), signal.SIGTERM)


def _mpcvit(*args: str) -> list[str]:
    return [sys.executable, "-m", "mpcvit.cli", *args]


class LocalStack:
    """Dealer, two parties and the coordinator as local processes; a context manager.

    ``with LocalStack(cfg) as stack: stack.endpoints.coordinator_url`` -- the
    processes are up and healthy inside the block and gone after it.
    """

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._tmp: Path | None = None  # the temporary work directory this stack made (removed by stop())
        self.logs_kept: Path | None = None  # set by a stop() that kept the logs after a failure
        self.workdir = Path(config.workdir) if config.workdir else Path()
        self.procs: list[_Proc] = []
        self.endpoints: Endpoints | None = None

    # context manager
    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException as exc:
            self.stop(keep_logs=not isinstance(exc, KeyboardInterrupt))
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(keep_logs=exc is not None and not isinstance(exc, KeyboardInterrupt))

    @property
    def certs_dir(self) -> Path:
        return self.workdir / "certs"

    @property
    def pids(self) -> list[int]:
        return [p.popen.pid for p in self.procs]

    def start(self) -> Endpoints:
        """Make certificates, start the four roles, wait until the coordinator is ready."""
        self._make_workdir()
        if not self.config.insecure:
            self._make_certs()
        if self.config.pairs < 1:
            raise ValueError(f"a stack needs at least one party pair, got {self.config.pairs}")
        dealer_p, coord, *party_ports = free_ports(2 + 2 * self.config.pairs)
        if self.config.coordinator_port:
            coord = self.config.coordinator_port
        addresses = [f"{LOOPBACK}:{p}" for p in party_ports]
        pairs = list(zip(addresses[0::2], addresses[1::2]))
        ep = Endpoints(
            dealer=f"{LOOPBACK}:{dealer_p}",
            party0=pairs[0][0],
            party1=pairs[0][1],
            coordinator_url=f"http://{LOOPBACK}:{coord}",
            more_pairs=tuple(pairs[1:]),
        )
        self.endpoints = ep
        deadline = time.monotonic() + self.config.startup_timeout_s
        commands = self._commands(ep)
        for role, argv in commands.items():
            if role != "coordinator":
                self._spawn(role, argv)
        # The coordinator preloads the model on the parties when it starts: start it once they listen.
        listening = {f"party{r}-pair{k}": a for k, pair in enumerate(ep.pairs) for r, a in enumerate(pair)}
        self._wait_tcp({"dealer": ep.dealer, **listening}, deadline)
        self._spawn("coordinator", commands["coordinator"])
        self._wait_coordinator(ep.coordinator_url, deadline)
        log.debug("local stack ready: coordinator %s (logs in %s)", ep.coordinator_url, self.workdir / "logs")
        return ep

    def _make_workdir(self) -> None:
        if self.config.workdir is None and self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mpcvit-demo-"))
            self.workdir = self._tmp
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)

    def supervise(self) -> list[str]:
        """Start again every role that has died; one message per restart. :class:`RoleFailed` past the limit."""
        messages = []
        for i, proc in enumerate(self.procs):
            code = proc.popen.poll()
            if code is None:
                continue
            now = time.monotonic()
            proc.restarts = [t for t in proc.restarts if now - t < self.config.restart_window_s]
            how = _describe_exit(code)
            if len(proc.restarts) >= self.config.max_restarts:
                raise RoleFailed(
                    f"{proc.role} {how} again after {len(proc.restarts)} restarts within "
                    f"{self.config.restart_window_s / 60:.0f} min; not restarting it. The tail of {proc.log_path}:\n"
                    f"{_tail(proc.log_path)}"
                )
            _signal_group(proc.popen, signal.SIGKILL)  # whatever the dead role left behind in its group
            proc.log_file.close()
            with open(proc.log_path, "ab") as f:
                f.write(f"\n--- {time.strftime('%H:%M:%S')} {proc.role} {how}; started again ---\n".encode())
            restarts = [*proc.restarts, now]
            self.procs[i] = self._start_process(proc.role, proc.argv, append=True)  # keeps the stop order
            self.procs[i].restarts = restarts
            messages.append(
                f"{proc.role} {how}; started it again (restart {len(restarts)} of at most {self.config.max_restarts} "
                f"within {self.config.restart_window_s / 60:.0f} min); log: {proc.log_path}"
            )
            log.debug("%s", messages[-1])  # the caller shows the messages (mpcvit demo prints each once)
        return messages

    def stop(self, keep_logs: bool = False) -> None:
        """SIGTERM every process group (coordinator first), SIGKILL what is left after the grace period.

        ``keep_logs``: a temporary work directory keeps its ``logs/`` (its certificates are removed)
        and ``logs_kept`` names it; otherwise it is removed.
        """
        for proc in reversed(self.procs):
            _signal_group(proc.popen, signal.SIGTERM)
        end = time.monotonic() + self.config.grace_s
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", proc.role, self.config.grace_s)
        for proc in self.procs:
            _signal_group(proc.popen, signal.SIGKILL)  # grandchildren too, even if the leader exited
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
            proc.log_file.close()
        self.procs = []
        if self._tmp is not None:
            if keep_logs:
                shutil.rmtree(self._tmp / "certs", ignore_errors=True)
                shutil.rmtree(self._tmp / "dealer-state", ignore_errors=True)
                self.logs_kept = self._tmp / "logs"
            else:
                shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- internals --

    def client_trust(self) -> dict[str, Any]:
        """How a client of this stack checks the parties' keys: the stack's CA certificate (``PrivateClient`` keywords).

        Without TLS the parties sign nothing: the client then trusts the
        coordinator, which ``PrivateClient`` accepts on loopback only.
        """
        if self.config.insecure:
            return {"trust_coordinator": True}
        return {"ca": self.certs_dir / "ca" / "ca.pem"}

    def _make_certs(self) -> None:
        argv = _mpcvit("certs", "local", "--out", str(self.certs_dir), "--hosts", "localhost", LOOPBACK)
        done = subprocess.run(argv, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"'mpcvit certs' failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")

    def _commands(self, ep: Endpoints) -> dict[str, list[str]]:
        """The argv of each role, in start order."""
        def tls(role: str) -> list[str]:  # each process gets only its own role's directory
            return ["--insecure"] if self.config.insecure else ["--certs", str(self.certs_dir / role)]

        models = ["--models", str(self.config.models_dir)]
        network = ["--network", self.config.network] if self.config.network != "none" else []
        sessions = ["--sessions", str(self.config.sessions)] if self.config.sessions is not None else []
        if self.config.dealer_network != "none":
            network += ["--dealer-network", self.config.dealer_network]
        if not self.config.prefetch:
            network.append("--no-prefetch")
        port = ep.coordinator_url.rsplit(":", 1)[1]
        # the dealer's master secret in a file of its own: a restarted dealer derives the same model keys
        state = ["--state", str(self.workdir / "dealer-state" / "master.key")]
        commands = {"dealer": _mpcvit("dealer", "--listen", ep.dealer, *tls("dealer"), *state)}
        for k, (a0, a1) in enumerate(ep.pairs):
            for rank, (listen, peer) in enumerate(((a0, a1), (a1, a0))):
                role = f"party{rank}" if k == 0 else f"party{rank}-pair{k}"
                commands[role] = _mpcvit(
                    "party", "--rank", str(rank), "--listen", listen, "--peer", peer, "--dealer", ep.dealer,
                    *tls(f"party{rank}"), *models, *network, *sessions,
                )
        where = (["--party0", ep.party0, "--party1", ep.party1] if len(ep.pairs) == 1
                 else [arg for a0, a1 in ep.pairs for arg in ("--pair", f"{a0},{a1}")])
        commands["coordinator"] = _mpcvit(
            "serve", "--host", LOOPBACK, "--port", port, *where, *tls("coordinator"), *models, "--preload", self.config.model,
        )
        return commands

    def _spawn(self, role: str, argv: list[str]) -> None:
        self.procs.append(self._start_process(role, argv))

    def _start_process(self, role: str, argv: list[str], append: bool = False) -> _Proc:
        log_path = self.workdir / "logs" / f"{role}.log"
        log_file = open(log_path, "ab" if append else "wb")  # noqa: SIM115 (closed in stop())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
        popen = subprocess.Popen(  # noqa: S603 (our own argv)
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: signals reach it and its children only
        )  # it ends with this process: die_with_parent_from_env, called by the role at start
        log.debug("started %s (pid %d): %s", role, popen.pid, " ".join(argv))
        return _Proc(role, argv, popen, log_path, log_file)

    def _check_alive(self) -> None:
        for proc in self.procs:
            code = proc.popen.poll()
            if code is not None:
                raise RuntimeError(f"{proc.role} exited with code {code} while starting:\n{_tail(proc.log_path)}")

    def _wait_tcp(self, addresses: dict[str, str], deadline: float) -> None:
        pending = dict(addresses)
        while pending:
            self._check_alive()
            pending = {role: a for role, a in pending.items() if not tcp_ready(a, 0.5)}
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {sorted(pending)} to listen")
            if pending:
                time.sleep(0.2)

    def _wait_coordinator(self, url: str, deadline: float) -> None:
        health = f"{url}/v1/health"
        while True:
            self._check_alive()
            body = http_health(health, timeout_s=5.0)
            if coordinator_ready(body, self.config.model):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {health} to report ready (last answer: {body})")
            time.sleep(0.5)


def _describe_exit(code: int) -> str:
    """``exited with code 3`` or ``was killed by SIGKILL`` (Popen's negative return code)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)  # start_new_session: pgid == pid


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
