"""The gRPC dealer: seeds and corrections give valid correlated randomness; refuses bad requests."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import torch

from parties.dealer import DealerClient, serve
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
    key0, corrections = c0.fetch_batch("b1", REQUESTS)
    key1, none = c1.fetch_batch("b1", REQUESTS)
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
