"""Dealer + party 0 + party 1 as separate processes with mutual TLS; this test plays the coordinator."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest
import torch

from mpcvit import pki, sealing
from mpcvit.checkpoint import normalise_input, save_checkpoint
from mpcvit.models.registry import create_model
from parties.pair import free_port
from parties.proto import control_pb2, control_pb2_grpc
from parties.tls import channel_credentials, secure_channel

pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parents[2]
META = {"normalisation": {"mean": [0.3], "std": [0.4]}, "dataset": "digits"}
SESSIONS = 3  # the parties run up to 3 sessions at once


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def cluster(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cluster")
    torch.manual_seed(0)
    model = create_model("mpcvit_2_4_8").eval()
    save_checkpoint(tmp / "models" / "tiny", model, META)
    with running_pair(certs, tmp / "models", tmp, SESSIONS) as (stubs, health):
        yield {"stubs": stubs, "health": health, "model": model, "logs": tmp, "certs": certs}


@contextlib.contextmanager
def running_pair(certs: Path, models: Path, logs: Path, sessions: int) -> Iterator[tuple[list, list]]:
    """The dealer and both parties as processes (mutual TLS) serving ``models``: the coordinator's stubs and the
    parties' Health once both answer; every process is stopped on exit."""
    dealer, p0, p1 = free_port(), free_port(), free_port()
    procs = [
        _start(["-m", "parties.dealer", "--listen", f"127.0.0.1:{dealer}", "--certs", str(certs)], logs / "dealer.log"),
        *(
            _start(
                ["-m", "parties", "--rank", str(r), "--listen", f"127.0.0.1:{ports[0]}", "--peer", f"127.0.0.1:{ports[1]}",
                 "--dealer", f"127.0.0.1:{dealer}", "--certs", str(certs), "--models", str(models),
                 "--sessions", str(sessions)],
                logs / f"party{r}.log",
            )
            for r, ports in ((0, (p0, p1)), (1, (p1, p0)))
        ),
    ]
    stubs = [control_pb2_grpc.PartyControlStub(secure_channel(f"127.0.0.1:{p}", channel_credentials(certs, "coordinator"), f"party{r}"))
             for r, p in enumerate((p0, p1))]
    try:
        yield stubs, [s.Health(control_pb2.HealthRequest(), timeout=90, wait_for_ready=True) for s in stubs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _both(stubs: list, method: str, requests: list, timeout: float = 120) -> list:
    """Call ``method`` on both parties at once; results or the RpcErrors."""
    def call(i: int) -> Any:
        try:
            return getattr(stubs[i], method)(requests[i], timeout=timeout)
        except grpc.RpcError as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(call, (0, 1)))


