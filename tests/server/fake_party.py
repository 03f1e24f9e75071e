"""TEST DOUBLE of the two parties: real gRPC ``PartyControl`` servers on 127.0.0.1, NOT secure computation.

Both fake parties share one in-process ``FakeRuntime``. Each party opens only
its own sealed input shares (with its own X25519 key, in the box's context:
request id, model, rank, direction, exactly as a real party does; with
certificates it also signs its key as a real party does) and hands them to the runtime; once both shares of a
session are in, the runtime reconstructs the input in plaintext, runs the
plaintext model from the checkpoint, re-shares the logits in fixed point, and
each party seals its logit share to the client. This checks everything the
coordinator and the client do (transport, sealing, batching, ordering, error
statuses) without the real secure runtime; the real parties are tested end to
end in ``test_e2e_real_parties.py``.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit import pki
from mpcvit.output_policy import OutputPolicy
from mpcvit.sealing import BoxContext, KeyPair, Sealed, SealError, generate_keypair, open_tensor, reconstruct_fixed_point, seal_tensor, share_fixed_point
from parties import tls
from parties.proto import control_pb2, control_pb2_grpc

PRECISION_BITS = 16
FAKE_ROUNDS = 40
FAKE_BYTES_PER_ITEM = 10_000


class SessionFailed(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Session:
    inputs: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    outputs: dict[int, list[torch.Tensor]] | None = None
    error: str | None = None


class FakeRuntime:
    """The shared plaintext 'secure forward' of the two fake parties, with counters the tests read."""

    def __init__(self, model_dir: Path, delay_s: float = 0.0) -> None:
        self.model_dir = Path(model_dir)
        self.delay_s = delay_s
        self.keys: list[KeyPair] = [generate_keypair(), generate_keypair()]
        self.loaded: list[set[str]] = [set(), set()]
        self.models: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.cond = threading.Condition()
        self.sessions: dict[str, _Session] = {}
        self.forwards = 0
        self.batch_sizes: list[int] = []
        self.received: list[list[control_pb2.InferRequest]] = [[], []]
        self.max_sessions = [0, 0]  # what each party reports in Health (0: says nothing, as an older party)
        self.in_flight = [0, 0]
        self.peak_in_flight = [0, 0]  # the most Infer calls a party had running at once
        self.data_loss_forwards = 0  # the next N forwards abort at both parties as on mismatched dealer material
        self.data_loss_sessions: set[str] = set()
        self.used: list[set[str]] = [set(), set()]  # request ids a party refuses as replayed (ALREADY_EXISTS)
        self.down = [False, False]  # a stopped party: its peer's sessions fail as a real party's do ("peer connection lost")

    def load(self, rank: int, name: str) -> tuple[Any, dict[str, Any]]:
        d = self.model_dir / name
        if not (d / "arch.json").is_file():
            raise SessionFailed(grpc.StatusCode.NOT_FOUND, f"no model {name!r} in the model directory")
        with self.cond:
            if name not in self.models:
                self.models[name] = load_checkpoint(d)
            self.loaded[rank].add(name)
            return self.models[name]

    def policy(self, model: str) -> OutputPolicy:
        """The model's output policy, from its meta.json as the real party 0 reads it."""
        net, meta = self.models[model]
        return OutputPolicy.parse(meta.get("output_policy"), net.spec.num_classes)

    def exchange(self, session_id: str, rank: int, model: str, shares: list[torch.Tensor] | str, deadline: float, alive: Any) -> list[torch.Tensor]:
        """Deposit this party's opened shares (or its error) and wait for this party's logit shares."""
        with self.cond:
            s = self.sessions.setdefault(session_id, _Session())
            if isinstance(shares, str):
                s.error = shares
                self.cond.notify_all()
                raise SessionFailed(grpc.StatusCode.INVALID_ARGUMENT, shares)
            s.inputs[rank] = shares
            peer = 1 - rank
            if len(s.inputs) == 2 and s.outputs is None and s.error is None:
                s.outputs = self._forward(model, s.inputs[0], s.inputs[1])
                self.cond.notify_all()
            while s.outputs is None and s.error is None:
                if self.down[peer]:  # as parties/transport.py: the peer link broke, every open session fails
                    raise SessionFailed(grpc.StatusCode.UNAVAILABLE, f"peer connection lost: party {peer} went away")
                left = deadline - time.time()
                if left <= 0:
                    raise SessionFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "peer never joined the session before the deadline")
                if not alive():
                    raise SessionFailed(grpc.StatusCode.CANCELLED, "the coordinator cancelled the call")
                self.cond.wait(min(left, 0.05))
            if s.error is not None:
                raise SessionFailed(grpc.StatusCode.INVALID_ARGUMENT, f"the peer failed the session: {s.error}")
            return s.outputs[rank]

    def _forward(self, model: str, s0: list[torch.Tensor], s1: list[torch.Tensor]) -> dict[int, list[torch.Tensor]]:
        net, meta = self.models[model]
        x = torch.stack([reconstruct_fixed_point(a, b, PRECISION_BITS) for a, b in zip(s0, s1)]).float()
        with torch.no_grad():
            logits = net(normalise_input(x, meta))
        self.forwards += 1
        self.batch_sizes.append(len(s0))
        out: dict[int, list[torch.Tensor]] = {0: [], 1: []}
        policy = self.policy(model)
        if not policy.reveals_logits:  # as the real parties: shares of the top K indices only (ring integers)
            logits, bits = logits.topk(policy.k, dim=-1).indices.double(), 0
        else:
            bits = PRECISION_BITS
        for row in logits:
            y0, y1 = share_fixed_point(row, bits)
            out[0].append(y0)
            out[1].append(y1)
        return out


