"""The dealer's corrections make valid correlated randomness, and the dealer provider adds no online rounds."""

from __future__ import annotations

import torch

from mpcvit.prg import new_key
from protocols.crypten_compat import crypten
from protocols.local import run_two_party
from protocols.planning import offline
from protocols.providers import (
    DealerProvider,
    InProcessDealer,
    Request,
    TFPProvider,
    _bits,
    _generator,
    _ring,
    dealer_corrections,
    install_provider,
)

REQUESTS = [
    Request("additive", (3, 4), (4, 5), "matmul"),
    Request("additive", (2, 3), (2, 3), "mul"),
    Request("square", (6,)),
    Request("binary", (2, 3), (2, 3)),
    Request("wraps", (7,)),
    Request("B2A", (5,)),
    Request("bitmul", (4,)),
]


def test_corrections_complete_each_tuple() -> None:
    keys = (new_key(), new_key())
    corr = dealer_corrections(keys, REQUESTS)
    g0, g1 = _generator(keys[0]), _generator(keys[1])
    # additive matmul: c_0 (correction) + c_1 (party 1's draw) = (a_0 + a_1) @ (b_0 + b_1) mod 2^64
    a0, b0 = _ring((3, 4), g0), _ring((4, 5), g0)
    a1, b1, c1 = _ring((3, 4), g1), _ring((4, 5), g1), _ring((3, 5), g1)
    assert torch.equal(corr[0] + c1, (a0 + a1) @ (b0 + b1))
    a0, b0 = _ring((2, 3), g0), _ring((2, 3), g0)
    a1, b1, c1 = _ring((2, 3), g1), _ring((2, 3), g1), _ring((2, 3), g1)
    assert torch.equal(corr[1] + c1, (a0 + a1) * (b0 + b1))
    r0, r1, s1 = _ring((6,), g0), _ring((6,), g1), _ring((6,), g1)
    assert torch.equal(corr[2] + s1, (r0 + r1) * (r0 + r1))
    a0, b0 = _bits((2, 3), g0), _bits((2, 3), g0)
    a1, b1, c1 = _bits((2, 3), g1), _bits((2, 3), g1), _bits((2, 3), g1)
    assert torch.equal(corr[3] ^ c1, (a0 ^ a1) & (b0 ^ b1))
    r0, r1, t1 = _ring((7,), g0), _ring((7,), g1), _ring((7,), g1)
    exact = (r0.to(torch.float64) + r1.to(torch.float64) - (r0 + r1).to(torch.float64)) / 2.0**64  # the wrap count
    assert torch.equal(corr[4] + t1, exact.round().long())
    rb0, rb1, ra1 = _bits((5,), g0, 1), _bits((5,), g1, 1), _ring((5,), g1)
    assert torch.equal(corr[5] + ra1, rb0 ^ rb1)
    rb0, s0 = _bits((4,), g0, 1), _ring((4,), g0)
    rb1, s1, ra1, prod1 = _bits((4,), g1, 1), _ring((4,), g1), _ring((4,), g1), _ring((4,), g1)
    r = rb0 ^ rb1
    assert corr[6].shape == (2, 4)
    assert torch.equal(corr[6][0] + ra1, r) and torch.equal(corr[6][1] + prod1, r * (s0 + s1))


def test_request_wire_round_trip() -> None:
    req = Request("additive", (1, 3, 8, 8), (4, 3, 2, 2), "conv2d", (("stride", (2, 2)),))
    back = Request.from_wire(req.kind, req.size0, req.size1, req.op, req.kwargs_json)
    assert back == req
    assert req.output_size() == (1, 4, 4, 4)
    for bad in (("nope", (1,)), ("additive", (1,), (1,), "cat")):
        try:
            Request(*bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def _party(rank: int, kind: str, master_key: bytes) -> dict:
    import crypten.communicator as comm

    torch.manual_seed(5)
    x, y, w = torch.randn(4, 6), torch.randn(4, 6), torch.randn(6, 3)
    crypten.cfg.communicator.verbose = True
    if kind == "dealer":
        provider = DealerProvider(rank)
        dealer = InProcessDealer(master_key)
    else:
        provider = TFPProvider()
    install_provider(provider)
    ex, ey, ew = (crypten.cryptensor(t, src=0) for t in (x, y, w))

    def program() -> crypten.CrypTensor:
        return ((ex * ey).matmul(ew)).relu() + ex.square().sum(1, keepdim=True)

    if kind == "dealer":
        with offline(), provider.recording() as plan:  # the dry run sends nothing
            program()
        key, corr = dealer.next_batch(rank, plan)
        provider.begin_batch(key, plan, corr)
    comm.get().reset_communication_stats()
    out = program()
    rounds = comm.get().get_communication_stats()["rounds"]
    if kind == "dealer":
        provider.end_batch()
    got = out.get_plain_text()
    want = ((x * y) @ w).relu() + x.square().sum(1, keepdim=True)
    return {"err": float((got - want).abs().max()), "rounds": rounds,
            "dealer_bytes": provider.stats.bytes_received if kind == "dealer" else 0}


def test_dealer_matches_plaintext_and_adds_no_rounds() -> None:
    dealer = run_two_party(_party, "dealer", new_key(), timeout=120)
    tfp = run_two_party(_party, "tfp", new_key(), timeout=120)
    assert dealer[0]["err"] < 1e-2 and dealer[1]["err"] < 1e-2
    assert tfp[0]["err"] < 1e-2
    # the dealer's corrections were prefetched: online rounds are TFP's minus TFP's own tuple traffic (wraps scatter)
    assert dealer[0]["rounds"] <= tfp[0]["rounds"]
    assert dealer[0]["dealer_bytes"] > 0 and dealer[1]["dealer_bytes"] == 0