def _deadline(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


Sealer = Callable[[list, str, int], tuple[bytes, sealing.BoxContext]]


def _honest(health: list, request_id: str, rank: int) -> tuple[bytes, sealing.BoxContext]:
    """Share ``rank`` is sealed to party ``rank``'s key in its own context."""
    return health[rank].public_key, sealing.BoxContext(request_id, "tiny", rank, "input")


def _infer_requests(health: list, images: torch.Tensor, wrong_key_for: int | None = None, seal: Sealer = _honest) -> tuple[list, list]:
    items: list[list[control_pb2.InferItem]] = [[], []]
    clients = []
    for image in images:
        client = sealing.generate_keypair()
        request_id = uuid.uuid4().hex
        shares = sealing.share_fixed_point(image, 16)
        for rank in (0, 1):
            party_key, context = seal(health, request_id, rank)
            if rank == wrong_key_for:
                party_key = sealing.generate_keypair().public
            box = sealing.seal_tensor(shares[rank], client.private, party_key, context)
            items[rank].append(control_pb2.InferItem(
                request_id=request_id, client_public_key=client.public,
                input_share=control_pb2.SealedTensor(shape=list(box.shape), dtype=box.dtype, nonce=box.nonce, ciphertext=box.ciphertext)))
        clients.append((client, request_id))
    session = uuid.uuid4().hex
    requests = [control_pb2.InferRequest(session_id=session, model="tiny", deadline_unix_ms=_deadline(120), items=items[r]) for r in (0, 1)]
    return requests, clients


def _open_logits(replies: list, clients: list, health: list) -> torch.Tensor:
    rows = []
    for i, (client, request_id) in enumerate(clients):
        shares = []
        for rank in (0, 1):
            box = replies[rank].output_shares[i]
            shares.append(sealing.open_tensor(sealing.Sealed(tuple(box.shape), box.dtype, box.nonce, box.ciphertext),
                                              client.private, health[rank].public_key,
                                              sealing.BoxContext(request_id, "tiny", rank, "output")))
        rows.append(sealing.reconstruct_fixed_point(shares[0], shares[1], replies[0].precision_bits))
    return torch.stack(rows).float()


def test_health_reports_rank_key_and_reachability(cluster: dict) -> None:
    health = cluster["health"]
    assert [h.rank for h in health] == [0, 1]
    assert all(len(h.public_key) == 32 for h in health)
    ca = (cluster["certs"] / "ca" / "ca.pem").read_bytes()
    for rank, h in enumerate(health):  # each key is signed by the party's own certificate
        pki.verify_party_key(pki.PartyKeyProof(rank, h.public_key, h.certificate, h.key_signature), ca)
    with pytest.raises(pki.PartyKeyError):
        pki.verify_party_key(pki.PartyKeyProof(0, health[1].public_key, health[1].certificate, health[1].key_signature), ca)
    again = cluster["stubs"][0].Health(control_pb2.HealthRequest(), timeout=10)
    assert again.peer_reachable and again.dealer_reachable


def test_load_and_private_inference_match_plaintext(cluster: dict) -> None:
    stubs, health, model = cluster["stubs"], cluster["health"], cluster["model"]
    load = [control_pb2.LoadModelRequest(model="tiny", session_id="load-1", deadline_unix_ms=_deadline(120))] * 2
    loaded = _both(stubs, "LoadModel", load)
    assert not any(isinstance(r, grpc.RpcError) for r in loaded), loaded
    assert list(loaded[0].input_shape) == [1, 8, 8] and loaded[1].num_classes == 10
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    requests, clients = _infer_requests(health, images)
    replies = _both(stubs, "Infer", requests)
    assert not any(isinstance(r, grpc.RpcError) for r in replies), replies
    logits = _open_logits(replies, clients, health)
    with torch.no_grad():
        expected = model(normalise_input(images, META))
    torch.testing.assert_close(logits, expected, atol=0.02, rtol=0.02)
    assert logits.argmax(-1).tolist() == expected.argmax(-1).tolist()
    assert replies[0].costs.rounds > 10 and replies[0].costs.rounds == replies[1].costs.rounds
    assert replies[0].costs.ops
    # offline: party 0 got the corrections and its DCF keys, party 1 its 256-bit key and its DCF keys (no corrections)
    assert replies[0].costs.dealer_bytes_received > replies[1].costs.dealer_bytes_received > 32
    # the same boxes again (a new session): a replay, refused by both parties before anything is computed
    rounds = [s.Stats(control_pb2.StatsRequest(), timeout=10).totals.rounds for s in stubs]
    session = uuid.uuid4().hex
    for r in requests:
        r.session_id = session
    replayed = _both(stubs, "Infer", requests)
    for reply in replayed:
        assert isinstance(reply, grpc.RpcError) and reply.code() == grpc.StatusCode.ALREADY_EXISTS, reply
        assert "replayed" in reply.details()
    assert [s.Stats(control_pb2.StatsRequest(), timeout=10).totals.rounds for s in stubs] == rounds


def test_concurrent_sessions_on_one_pair_each_match_plaintext(cluster: dict) -> None:
    """SESSIONS forwards in flight on one pair at once (threads in each party): every one agrees with plaintext."""
    stubs, health, model = cluster["stubs"], cluster["health"], cluster["model"]
    assert [h.max_sessions for h in health] == [SESSIONS, SESSIONS]
    _both(stubs, "LoadModel", [control_pb2.LoadModelRequest(model="tiny", session_id="load-c", deadline_unix_ms=_deadline(120))] * 2)
    batches = [torch.rand(1 + i % 2, 1, 8, 8, generator=torch.Generator().manual_seed(10 + i)) for i in range(SESSIONS)]
    calls = [_infer_requests(health, images) for images in batches]
    before = [s.Stats(control_pb2.StatsRequest(), timeout=10).sessions_ok for s in stubs]
    with ThreadPoolExecutor(2 * SESSIONS) as pool:
        futures = [[pool.submit(stubs[r].Infer, requests[r], timeout=120) for r in (0, 1)] for requests, _ in calls]
        replies = [[f.result() for f in pair] for pair in futures]
    for images, (_, clients), reply in zip(batches, calls, replies):
        with torch.no_grad():
            expected = model(normalise_input(images, META))
        logits = _open_logits(reply, clients, health)
        torch.testing.assert_close(logits, expected, atol=0.02, rtol=0.02)
        assert logits.argmax(-1).tolist() == expected.argmax(-1).tolist()
    assert [s.Stats(control_pb2.StatsRequest(), timeout=10).sessions_ok for s in stubs] == [b + SESSIONS for b in before]


OUT_OF_CONTEXT: dict[str, Sealer] = {
    "swapped (sealed for the other party)": lambda h, rid, rank: (h[1 - rank].public_key, sealing.BoxContext(rid, "tiny", 1 - rank, "input")),
    "reflected (sealed as an output)": lambda h, rid, rank: (h[rank].public_key, sealing.BoxContext(rid, "tiny", rank, "output")),
    "re-targeted (sealed for another model)": lambda h, rid, rank: (h[rank].public_key, sealing.BoxContext(rid, "other", rank, "input")),
    "re-targeted (sealed under another request id)": lambda h, rid, rank: (h[rank].public_key, sealing.BoxContext(rid + "x", "tiny", rank, "input")),
}


def test_boxes_out_of_their_context_are_refused_and_nothing_is_computed(cluster: dict) -> None:
    stubs, health = cluster["stubs"], cluster["health"]
    rounds = [s.Stats(control_pb2.StatsRequest(), timeout=10).totals.rounds for s in stubs]
    for name, seal in OUT_OF_CONTEXT.items():
        requests, _ = _infer_requests(health, torch.rand(1, 1, 8, 8), seal=seal)
        replies = _both(stubs, "Infer", requests)
        for reply in replies:
            assert isinstance(reply, grpc.RpcError), name
            assert reply.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE), (name, reply)
        assert any(r.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not open" in r.details() for r in replies), name
    assert [s.Stats(control_pb2.StatsRequest(), timeout=10).totals.rounds for s in stubs] == rounds


def test_a_party_that_refuses_before_its_session_releases_the_peer_at_once(cluster: dict) -> None:
    """Party 1 lacks the model (as after a restart): party 0, already in the session, fails fast, not at the deadline."""
    stubs, health = cluster["stubs"], cluster["health"]
    load = [control_pb2.LoadModelRequest(model="tiny", session_id=uuid.uuid4().hex, deadline_unix_ms=_deadline(120))] * 2
    assert not any(isinstance(r, grpc.RpcError) for r in _both(stubs, "LoadModel", load))
    requests, _ = _infer_requests(health, torch.rand(1, 1, 8, 8))
    for r in requests:
        r.deadline_unix_ms = _deadline(60)
    requests[1].model = "not-loaded-here"
    t0 = time.monotonic()
    replies = _both(stubs, "Infer", requests)
    assert time.monotonic() - t0 < 15, "party 0 waited for party 1 until the deadline"
    assert isinstance(replies[1], grpc.RpcError) and replies[1].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert isinstance(replies[0], grpc.RpcError) and replies[0].code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE)
    requests, _ = _infer_requests(health, torch.rand(1, 1, 8, 8))  # and the next request works
    assert not any(isinstance(r, grpc.RpcError) for r in _both(stubs, "Infer", requests))


