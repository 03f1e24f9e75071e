"""CrypTen over the gRPC communicator, in two processes, against plaintext and against CrypTen's gloo."""

from __future__ import annotations

import pytest
import torch

from parties.communicator import decode_obj, encode_obj
from parties.pair import PairConfig, run_pair
from tests.parties import workers

TOL = {"softmax": 0.02, "reciprocal": 0.02}


@pytest.fixture(scope="module")
def gloo_result() -> list[dict]:
    return run_pair(workers.crypten_ops, config=PairConfig(backend="gloo"), timeout_s=120)


@pytest.mark.timeout(180)
def test_crypten_ops_over_grpc_match_plaintext_and_gloo(gloo_result: list[dict]) -> None:
    grpc_result = run_pair(workers.crypten_ops, config=PairConfig(backend="grpc"), timeout_s=120)
    expected = workers.plaintext_ops()
    for rank in (0, 1):
        for op in workers.OPS:
            got, ref = grpc_result[rank]["values"][op], gloo_result[rank]["values"][op]
            tol = TOL.get(op, 1e-3)
            torch.testing.assert_close(got, expected[op], atol=tol, rtol=tol, check_dtype=False, msg=f"grpc {op} vs plaintext")
            torch.testing.assert_close(got, ref, atol=2 * tol, rtol=2 * tol, msg=f"grpc {op} vs gloo")
        # the same protocol costs the same, counted the same way
        assert grpc_result[rank]["rounds"] == gloo_result[rank]["rounds"]
        assert grpc_result[rank]["bytes"] == gloo_result[rank]["bytes"]
    assert grpc_result[0]["rounds"] > 20


@pytest.mark.timeout(180)
def test_crypten_ops_with_the_grpc_dealer_provider(certs, gloo_result: list[dict]) -> None:
    from parties.dealer import serve

    server, port = serve("127.0.0.1:0", str(certs))
    try:
        result = run_pair(workers.crypten_ops_with_dealer, f"127.0.0.1:{port}", str(certs), timeout_s=150)
    finally:
        server.stop(grace=0).wait()
    expected = workers.plaintext_ops()
    for op in workers.OPS:
        tol = TOL.get(op, 1e-3)
        torch.testing.assert_close(result[0]["values"][op], expected[op], atol=tol, rtol=tol, check_dtype=False, msg=op)
    assert result[0]["plan"] == result[1]["plan"] > 10
    # the dealer adds no online rounds: the same rounds as CrypTen's own (TFP) run over gloo
    assert result[0]["rounds"] == gloo_result[0]["rounds"]
    assert result[0]["dealer_bytes"] > 0 and result[1]["dealer_bytes"] == 32  # party 1 gets only its 256-bit key


def test_object_codec_round_trips_plain_values_and_refuses_others() -> None:
    value = {"size": torch.Size([2, 3]), "t": (1, 2.5, None, "x"), "l": [True, torch.tensor([[1, 2]])]}
    back = decode_obj(encode_obj(value))
    assert back["size"] == torch.Size([2, 3]) and isinstance(back["size"], torch.Size)
    assert back["t"] == (1, 2.5, None, "x")
    assert torch.equal(back["l"][1], torch.tensor([[1, 2]]))
    with pytest.raises(ValueError):
        encode_obj(object())
    with pytest.raises(ValueError):
        encode_obj({1: "non-string key"})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["grpc", "gloo"])
def test_gather_and_all_gather_return_fresh_tensors(backend: str) -> None:
    """CrypTen's upstream test_mutation: what a collective returns never aliases the caller's tensor (gloo as the yardstick)."""
    result = run_pair(workers.collectives_are_fresh, config=PairConfig(backend=backend), timeout_s=100)
    for rank in (0, 1):
        r = result[rank]
        assert r["own_unchanged"], rank
        assert not any(r["all_gather_shares_memory"]) and not any(r["gather_shares_memory"]), rank
        assert torch.equal(r["all_gather"][0], torch.arange(5)) and torch.equal(r["all_gather"][1], torch.arange(5) + 10)
        assert r["all_reduce_big"] and r["all_reduce_small"], rank
        assert not r["all_reduce_shares_memory"] and not r["all_reduce_small_shares_memory"], rank


@pytest.fixture(scope="module", params=["grpc", "gloo"])
def semantics(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    """workers.communicator_semantics over the gRPC communicator, and over CrypTen's gloo as the yardstick."""
    return request.param, run_pair(workers.communicator_semantics, config=PairConfig(backend=request.param), timeout_s=100)


def _ok(part: object) -> object:
    assert not (isinstance(part, str) and part.startswith("error")), part
    return part


@pytest.mark.timeout(150)
def test_an_irecv_stays_pending_across_collectives(semantics: tuple[str, list[dict]]) -> None:
    _, result = semantics
    for rank in (0, 1):
        r = _ok(result[rank]["irecv_across_collectives"])
        assert torch.equal(r["summed"], torch.tensor([11, 22])) and torch.equal(r["gathered"], torch.tensor([5, 6]))
    assert torch.equal(result[0]["irecv_across_collectives"]["received"], torch.tensor([7, 8, 9]))
    assert result[0]["irecv_across_collectives"]["obj"] == {"k": [1, 2]}


@pytest.mark.timeout(150)
def test_all_reduce_and_reduce_of_tensors_that_require_grad(semantics: tuple[str, list[dict]]) -> None:
    _, result = semantics
    for rank in (0, 1):
        r = _ok(result[rank]["autograd"])
        torch.testing.assert_close(r["all_reduce"], torch.tensor([3.0, -4.0]))
        assert r["requires_grad"] and torch.equal(r["grad"], torch.ones(2))
        torch.testing.assert_close(r["batched"], [torch.tensor([2.0]), torch.tensor([4.0, 6.0])])
    torch.testing.assert_close(result[0]["autograd"]["reduce"], torch.tensor([1.5]))


@pytest.mark.timeout(150)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_collectives(semantics: tuple[str, list[dict]], dtype: str) -> None:
    backend, result = semantics
    for rank in (0, 1):
        half = _ok(result[rank]["half"])
        h = _ok(half[dtype]) if isinstance(half, dict) else half
        torch.testing.assert_close(h["all_reduce"], torch.tensor([4.5, -0.75]))
        torch.testing.assert_close(h["broadcast"], torch.tensor([4.0, 0.5]))
        assert h["dtypes"] == [f"torch.{dtype}"] * 2, backend


def test_an_armed_check_rides_an_all_reduce_while_a_p2p_message_waits_aside() -> None:
    """One process, an endpoint whose peer is itself (every message comes back): the armed check is carried and compared
    by the all_reduce that finds the pending irecv's message first."""
    from parties.communicator import GrpcCommunicator
    from parties.pair import free_port
    from parties.transport import Endpoint

    port = free_port()
    endpoint = Endpoint(0, f"127.0.0.1:{port}", f"127.0.0.1:{port}")
    try:
        with endpoint.session("loop", 10.0) as session:
            comm = GrpcCommunicator(session)
            buf = torch.zeros(3, dtype=torch.int64)
            comm.isend(torch.tensor([4, 5, 6]), 1).wait()
            req = comm.irecv(buf, 1)
            comm.arm_check(bytes(range(16)), "test material")
            assert torch.equal(comm.all_reduce(torch.tensor([1, 2])), torch.tensor([2, 4]))  # its own tensor, twice
            assert comm.checks_passed == 1 and not comm.check_pending
            req.wait()
            assert torch.equal(buf, torch.tensor([4, 5, 6])) and session.aside == (0, 0)
    finally:
        endpoint.close()
