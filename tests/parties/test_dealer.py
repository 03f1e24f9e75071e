"""The gRPC dealer: seeds and corrections give valid correlated randomness; refuses bad requests."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import torch

from parties.dealer import DealerClient, serve
from parties.pair import free_port
from parties.proto import dealer_pb2, dealer_pb2_grpc
from protocols.providers import Request, _bits, _generator, _ring

REQUESTS = [
    Request("additive", (3, 4), (4, 2), "matmul"),
    Request("additive", (5,), (5,), "mul"),
    Request("square", (6,)),
    Request("binary", (4,), (4,)),
    Request("wraps", (3,)),
    Request("B2A", (7,)),
]


@pytest.fixture(scope="module")
def dealer(certs: Path):
    server, port = serve("127.0.0.1:0", str(certs))
    yield f"127.0.0.1:{port}"
    server.stop(grace=0).wait()


def test_corrections_make_valid_triples(dealer: str, certs: Path) -> None:
    c0, c1 = DealerClient(dealer, 0, str(certs)), DealerClient(dealer, 1, str(certs))
    seed0, corrections = c0.fetch_batch("b1", REQUESTS)
    seed1, none = c1.fetch_batch("b1", REQUESTS)
    key0, key1 = seed0.key, seed1.key
    assert seed0.dealer_id == seed1.dealer_id and len(seed0.dealer_id) == 16
    assert seed0.commitment == seed1.commitment and len(seed0.commitment) == 16  # the same batch: the same commitment
    assert seed0.instance == seed1.instance and len(seed0.instance) == 16
    assert none is None and corrections is not None and len(corrections) == len(REQUESTS)
    assert len(key0) == len(key1) == 32 and key0 != key1  # 256-bit keys, one per party
    g0, g1 = _generator(key0), _generator(key1)
    # replay each party's draws as DealerProvider does; check the correlation holds
    a = _ring((3, 4), g0) + _ring((3, 4), g1)
    b = _ring((4, 2), g0) + _ring((4, 2), g1)
    c = corrections[0] + _ring((3, 2), g1)
    from protocols.ring import ring_matmul

    assert torch.equal(c, ring_matmul(a, b))
    a = _ring((5,), g0) + _ring((5,), g1)
    b = _ring((5,), g0) + _ring((5,), g1)
    assert torch.equal(corrections[1] + _ring((5,), g1), a * b)
    r = _ring((6,), g0) + _ring((6,), g1)
    assert torch.equal(corrections[2] + _ring((6,), g1), r * r)
    a = _bits((4,), g0) ^ _bits((4,), g1)
    b = _bits((4,), g0) ^ _bits((4,), g1)
    assert torch.equal(corrections[3] ^ _bits((4,), g1), a & b)
    assert c0.traffic.bytes_received == sum(r.correction_bytes() for r in REQUESTS) + 32
    # a key is handed once
    with pytest.raises(grpc.RpcError) as err:
        c1.get_key("b1")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_dcf_keys_reach_both_parties_and_compare(dealer: str, certs: Path) -> None:
    """A plan with a sign gate: party 1 fetches too, both get the same correction words, and the keys compare."""
    import numpy as np

    from protocols import dcf

    plan = [Request("square", (3,)), Request("dcf", (50,), kwargs=(("bits", 16), ("drop", 0), ("payload", 2)))]
    c0, c1 = DealerClient(dealer, 0, str(certs)), DealerClient(dealer, 1, str(certs))
    seed1, mat1 = c1.fetch_batch("dcf-batch", plan)  # party 1 first: the dealer keeps party 0's for it
    seed0, mat0 = c0.fetch_batch("dcf-batch", plan)
    key0, key1 = seed0.key, seed1.key
    assert mat0 is not None and mat1 is not None
    assert mat1[0].numel() == 0 and tuple(mat1[1].shape) == plan[1].output_size(1)
    assert torch.equal(mat0[1][2:], mat1[1])  # the same correction words, after party 0's [m], [m r]
    g0, g1 = _generator(key0), _generator(key1)
    for g in (g0, g1):
        _ring((3,), g)
    _ring((3,), g1)  # party 1's r^2 share
    r0, seed0 = _ring((50,), g0), _ring((50, 2), g0)
    r1, seed1 = _ring((50,), g1), _ring((50, 2), g1)
    m1 = _ring((50,), g1)
    r = (r0 + r1).numpy().view(np.uint64)
    m = (mat0[1][0] + m1).numpy().view(np.uint64)
    assert np.array_equal(m, (r >> np.uint64(15)) & np.uint64(1))
    alpha = r & np.uint64((1 << 15) - 1)
    k0 = dcf.unpack(seed0.numpy().view(np.uint64), mat0[1][2:].numpy().view(np.uint64), 15, 2)
    k1 = dcf.unpack(seed1.numpy().view(np.uint64), mat1[1].numpy().view(np.uint64), 15, 2)
    points = np.stack([alpha, (alpha + np.uint64(1)) & np.uint64(0x7FFF), (alpha - np.uint64(1)) & np.uint64(0x7FFF)])
    got = (dcf.evaluate(0, k0, points) + dcf.evaluate(1, k1, points))[..., 0]
    sign = np.uint64(1) - np.uint64(2) * m
    assert np.array_equal(got, sign[None] * (points < alpha[None]).astype(np.uint64))
    with pytest.raises(grpc.RpcError) as err:  # once per rank
        c1.get_corrections("dcf-batch", plan)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:  # party 1 gets nothing for a plan without DCF keys
        c1.get_corrections("other-batch", REQUESTS)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_dealer_refuses_wrong_role_and_bad_requests(dealer: str, certs: Path) -> None:
    party1 = DealerClient(dealer, 1, str(certs))
    # party 1 pretending to be party 0
    with pytest.raises(grpc.RpcError) as err:
        party1.stub.GetSeed(dealer_pb2.SeedRequest(batch_id="b2", rank=0), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    party0 = DealerClient(dealer, 0, str(certs))
    bad = dealer_pb2.CorrectionsRequest(batch_id="b2", requests=[dealer_pb2.RandomnessRequest(kind="nonsense", size0=[2])])
    with pytest.raises(grpc.RpcError) as err:
        list(party0.stub.GetCorrections(bad, timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        party0.stub.GetSeed(dealer_pb2.SeedRequest(batch_id="", rank=0), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_dealer_refuses_a_client_without_certificate(dealer: str) -> None:
    channel = grpc.insecure_channel(dealer)
    with pytest.raises(grpc.RpcError) as err:
        dealer_pb2_grpc.DealerStub(channel).Ping(dealer_pb2.DealerPingRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_dealer_that_lost_its_state_is_refused_not_used() -> None:
    """A model's weight masks come from the dealer seen at load; after a restart without --state the party refuses."""
    from parties.dealer import DealerSeed
    from parties.party import ModelLost, SessionBatches

    class FakeDealer:
        dealer_id = b"A" * 16
        timeout_s = 5.0

        def get_model_key(self, model_id: int, timeout: float | None = None) -> DealerSeed:
            return DealerSeed(bytes(32), self.dealer_id, b"m" * 16, b"i" * 16)

        def fetch_batch(self, batch_id: str, requests: list, timeout: float | None = None) -> tuple:
            assert timeout is not None and 0 < timeout <= 5.0  # the session's time left, at most the client's
            return DealerSeed(b"k" * 32, self.dealer_id, b"c" * 16, b"i" * 16), None

    fake = FakeDealer()
    batches = SessionBatches(fake, depth=0)  # type: ignore[arg-type]
    import time

    batches.begin("s1", time.time() + 3.0)
    batches.model_key(0, 7)
    plan = [Request("fixed", (2, 3), (3, 4), "matmul", (("mask", 0), ("model", 7)))]
    assert batches.next_batch(0, plan)[0] == b"k" * 32  # same dealer: fine
    fake.dealer_id = b"B" * 16  # restarted with a new master secret
    with pytest.raises(ModelLost, match="load it again"):
        batches.next_batch(0, plan)
    batches.begin("s2", time.time() - 1.0)  # a session past its deadline does not wait for the dealer
    with pytest.raises(Exception, match="deadline"):
        batches.next_batch(0, plan)


