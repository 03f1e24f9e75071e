"""A hostile-coordinator bench: a stand-in coordinator driving the real dealer and party processes.

:class:`Stack` starts the dealer (with ``--state``, so its master secret
survives restarts) and two parties as separate processes with mutual TLS,
each party under ``tests/security/recording_party.py``: a recorder keeps
every opening the party receives, every dealer key it is handed and every
load id it takes part in. The bench then plays the coordinator with control
messages a hostile one may send -- repeated and colliding session ids,
replayed and swapped tickets, duplicated loads, restarts of any role in
between -- and the checks read the recordings back:

* :func:`weight_openings` / :func:`cancelled_entries`: for two loads A and B,
  the entries where D_B - D_A equals W_B - W_A (the masks cancelled, so a
  party that knows W_A learns W_B). With fresh masks this is 0 but for
  chance (2^-63 per entry);
* :func:`keys_received`: every dealer key and commitment a party received;
  none may repeat.

``tests/security/test_hostile_coordinator.py`` runs the attacks one by one
(the quick tier, in ``make test``); ``python -m tests.security.hostile_bench``
runs a long random sequence of them (the long tier, its result under
``results/security/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch

from mpcvit import sealing
from mpcvit.checkpoint import load_checkpoint, save_checkpoint
from mpcvit.models.registry import create_model
from parties.dealer import DealerClient
from parties.pair import free_port
from parties.proto import control_pb2, control_pb2_grpc
from parties.tls import channel_credentials, secure_channel, write_certs

REPO = Path(__file__).resolve().parents[2]
RECORDER = Path(__file__).with_name("recording_party.py")
META = {"normalisation": {"mean": [0.3], "std": [0.4]}, "dataset": "digits"}
ARCH = "mpcvit_2_4_8"


def save_models(directory: Path) -> dict[str, Any]:
    """Checkpoints the bench loads: ``public`` (weights party 1 knows), ``private`` and ``private2`` (the same
    architecture, weights party 1 must never learn) and ``small`` (another shape: one block)."""
    models = {}
    for name, seed, overrides in (("public", 1, {}), ("private", 2, {}), ("private2", 3, {}), ("small", 4, {"depth": 1})):
        torch.manual_seed(seed)
        model = create_model(ARCH, **overrides).eval()
        save_checkpoint(directory / name, model, META)
        models[name] = model
    return models


@dataclass
class Stack:
    """The dealer and two recording parties as processes; ``restart`` any of them."""

    root: Path
    certs: Path = field(init=False)
    ports: dict[str, int] = field(init=False)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.certs = self.root / "certs"
        write_certs(self.certs)
        self.models_dir = self.root / "models"
        self.models = save_models(self.models_dir)
        self.state = self.root / "dealer" / "master.key"
        self.ports = {"dealer": free_port(), "party0": free_port(), "party1": free_port()}
        self.stubs = [control_pb2_grpc.PartyControlStub(
            secure_channel(f"127.0.0.1:{self.ports[f'party{r}']}", channel_credentials(self.certs, "coordinator"), f"party{r}"))
            for r in (0, 1)]
        self.lives = {"dealer": 0, "party0": 0, "party1": 0}

    # -- processes ------------------------------------------------------------------
    def _command(self, role: str) -> list[str]:
        if role == "dealer":
            return ["-m", "parties.dealer", "--listen", f"127.0.0.1:{self.ports['dealer']}", "--certs", str(self.certs),
                    "--state", str(self.state)]
        rank = int(role[-1])
        return [str(RECORDER), str(self.record_dir(rank)), "--rank", str(rank),
                "--listen", f"127.0.0.1:{self.ports[role]}", "--peer", f"127.0.0.1:{self.ports[f'party{1 - rank}']}",
                "--dealer", f"127.0.0.1:{self.ports['dealer']}", "--certs", str(self.certs), "--models", str(self.models_dir),
                "--sessions", "2"]

    def record_dir(self, rank: int) -> Path:
        return self.root / f"record{rank}"

    def start(self, *roles: str) -> None:
        roles = roles or ("dealer", "party0", "party1")
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        for role in roles:
            self.lives[role] += 1
            log = (self.root / f"{role}.{self.lives[role]}.log").open("w")
            self.procs[role] = subprocess.Popen([sys.executable, *self._command(role)], cwd=REPO, env=env,
                                                stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def stop(self, *roles: str, kill: bool = True) -> None:
        for role in roles or tuple(self.procs):
            proc = self.procs.pop(role, None)
            if proc is None:
                continue
            proc.kill() if kill else proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def restart(self, *roles: str) -> None:
        self.stop(*roles)
        self.start(*roles)

    def wait_ready(self, timeout: float = 120) -> None:
        end = time.time() + timeout
        while True:
            try:
                health = [s.Health(control_pb2.HealthRequest(), timeout=10, wait_for_ready=True) for s in self.stubs]
                if all(h.peer_reachable and h.dealer_reachable for h in health):
                    self.health = health
                    return
            except grpc.RpcError:
                pass
            if time.time() > end:
                raise TimeoutError("the stack did not become healthy")
            time.sleep(0.3)

    def close(self) -> None:
        self.stop()

    # -- the hostile coordinator's calls ----------------------------------------------------
    def both(self, method: str, requests: list, timeout: float = 120) -> list:
        """Call ``method`` on both parties at once: the replies, or the RpcErrors."""
        def call(i: int) -> Any:
            try:
                return getattr(self.stubs[i], method)(requests[i], timeout=timeout)
            except grpc.RpcError as exc:
                return exc

        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(call, (0, 1)))

    def load(self, model: str, session: str | None = None, deadline_s: float = 120) -> list:
        session = session or uuid.uuid4().hex
        request = control_pb2.LoadModelRequest(model=model, session_id=session, deadline_unix_ms=deadline(deadline_s))
        return self.both("LoadModel", [request, request])

    def infer_requests(self, model: str, images: torch.Tensor, tickets: tuple[tuple[str, int], tuple[str, int]] | None = None,
                       session: str | None = None, tamper: set[int] | None = None, deadline_s: float = 60) -> tuple[list, list]:
        """Both parties' InferRequests for ``images`` (tickets per rank; ``tamper``: items whose party-1 box is flipped)."""
        items: list[list[control_pb2.InferItem]] = [[], []]
        clients = []
        for index, image in enumerate(images):
            client = sealing.generate_keypair()
            request_id = uuid.uuid4().hex
            shares = sealing.share_fixed_point(image, 16)
            for rank in (0, 1):
                box = sealing.seal_tensor(shares[rank], client.private, self.health[rank].public_key,
                                          sealing.BoxContext(request_id, model, rank, "input"))
                ciphertext = bytearray(box.ciphertext)
                if rank == 1 and tamper and index in tamper:
                    ciphertext[0] ^= 1
                items[rank].append(control_pb2.InferItem(
                    request_id=request_id, client_public_key=client.public,
                    input_share=control_pb2.SealedTensor(shape=list(box.shape), dtype=box.dtype, nonce=box.nonce,
                                                         ciphertext=bytes(ciphertext))))
            clients.append((client, request_id))
        session = session or uuid.uuid4().hex
        requests = []
        for rank in (0, 1):
            series, number = tickets[rank] if tickets else ("", 0)
            requests.append(control_pb2.InferRequest(session_id=session, model=model, deadline_unix_ms=deadline(deadline_s),
                                                     items=items[rank], batch_series=series, batch_number=number))
        return requests, clients

    @staticmethod
    def item_alone(requests: list, index: int) -> list:
        """Both parties' requests for item ``index`` of ``requests`` alone, under one new session id."""
        session, single = uuid.uuid4().hex, []
        for request in requests:
            r = type(request)()
            r.CopyFrom(request)
            del r.items[:]
            r.items.append(request.items[index])
            r.session_id = session
            single.append(r)
        return single

    def open_logits(self, model: str, replies: list, clients: list) -> torch.Tensor:
        """The client's view: each item's two sealed logit shares opened and added."""
        rows = []
        for i, (client, request_id) in enumerate(clients):
            shares = []
            for rank in (0, 1):
                box = replies[rank].output_shares[i]
                shares.append(sealing.open_tensor(sealing.Sealed(tuple(box.shape), box.dtype, box.nonce, box.ciphertext),
                                                  client.private, self.health[rank].public_key,
                                                  sealing.BoxContext(request_id, model, rank, "output")))
            rows.append(sealing.reconstruct_fixed_point(shares[0], shares[1], replies[0].precision_bits))
        return torch.stack(rows).float()

    def plaintext(self, model: str, images: torch.Tensor) -> torch.Tensor:
        from mpcvit.checkpoint import normalise_input

        with torch.no_grad():
            return self.models[model](normalise_input(images, META))

    def dealer_client(self, rank: int) -> DealerClient:
        """A client holding party ``rank``'s certificate: what a party (curious, or restarted) can ask the dealer."""
        return DealerClient(f"127.0.0.1:{self.ports['dealer']}", rank, str(self.certs), timeout_s=10)