class FakeParty(control_pb2_grpc.PartyControlServicer):
    """One fake party's servicer: it opens only its own shares and seals only its own outputs."""

    def __init__(self, rank: int, runtime: FakeRuntime, certs: Path | None = None, cert_role: str | None = None) -> None:
        self.rank = rank
        self.rt = runtime
        self.certificate = self.signature = b""
        if certs is not None:  # the key signed with the certificate this server presents (cert_role: a stand-in's)
            directory = pki.role_dir(certs, cert_role or f"party{rank}")
            role = cert_role or f"party{rank}"
            self.certificate = (directory / f"{role}.pem").read_bytes()
            self.signature = pki.sign_party_key(pki.load_key(directory / f"{role}.key"), rank, runtime.keys[rank].public)

    def Health(self, request: control_pb2.HealthRequest, context: grpc.ServicerContext) -> control_pb2.HealthReply:
        return control_pb2.HealthReply(
            rank=self.rank, peer_reachable=True, dealer_reachable=True,
            models=sorted(self.rt.loaded[self.rank]), public_key=self.rt.keys[self.rank].public,
            certificate=self.certificate, key_signature=self.signature, max_sessions=self.rt.max_sessions[self.rank],
        )

    def LoadModel(self, request: control_pb2.LoadModelRequest, context: grpc.ServicerContext) -> control_pb2.LoadModelReply:
        try:
            net, _ = self.rt.load(self.rank, request.model)
        except SessionFailed as exc:
            context.abort(exc.code, str(exc))
        return control_pb2.LoadModelReply(
            model=request.model, input_shape=list(net.spec.input_shape), num_classes=net.spec.num_classes,
            precision_bits=PRECISION_BITS, costs=control_pb2.Costs(rounds=1), output_policy=str(self.rt.policy(request.model)),
        )

    def Infer(self, request: control_pb2.InferRequest, context: grpc.ServicerContext) -> control_pb2.InferReply:
        self.rt.received[self.rank].append(request)
        if request.model not in self.rt.loaded[self.rank]:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"model {request.model!r} is not loaded")
        for it in request.items:  # as a real party's replay guard: refused before anything is computed
            if it.request_id in self.rt.used[self.rank]:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{it.request_id}: replayed box: this request id was already used")
        opened = self._open(request)
        with self.rt.cond:
            if request.session_id not in self.rt.data_loss_sessions and self.rt.data_loss_forwards > 0:
                self.rt.data_loss_forwards -= 1
                self.rt.data_loss_sessions.add(request.session_id)
            lost = request.session_id in self.rt.data_loss_sessions
        if lost:
            context.abort(grpc.StatusCode.DATA_LOSS, "dealer material mismatch: the two parties hold different dealer batches")
        with self.rt.cond:
            self.rt.in_flight[self.rank] += 1
            self.rt.peak_in_flight[self.rank] = max(self.rt.peak_in_flight[self.rank], self.rt.in_flight[self.rank])
        try:
            if self.rt.delay_s:
                time.sleep(self.rt.delay_s)  # each party's share of a slow forward, concurrent sessions overlap
            outs = self.rt.exchange(request.session_id, self.rank, request.model, opened, request.deadline_unix_ms / 1000, context.is_active)
        except SessionFailed as exc:
            context.abort(exc.code, str(exc))
        finally:
            with self.rt.cond:
                self.rt.in_flight[self.rank] -= 1
        sk = self.rt.keys[self.rank].private
        sealed = [seal_tensor(y, sk, it.client_public_key, BoxContext(it.request_id, request.model, self.rank, "output"))
                  for y, it in zip(outs, request.items)]
        n = len(request.items)
        costs = control_pb2.Costs(rounds=FAKE_ROUNDS, bytes_sent=FAKE_BYTES_PER_ITEM * n, bytes_received=FAKE_BYTES_PER_ITEM * n, seconds=self.rt.delay_s)
        return control_pb2.InferReply(
            output_shares=[control_pb2.SealedTensor(shape=list(s.shape), dtype=s.dtype, nonce=s.nonce, ciphertext=s.ciphertext) for s in sealed],
            costs=costs, precision_bits=PRECISION_BITS, output_policy=str(self.rt.policy(request.model)),
        )

    def _open(self, request: control_pb2.InferRequest) -> list[torch.Tensor] | str:
        """This party's shares, or the reason one does not open (as a real party: INVALID_ARGUMENT)."""
        sk = self.rt.keys[self.rank].private
        out = []
        for it in request.items:
            t = it.input_share
            try:
                context = BoxContext(it.request_id, request.model, self.rank, "input")
                out.append(open_tensor(Sealed(tuple(t.shape), t.dtype, t.nonce, t.ciphertext), sk, it.client_public_key, context))
            except SealError as exc:
                return f"request {it.request_id}: input share does not open for party {self.rank}: {exc}"
        return out