def test_batches_of_a_series_are_fetched_ahead_named_alike_on_both_parties(dealer: str, certs: Path) -> None:
    """Ticket n's forward queues n+1..n+depth; both parties name them alike, the dealer pairs them, a new plan refetches."""
    import time

    from parties.party import SessionBatches

    plan = [Request("additive", (3, 4), (4, 2), "matmul")]
    other_plan = [Request("additive", (3, 4), (4, 5), "matmul")]
    sides = [SessionBatches(DealerClient(dealer, r, str(certs)), depth=2) for r in (0, 1)]
    got: list[list] = [[], []]
    for number, p in ((0, plan), (1, plan), (2, plan), (3, other_plan)):
        for rank, side in enumerate(sides):
            side.begin(f"s{number}", time.time() + 30, series="epoch.pair0.tiny.b1", number=number)
            key, corrections = side.next_batch(rank, p)
            got[rank].append((key, corrections, side.end(), side.last_commitment))
            time.sleep(0.05 if number == 0 else 0)
        for side in sides:  # let the queued fetches finish
            for future, _, _ in list(side._ahead.values()):
                future.result(10)
    for number in range(4):
        (k0, c0, r0, m0), (k1, c1, r1, m1) = got[0][number], got[1][number]
        assert k0 != k1 and c1 is None and c0 is not None and len(c0) == 1
        assert m0 == m1 and len(m0) == 16  # both parties hold the same batch's commitment (checked on the first exchange)
        g0, g1 = _generator(k0), _generator(k1)  # the two keys and the correction make a valid triple: same batch
        a = _ring((3, 4), g0) + _ring((3, 4), g1)
        b = _ring((4, 5 if number == 3 else 2), g0) + _ring((4, 5 if number == 3 else 2), g1)
        from protocols.ring import ring_matmul

        assert torch.equal(c0[0] + _ring(tuple(c0[0].shape), g1), ring_matmul(a, b))
        # the first of the series and the one whose plan changed were fetched in the session, the others ahead
        assert r0.prefetched == r1.prefetched == (number in (1, 2)), number
        assert r0.nbytes > r1.nbytes >= 32 and r0.fetch_s > 0
    for side in sides:
        side.close()
    # a byte budget smaller than one batch: nothing is fetched ahead, every forward fetches its own
    small = SessionBatches(DealerClient(dealer, 0, str(certs)), depth=2, max_bytes=50)
    for number in range(2):
        small.begin(f"t{number}", time.time() + 30, series="epoch.pair0.tiny.b1.small", number=number)
        small.next_batch(0, plan)
        assert not small.end().prefetched and not small._ahead
    small.close()