def test_bad_input_fails_the_session_fast_and_the_next_works(cluster: dict) -> None:
    stubs, health = cluster["stubs"], cluster["health"]
    image = torch.rand(1, 1, 8, 8)
    requests, _ = _infer_requests(health, image, wrong_key_for=1)
    t0 = time.monotonic()
    replies = _both(stubs, "Infer", requests)
    assert time.monotonic() - t0 < 60  # well before the 120 s deadline
    assert isinstance(replies[1], grpc.RpcError) and replies[1].code() == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(replies[0], grpc.RpcError) and replies[0].code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE)
    # unknown model, empty batch
    with pytest.raises(grpc.RpcError) as err:
        stubs[0].Infer(control_pb2.InferRequest(session_id="x", model="nope", deadline_unix_ms=_deadline(5)), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    requests, clients = _infer_requests(health, image)
    replies = _both(stubs, "Infer", requests)
    assert not any(isinstance(r, grpc.RpcError) for r in replies), replies
    stats = stubs[0].Stats(control_pb2.StatsRequest(), timeout=10)
    assert stats.sessions_failed >= 1 and stats.sessions_ok >= 2


def test_a_call_that_the_coordinator_cancels_releases_the_party(cluster: dict) -> None:
    """Party 0 alone gets an Infer (its peer never does, as when party 1 died) and the caller cancels it.

    Without the abort, party 0 would hold its session until that call's 120 s deadline and refuse the next
    request, whose deadline is shorter; with it, the next request gives the plaintext logits.
    """
    stubs, health = cluster["stubs"], cluster["health"]
    load = [control_pb2.LoadModelRequest(model="tiny", session_id=uuid.uuid4().hex, deadline_unix_ms=_deadline(120))] * 2
    assert not any(isinstance(r, grpc.RpcError) for r in _both(stubs, "LoadModel", load))
    orphan, _ = _infer_requests(health, torch.rand(1, 1, 8, 8))
    call = stubs[0].Infer.future(orphan[0], timeout=120)
    with pytest.raises(grpc.FutureTimeoutError):
        call.result(timeout=3)  # party 0 is in the session (or waiting for its turn), for a peer that never comes
    call.cancel()
    image = torch.rand(2, 1, 8, 8)
    requests, clients = _infer_requests(health, image)
    for r in requests:
        r.deadline_unix_ms = _deadline(60)
    replies = _both(stubs, "Infer", requests, timeout=60)
    assert not any(isinstance(r, grpc.RpcError) for r in replies), replies
    with torch.no_grad():
        expected = cluster["model"](normalise_input(image, META))
    assert torch.allclose(_open_logits(replies, clients, health), expected, atol=0.05)


def test_the_party_command_line_shapes_the_dealer_link_and_turns_prefetch_off() -> None:
    """``--dealer-network wan --no-prefetch`` (the cold WAN benchmark); by default no shaping and prefetch on."""
    import argparse

    from parties.party import add_arguments, config_from_args
    from parties.transport import WAN, NetworkShape

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--rank", "0", "--listen", "127.0.0.1:1", "--peer", "127.0.0.1:2", "--dealer", "127.0.0.1:3", "--insecure"]
    default = config_from_args(parser.parse_args(base))
    assert default.dealer_shape == NetworkShape() and default.prefetch
    cold = config_from_args(parser.parse_args([*base, "--dealer-network", "wan", "--no-prefetch"]))
    assert cold.dealer_shape == WAN and not cold.prefetch
