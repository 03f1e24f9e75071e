"""Functions the two-party tests run in each spawned party process (importable at module level)."""

from __future__ import annotations

from typing import Any

import torch

from protocols.crypten_compat import crypten

OPS = ("add", "mul", "matmul", "lt", "relu", "softmax", "square", "reciprocal")


def plaintext_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(4, 6, generator=g), torch.randn(6, 6, generator=g)


def crypten_ops(rank: int) -> dict[str, Any]:
    """CrypTen's kinds of operations on shared inputs (x from party 0, y from party 1)."""
    crypten.cfg.communicator.verbose = True
    return _ops(rank)


def crypten_ops_with_dealer(rank: int, dealer: str, certs_dir: str) -> dict[str, Any]:
    """The same ops with the dealer provider fed by the gRPC dealer: dry run, one fetch, then the real run."""
    from parties.dealer import DealerClient
    from protocols.planning import offline
    from protocols.providers import DealerProvider, install_provider

    crypten.cfg.communicator.verbose = True
    provider = DealerProvider(rank)
    install_provider(provider)
    with offline(), provider.recording() as plan:  # the local dry run: nothing reaches the peer
        _ops(rank)
    client = DealerClient(dealer, rank, certs_dir)
    seed, corrections = client.fetch_batch("ops-batch", list(plan))
    provider.begin_batch(seed.key, list(plan), corrections)
    result = _ops(rank)
    provider.end_batch()
    result["plan"] = len(plan)
    result["dealer_bytes"] = client.traffic.bytes_received
    return result


def _ops(rank: int) -> dict[str, Any]:
    import crypten.communicator as comm

    x_plain, y_plain = plaintext_inputs()
    x = crypten.cryptensor(x_plain if rank == 0 else torch.zeros_like(x_plain), src=0)
    y = crypten.cryptensor(y_plain if rank == 1 else torch.zeros_like(y_plain), src=1)
    comm.get().reset_communication_stats()
    out = {
        "add": (x + x).get_plain_text(),
        "mul": (x * x).get_plain_text(),
        "matmul": x.matmul(y).get_plain_text(),
        "lt": (x < 0.25).get_plain_text(),
        "relu": x.relu().get_plain_text(),
        "softmax": x.softmax(-1).get_plain_text(),
        "square": y.square().get_plain_text(),
        "reciprocal": (x.abs() + 1).reciprocal().get_plain_text(),
    }
    stats = comm.get().get_communication_stats()
    return {"values": out, "rounds": stats["rounds"], "bytes": stats["bytes"]}


def plaintext_ops() -> dict[str, torch.Tensor]:
    x, y = plaintext_inputs()
    return {
        "add": x + x,
        "mul": x * x,
        "matmul": x @ y,
        "lt": (x < 0.25).float(),
        "relu": x.relu(),
        "softmax": x.softmax(-1),
        "square": y * y,
        "reciprocal": 1 / (x.abs() + 1),
    }


def exchange(rank: int, n: int) -> list[int]:
    """A raw all_reduce loop (transport only)."""
    import crypten.communicator as comm

    return [int(comm.get().all_reduce(torch.tensor([rank * 1000 + i])).item()) for i in range(n)]



def collectives_are_fresh(rank: int) -> dict[str, Any]:
    """gather / all_gather return fresh tensors (never the caller's own), and a multi-frame all_reduce adds up."""
    import crypten.communicator as comm

    c = comm.get()
    own = torch.arange(5) + 10 * rank
    before = own.clone()
    gathered = c.all_gather(own)
    at_root = c.gather(own, 0)
    out: dict[str, Any] = {
        "all_gather": [t.clone() for t in gathered],
        "all_gather_shares_memory": [t.data_ptr() == own.data_ptr() for t in gathered],
        "gather_shares_memory": [t is not None and t.data_ptr() == own.data_ptr() for t in at_root],
    }
    for t in gathered + [t for t in at_root if t is not None]:
        t.add_(1000)  # a caller mutating what it got back (as CrypTen's test_mutation does)
    out["own_unchanged"] = bool(torch.equal(own, before))
    big = torch.full((3 << 18,), rank + 1, dtype=torch.int64)  # 6 MiB: several 1 MiB frames each way
    reduced = c.all_reduce(big)
    out["all_reduce_big"] = bool(torch.equal(reduced, torch.full((3 << 18,), 3, dtype=torch.int64)))
    out["all_reduce_shares_memory"] = reduced.data_ptr() == big.data_ptr()
    small = torch.arange(4) + rank
    reduced_small = c.all_reduce(small)  # one frame
    out["all_reduce_small"] = bool(torch.equal(reduced_small, 2 * torch.arange(4) + 1)) and bool(torch.equal(small, torch.arange(4) + rank))
    reduced_small.add_(1)  # what came back is writable and the caller's own
    out["all_reduce_small_shares_memory"] = reduced_small.data_ptr() == small.data_ptr()
    return out