def test_model_keys_survive_a_restart_with_state(tmp_path: Path) -> None:
    from parties.dealer import DealerState, load_master_key

    path = tmp_path / "state" / "master.key"
    first = DealerState(master_key=load_master_key(path))
    again = DealerState(master_key=load_master_key(path))
    assert first.derive_model_key(5, 0) == again.derive_model_key(5, 0) and first.dealer_id == again.dealer_id
    assert first.instance_id != again.instance_id  # a restart loses the batches: a new instance
    assert (path.stat().st_mode & 0o777) == 0o600
    assert DealerState().dealer_id != first.dealer_id  # no state: a new dealer


def test_both_parties_asking_at_once_make_the_material_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from parties import dealer as dealer_module
    from parties.dealer import DealerState
    calls = []
    real = dealer_module.all_corrections

    def slow(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(args[2])
        import time

        time.sleep(0.3)  # the other rank arrives meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(dealer_module, "all_corrections", slow)
    state = DealerState()
    plan = [Request("dcf", (6,), kwargs=(("bits", 16), ("drop", 0), ("payload", 2)))]
    out: dict[int, list] = {}
    threads = [threading.Thread(target=lambda r=r: out.__setitem__(r, state.corrections("b", plan, r))) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(calls) == 1 and sorted(calls[0]) == [0, 1]
    assert set(out) == {0, 1} and all(len(v) == 1 for v in out.values())


def test_a_batch_fetched_ahead_from_a_restarted_dealer_is_caught_by_its_commitment(certs: Path, tmp_path: Path) -> None:
    """The dealer restarts (same --state: same master secret, same dealer id) after party 0 fetched a batch ahead
    but before party 1 fetched it: party 1 gets the new process's batch of the same name. The two keys and the
    correction no longer make a valid triple (before: a forward computed on them and answered garbage with
    success); their commitments differ, which the forward's first exchange compares."""
    import time

    from parties.dealer import serve
    from parties.party import SessionBatches
    from protocols.ring import ring_matmul

    state, port = tmp_path / "master.key", free_port()
    server, _ = serve(f"127.0.0.1:{port}", str(certs), state=str(state))
    plan = [Request("additive", (3, 4), (4, 2), "matmul")]
    side0 = SessionBatches(DealerClient(f"127.0.0.1:{port}", 0, str(certs)), depth=2)
    side1 = SessionBatches(DealerClient(f"127.0.0.1:{port}", 1, str(certs)), depth=0)  # its fetch ahead did not happen
    got = []
    for number in (0, 1):
        for rank, side in enumerate((side0, side1)):
            side.begin(f"s{number}", time.time() + 30, series="epoch.pair0.tiny.b1", number=number)
            key, corrections = side.next_batch(rank, plan)
            got.append((key, corrections, side.end(), side.last_commitment))
        if number == 0:
            for future, _, _ in list(side0._ahead.values()):
                future.result(10)
            server.stop(grace=0).wait()
            server, _ = serve(f"127.0.0.1:{port}", str(certs), state=str(state))  # the same secret, a new process
    (k0, c0, r0, m0), (k1, _, _, m1) = got[2], got[3]
    assert r0.prefetched  # party 0's number 1 came from the old process
    g0, g1 = _generator(k0), _generator(k1)
    a = _ring((3, 4), g0) + _ring((3, 4), g1)
    b = _ring((4, 2), g0) + _ring((4, 2), g1)
    assert not torch.equal(c0[0] + _ring((3, 2), g1), ring_matmul(a, b))  # mismatched material
    assert m0 != m1 and got[0][3] == got[1][3]  # ... which the commitments tell; number 0's agreed
    side0.close()
    side1.close()
    server.stop(grace=0)


def test_a_served_load_id_is_refused_again_also_after_a_restart_with_state(tmp_path: Path) -> None:
    """Each rank's key of a load id leaves the dealer once, ever: the ids are kept beside the master secret."""
    import os

    from parties.dealer import DealerError, DealerState, ServedLoads, load_master_key, loads_path

    path = tmp_path / "master.key"
    first = DealerState(master_key=load_master_key(path), served_loads=ServedLoads(loads_path(path)))
    load_id = (1 << 127) + 12345  # 128-bit ids
    key0 = first.model_key(load_id, 0)
    first.model_key(load_id, 1)
    with pytest.raises(DealerError, match="never reused"):
        first.model_key(load_id, 0)
    again = DealerState(master_key=load_master_key(path), served_loads=ServedLoads(loads_path(path)))  # a restart
    for rank in (0, 1):
        with pytest.raises(DealerError, match="never reused"):
            again.model_key(load_id, rank)
    assert again.derive_model_key(load_id, 0) == key0  # later batches' "fixed" requests still find the keys
    assert again.model_key(load_id + 1, 0) != key0  # a fresh id: served
    assert (os.stat(loads_path(path)).st_mode & 0o777) == 0o600


def test_a_state_file_others_can_read_is_refused(tmp_path: Path) -> None:
    """The master secret with party 1's view gives every weight: refused as a TLS key file is."""
    from mpcvit.pki import KeyPermissionError
    from parties.dealer import load_master_key

    path = tmp_path / "master.key"
    load_master_key(path)
    path.chmod(0o644)
    with pytest.raises(KeyPermissionError, match="chmod 600"):
        load_master_key(path)


def test_a_forward_still_running_on_a_replaced_load_finds_its_dealer_id() -> None:
    """A model reloaded while a forward of the previous load runs (a peer restarted): the old load's dealer id stays
    for the last MODEL_LOADS_KEPT replaced loads, so that forward is not taken for a dealer that lost its state."""
    from parties.party import MODEL_LOADS_KEPT, SessionBatches

    class Dealer:
        timeout_s = 5.0

    batches = SessionBatches(Dealer(), depth=0)  # type: ignore[arg-type]
    for load in range(MODEL_LOADS_KEPT + 3):
        batches.model_dealer[load] = b"D" * 16
        if load:
            batches.end_model(load - 1)
    assert all(batches.model_dealer.get(load) == b"D" * 16 for load in range(3, MODEL_LOADS_KEPT + 3))
    assert all(load not in batches.model_dealer for load in range(2))  # older ones are forgotten: bounded


def test_each_served_corrections_call_gives_freed_memory_back(dealer: str, certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dealer trims the heap after streaming a batch's material (else its RSS grows with its malloc arenas)."""
    import parties.dealer as dealer_module

    calls: list[bool] = []
    monkeypatch.setattr(dealer_module, "release_freed_memory", lambda: calls.append(True) or True)
    c0 = DealerClient(dealer, 0, str(certs))
    c0.fetch_batch("trimmed", REQUESTS)
    assert calls == [True]
    with pytest.raises(grpc.RpcError):  # a refused call streams nothing and trims nothing
        c0.get_corrections("trimmed", REQUESTS)
    assert calls == [True]
    monkeypatch.undo()
    assert dealer_module.release_freed_memory() is (dealer_module._malloc_trim is not None)


def test_unclaimed_material_is_bounded_and_swept_when_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Material waiting for a rank that never asks: past max_pending_bytes the oldest is dropped (that rank's late
    call is UNAVAILABLE, the newest batches are still served); stale batches go on Ping too, with no new batch."""
    from parties import dealer as dealer_module
    from parties.dealer import DealerError, DealerState

    plan = [Request("dcf", (64,), kwargs=(("bits", 16), ("drop", 0), ("payload", 2)))]
    one = sum(t.nelement() * t.element_size() for t in dealer_module.all_corrections((b"a" * 32, b"b" * 32), plan, (1,))[1])
    state = DealerState(max_pending_bytes=2 * one)
    for name in ("b0", "b1", "b2"):
        state.corrections(name, plan, 0)  # party 1's material waits
    assert state.pending_bytes == 2 * one  # b0's was dropped
    with pytest.raises(DealerError) as err:
        state.corrections("b0", plan, 1)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(state.corrections("b2", plan, 1)) == 1 and len(state.corrections("b1", plan, 1)) == 1
    assert state.pending_bytes == 0

    clock = [1000.0]
    monkeypatch.setattr(dealer_module.time, "monotonic", lambda: clock[0])
    idle = DealerState(ttl_s=10.0)
    idle.corrections("left", plan, 0)
    assert idle.open_batches == 1 and idle.pending_bytes == one
    clock[0] += 11.0
    assert idle.open_batches == 0 and idle.pending_bytes == 0  # Ping's count sweeps: nothing waits past the TTL


def test_a_shaped_dealer_link_delays_each_call_by_its_bytes(dealer: str, certs: Path) -> None:
    """``DealerClient(shape=...)`` (the cold WAN benchmark): each call returns after 2 one-way delays plus its
    reply's bytes at the link's bandwidth; the material itself is the same as unshaped."""
    import time

    from parties.transport import NetworkShape

    shape = NetworkShape(delay_ms=30.0, bandwidth_bps=8e5)  # 100 kB/s: the corrections below take ~0.1 s
    plain, shaped = DealerClient(dealer, 0, str(certs)), DealerClient(dealer, 0, str(certs), shape=shape)
    big = [Request("additive", (100, 50), (50, 50), "matmul")]
    t0 = time.perf_counter()
    _, c_plain = plain.fetch_batch("shaped-0", big)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, c_shaped = shaped.fetch_batch("shaped-1", big)
    t_shaped = time.perf_counter() - t0
    nbytes = sum(int(c.nelement()) * 8 for c in c_shaped)  # 100 x 50 words: 40 kB
    link = 2 * (2 * shape.delay_ms / 1000.0) + 8.0 * (nbytes + 32) / shape.bandwidth_bps  # key + corrections, in turn
    assert c_plain is not None and c_plain[0].shape == c_shaped[0].shape
    assert t_shaped >= link and t_shaped - t_plain > 0.8 * link
    assert shaped.traffic.bytes_received == plain.traffic.bytes_received