class FakeParties:
    """Start/stop the two fake party servers on free loopback ports (a party can be stopped and restarted)."""

    def __init__(self, model_dir: Path, delay_s: float = 0.0, certs: Path | None = None) -> None:
        self.runtime = FakeRuntime(model_dir, delay_s)
        self.certs = certs  # serve mutual TLS with party0/party1 certificates from 'mpcvit certs' when set
        self.servers: list[grpc.Server | None] = [None, None]
        self.ports = [0, 0]

    def start(self, rank: int | None = None) -> "FakeParties":
        for r in ([rank] if rank is not None else [0, 1]):
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
            control_pb2_grpc.add_PartyControlServicer_to_server(FakeParty(r, self.runtime, self.certs), server)
            address = f"127.0.0.1:{self.ports[r]}"
            if self.certs is None:
                self.ports[r] = server.add_insecure_port(address)
            else:
                self.ports[r] = server.add_secure_port(address, tls.server_credentials(self.certs, f"party{r}"))
            assert self.ports[r] > 0, "could not bind a loopback port"
            server.start()
            self.servers[r] = server
            with self.runtime.cond:
                self.runtime.down[r] = False
        return self

    def stop(self, rank: int | None = None, forget_models: bool = True) -> None:
        for r in ([rank] if rank is not None else [0, 1]):
            server = self.servers[r]
            if server is not None:
                with self.runtime.cond:  # its peer's open sessions fail now, as with a real party that dies
                    self.runtime.down[r] = True
                    self.runtime.cond.notify_all()
                server.stop(grace=None).wait(5)
                self.servers[r] = None
                if forget_models:
                    self.runtime.loaded[r].clear()  # as a restarted party would

    @property
    def addresses(self) -> tuple[str, str]:
        return (f"127.0.0.1:{self.ports[0]}", f"127.0.0.1:{self.ports[1]}")
