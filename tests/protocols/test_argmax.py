"""The argmax / top-k protocol (``protocols.argmax``) against plaintext, in two in-process parties with the dealer."""

from __future__ import annotations

import pytest
import torch

from mpcvit.prg import new_key
from protocols import argmax
from protocols.local import run_two_party
from tests.protocols.helpers import run_with_dealer

SIZES = (1, 2, 3, 10, 17)


def _rows() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    rows = {f"random{c}": torch.randn(300, c, generator=g) * 6 for c in SIZES}
    # tie-free: every gap at least 0.01 (655 ring units), a random permutation of spaced values
    spaced = torch.stack([torch.randperm(10, generator=g).double() * 0.37 - 1.5 for _ in range(200)]).float()
    rows["tiefree10"] = spaced
    tied = (torch.randint(0, 4, (300, 10), generator=g)).float() * 0.5  # many exact ties
    rows["tied10"] = tied
    return rows


def _program() -> dict:
    from protocols.crypten_compat import crypten

    import crypten.communicator as comm

    out: dict = {}
    for name, x in _rows().items():
        ex = crypten.cryptensor(x, src=0)
        comm.get().reset_communication_stats()
        idx = argmax.argmax(ex)
        stats = comm.get().get_communication_stats()
        out[name] = {"idx": comm.get().all_reduce(idx).tolist(), "rounds": stats["rounds"], "bytes": stats["bytes"]}
    for name in ("random10", "tied10"):
        ex = crypten.cryptensor(_rows()[name], src=0)
        comm.get().reset_communication_stats()
        top = argmax.topk(ex, 3)
        stats = comm.get().get_communication_stats()
        out[f"top3 {name}"] = {"idx": comm.get().all_reduce(top).tolist(), "rounds": stats["rounds"], "bytes": stats["bytes"]}
    one = crypten.cryptensor(_rows()["random10"][:4], src=0)
    share = argmax.argmax(one)
    again = argmax.rerandomise(share)
    out["rerandomised"] = {"same": torch.equal(comm.get().all_reduce(share), comm.get().all_reduce(again)),
                           "changed": not torch.equal(share, again)}
    return out


def _party(rank: int, master_key: bytes, circuits: bool) -> dict:
    from protocols.config import DEFAULT_CONFIG, SecureConfig, apply_config

    apply_config(SecureConfig.circuits() if circuits else DEFAULT_CONFIG)
    out, plan = run_with_dealer(rank, master_key, _program)
    out["plan_kinds"] = sorted({r.kind for r in plan})
    return out


def _ring(x: torch.Tensor) -> torch.Tensor:
    """The fixed-point values CrypTen's encoder made (2^16, truncated)."""
    return torch.trunc(x.double() * 65536)


def _first_argmax(x: torch.Tensor) -> list[int]:
    v = _ring(x)
    return [int(torch.nonzero(row == row.max())[0]) for row in v]


@pytest.fixture(scope="module", params=[False, True], ids=["fss", "circuits"])
def results(request: pytest.FixtureRequest) -> dict:
    out = run_two_party(_party, new_key(), request.param, timeout=600)
    return {"circuits": request.param, "out": out[0], "out1": out[1]}


def test_argmax_is_the_first_index_of_the_maximum(results: dict) -> None:
    rows = _rows()
    for name, x in rows.items():
        got = results["out"][name]["idx"]
        assert got == _first_argmax(x), name
        assert results["out1"][name]["idx"] == got
    tiefree = rows["tiefree10"]
    assert results["out"]["tiefree10"]["idx"] == tiefree.argmax(-1).tolist()


def test_topk_ranks_the_largest_first(results: dict) -> None:
    for name in ("random10", "tied10"):
        v = _ring(_rows()[name])
        want = [sorted(range(10), key=lambda j: (-float(row[j]), j))[:3] for row in v]
        assert results["out"][f"top3 {name}"]["idx"] == want, name


def test_rounds_and_bytes(results: dict) -> None:
    out = results["out"]
    if results["circuits"]:
        assert out["random10"]["rounds"] > 5
        return
    assert "dcf" in out["plan_kinds"]
    for c in SIZES:
        levels = (c - 1).bit_length()  # ceil(log2 c)
        want = 0 if c == 1 else levels + (1 if c > 2 else 0)  # the payload products of levels 2.. ride on the next gate
        assert out[f"random{c}"]["rounds"] == want, c
    # 10 classes: 9 sign gates (8 bytes each) + 4 index products (16 bytes each) per row and party, sent and received
    assert out["random10"]["bytes"] == 300 * 2 * (9 * 8 + 4 * 16)
    assert out["top3 random10"]["rounds"] == 3 * 5


def test_rerandomised_shares_keep_their_sum(results: dict) -> None:
    assert results["out"]["rerandomised"] == {"same": True, "changed": True}


def _runtime_party(rank: int, model, meta: dict, policy: str, master_key: bytes, share: torch.Tensor) -> dict:  # noqa: ANN001
    from mpcvit.output_policy import OutputPolicy
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT

    install_provider(DealerProvider(rank))
    secure = SecureViT.share(model if rank == 0 else None, model.spec, meta if rank == 0 else None, owner=0,
                             batch_source=InProcessDealer(master_key), output_policy=OutputPolicy.parse(policy))
    out, report = secure.forward_shares(share)
    return {"share": out.tolist(), "ops": report.to_dict()["per_op"], "rounds": report.rounds}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("policy", ["label", "topk:3"])
def test_secure_vit_answers_only_the_indices(policy: str) -> None:
    """SecureViT under a label / top-k policy: its forward returns index shares (B, K) equal to the plaintext ranking."""
    from mpcvit.sealing import share_fixed_point
    from tests.protocols.helpers import digits, meta, plain_logits, trained

    model = trained("mpcvit_2_4_8")
    x, _ = digits("test")
    x = x[:40]
    s0, s1 = share_fixed_point(x, 16)
    out = run_two_party(_runtime_party, model, meta(), policy, new_key(), rank_args=((s0,), (s1,)), timeout=500)
    k = 1 if policy == "label" else 3
    shares = [torch.tensor(o["share"]) for o in out]
    assert shares[0].shape == (40, k) and shares[0].dtype == torch.int64
    got = shares[0] + shares[1]
    logits = plain_logits(model, x)
    top2 = logits.topk(k + 1, dim=-1).values
    clear = (top2[:, :-1] - top2[:, 1:]).min(-1).values > 0.1  # rows whose ranking the secure logits' error cannot flip
    assert int(clear.sum()) >= 30
    want = logits.topk(k, dim=-1).indices
    assert torch.equal(got[clear], want[clear])
    kind = "label" if policy == "label" else "topk"
    op = out[0]["ops"][f"output-{kind}"]
    assert op["rounds"] == k * 5  # 10 classes: 4 levels + the last payload product, per index
