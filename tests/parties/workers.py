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


def communicator_semantics(rank: int) -> dict[str, Any]:
    """What CrypTen programs rely on from torch.distributed: p2p apart from collectives, autograd inputs, half precision.

    Each part is reported as its result or as the error it raised, so one failing part does not hide the others."""
    import crypten.communicator as comm

    c = comm.get()
    peer = 1 - rank
    out: dict[str, Any] = {}

    def part(name: str, fn: Any) -> None:
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            out[name] = f"error: {type(exc).__name__}: {exc}"

    def irecv_across_collectives() -> dict[str, Any]:
        # rank 0 leaves an irecv pending across two collectives, then takes a p2p object; rank 1 sends first, then joins them
        # (the reverse, a collective message that comes while a p2p receive waits, is no valid torch.distributed program
        # for blocking sends: tests/parties/test_transport.py checks it at the session level)
        if rank == 0:
            buf = torch.zeros(3, dtype=torch.int64)
            req = c.irecv(buf, src=1)
            summed = c.all_reduce(torch.tensor([1, 2]))
            gathered = c.all_gather(torch.tensor([5]))
            obj = c.recv_obj(1)
            req.wait()
            received = buf
        else:
            sent = c.isend(torch.tensor([7, 8, 9]), dst=0)
            summed = c.all_reduce(torch.tensor([10, 20]))
            gathered = c.all_gather(torch.tensor([6]))
            c.send_obj({"k": [1, 2]}, 0)
            sent.wait()
            received = obj = None
        return {"summed": summed, "gathered": torch.cat(gathered), "received": received, "obj": obj}

    def autograd_reduce() -> dict[str, Any]:
        x = torch.tensor([1.5, -2.0], requires_grad=True)
        y = c.all_reduce(x)
        y.sum().backward()
        z = torch.tensor([0.25 + rank], requires_grad=True)
        r = c.reduce(z, 0)
        batched = c.all_reduce([torch.tensor([1.0], requires_grad=True), torch.tensor([2.0, 3.0], requires_grad=True)], batched=True)
        return {"all_reduce": y.detach(), "requires_grad": y.requires_grad, "grad": x.grad,
                "reduce": r.detach() if r is not None else None, "batched": [b.detach() for b in batched]}

    def half_precision() -> dict[str, Any]:
        result = {}
        for dtype in (torch.float16, torch.bfloat16):
            name = str(dtype).removeprefix("torch.")
            s = c.all_reduce(torch.tensor([1.5, -0.25], dtype=dtype) * (rank + 1))
            b = c.broadcast(torch.tensor([3.0 + rank, 0.5], dtype=dtype), 1)
            result[name] = {"all_reduce": s.float(), "broadcast": b.float(), "dtypes": [str(s.dtype), str(b.dtype)]}
        return result

    part("irecv_across_collectives", irecv_across_collectives)
    part("autograd", autograd_reduce)
    part("half", half_precision)
    c.barrier()  # both leave together (gloo's teardown right after a broadcast's root returns can hang the other party)
    out["peer"] = peer
    return out


DROPOUT_X = torch.arange(1.0, 25.0).reshape(2, 3, 4)


def generator_api(rank: int) -> dict[str, Any]:
    """CrypTen's generator API over whatever communicator is installed: crypten.manual_seed (debug mode, as CrypTen
    wants it), initial_seed, the ring draws masks come from, and training-time dropout."""
    from protocols.crypten_compat import generate_random_ring_element

    cpu = torch.device("cpu")
    with crypten.cfg.temp_override({"debug.debug_mode": True}):
        crypten.manual_seed(0, 0, 0)
    slots = ("prev", "next", "local", "global")
    out: dict[str, Any] = {
        "initial_seed": {s: crypten.generators[s][cpu].initial_seed() for s in slots},
        "draws": {s: generate_random_ring_element((4,), generator=crypten.generators[s][cpu]) for s in slots},
    }
    x = crypten.cryptensor(DROPOUT_X if rank == 0 else torch.zeros_like(DROPOUT_X), src=0, requires_grad=True)
    module = crypten.nn.Dropout(0.5).encrypt().train()
    out["nn_dropout"] = module(x).get_plain_text()
    out["feature_dropout"] = crypten.nn.Dropout2d(0.5).encrypt().train()(x).get_plain_text()
    plain = crypten.cryptensor(DROPOUT_X if rank == 0 else torch.zeros_like(DROPOUT_X), src=0)
    out["mpc_dropout"] = plain.dropout(0.5, training=True).get_plain_text()  # its mask a secret random tensor
    return out