def deadline(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


def failed(replies: list) -> list[grpc.RpcError]:
    return [r for r in replies if isinstance(r, grpc.RpcError)]


# -- reading the recordings back ---------------------------------------------------------------
def openings(record: Path, session: str) -> list[list[torch.Tensor]]:
    """Every all_reduce the party recorded in ``session``, in order (each a list of opened tensors), over all of its
    process lives (a session id the coordinator repeats after a restart appears in several)."""
    return _index(record).get(session, [])


_INDEXED: dict[Path, tuple[int, dict[str, list[list[torch.Tensor]]]]] = {}


def _index(record: Path) -> dict[str, list[list[torch.Tensor]]]:
    """The recordings by session, read once (again only when new files came)."""
    files = sorted(record.glob("open-*.pt"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    cached = _INDEXED.get(record)
    if cached is not None and cached[0] == len(files):
        return cached[1]
    by_session: dict[str, list[list[torch.Tensor]]] = {}
    for path in files:
        entry = torch.load(path, weights_only=True)
        by_session.setdefault(entry["session"], []).append(entry["opened"])
    _INDEXED[record] = (len(files), by_session)
    return by_session


def weight_names(model: torch.nn.Module) -> list[str]:
    """The 2-d weights whose masks a load opens, in the order it opens them (``SecureViT._open_weight_masks``)."""
    from protocols.runtime import prepare_weights

    params = prepare_weights(model, model.spec, META)
    return [k for k in sorted(params) if k.endswith(".w_t") and params[k].dim() == 2]


def encoded_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights as the parties share them: folded, then fixed point with 16 bits."""
    from protocols.crypten_compat import crypten  # noqa: F401  (CrypTen importable)
    from crypten.encoder import FixedPointEncoder
    from protocols.runtime import prepare_weights

    params = prepare_weights(model, model.spec, META)
    encoder = FixedPointEncoder(precision_bits=16)
    return {k: encoder.encode(params[k].float()) for k in weight_names(model)}


def weight_openings(record: Path, session: str, model: torch.nn.Module, which: int = -1) -> dict[str, torch.Tensor]:
    """D = W - b of each weight, as the recording party learnt it at a load of ``model`` run in ``session`` (``which``:
    the first, ..., the last (-1) such load when the session id was used again)."""
    names = weight_names(model)
    shapes = [tuple(w.shape) for w in encoded_weights(model).values()]
    found = [dict(zip(names, opened)) for opened in openings(record, session)
             if [tuple(t.shape) for t in opened] == shapes]
    if not found:
        raise AssertionError(f"no weight-mask opening recorded in load session {session}")
    return found[which]


def cancelled_entries(d_a: dict[str, torch.Tensor], d_b: dict[str, torch.Tensor], w_a: dict[str, torch.Tensor],
                      w_b: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(entries where D_B - D_A = W_B - W_A within one unit, entries compared): what a party knowing W_A recovers of
    W_B. Weights of the same name are compared on their common leading block (a smaller mask was once a prefix of a
    larger one under the same key)."""
    hit = total = 0
    for name in d_a.keys() & d_b.keys():
        rows = min(d_a[name].shape[0], d_b[name].shape[0])
        cols = min(d_a[name].shape[1], d_b[name].shape[1])
        diff = (d_b[name][:rows, :cols] - d_a[name][:rows, :cols]) - (w_b[name][:rows, :cols] - w_a[name][:rows, :cols])
        hit += int((diff.abs() <= 1).sum())
        total += diff.numel()
    return hit, total


def keys_received(record: Path) -> list[dict]:
    path = record / "keys.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def loads_recorded(record: Path) -> list[str]:
    path = record / "loads.jsonl"
    return [json.loads(line)["load_id"] for line in path.read_text().splitlines()] if path.exists() else []
