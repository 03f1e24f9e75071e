"""Independent sub-protocols in shared rounds: one exchange per round for all of them.

A *step protocol* is a generator. Each ``yield`` hands over one round's
openings, a list of ``(kind, tensor)`` with kind ``SUM`` (additive shares on
Z_2^64, opened as x_0 + x_1) or ``XOR`` (XOR shares, opened as x_0 ^ x_1);
the generator receives the opened tensors, in the same order, and finally
``return``s its result. ``run(*protocols)`` drives several of them in
lockstep: in each round it opens what every still-running protocol asked
for with ONE collective call, so k independent protocols of r_1 .. r_k rounds
cost max(r_i) rounds, not their sum, and the same bytes.

* only SUM openings: ``all_reduce`` (SUM, batched), the call a lone Beaver
  product makes anyway;
* only XOR openings: ``all_reduce`` (BXOR, batched);
* both: one ``all_gather`` of the flattened concatenation, combined locally.

Randomness is requested inside the generators, in an order fixed by the
protocols alone (``run`` always advances them in argument order), so the
dealer's recorded plan replays it exactly.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch

from protocols.crypten_compat import crypten  # noqa: F401  (the shim before CrypTen's modules)

import crypten.communicator as comm  # noqa: E402

SUM = "sum"
XOR = "xor"
Opening = tuple[str, torch.Tensor]
Steps = Generator[list[Opening], list[torch.Tensor], Any]


def parallel(*protocols: Steps) -> Steps:
    """A step protocol that runs ``protocols`` in lockstep (usable with ``yield from`` inside another one)."""
    results: list[Any] = [None] * len(protocols)
    active: dict[int, list[Opening]] = {}
    for i, proto in enumerate(protocols):
        try:
            active[i] = proto.send(None)
        except StopIteration as stop:
            results[i] = stop.value
    while active:
        order = list(active)
        opened = yield [item for i in order for item in active[i]]
        pos = 0
        nxt: dict[int, list[Opening]] = {}
        for i in order:
            n = len(active[i])
            try:
                nxt[i] = protocols[i].send(opened[pos : pos + n])
            except StopIteration as stop:
                results[i] = stop.value
            pos += n
        active = nxt
    return results


def run(*protocols: Steps) -> list[Any]:
    """Drive step protocols in lockstep, one collective call per round; their return values, in argument order."""
    driver = parallel(*protocols)
    try:
        request = driver.send(None)
        while True:
            request = driver.send(open_all(request))
    except StopIteration as stop:
        return stop.value


def run_one(protocol: Steps) -> Any:
    """``run`` for a single protocol."""
    return run(protocol)[0]


def open_all(items: list[Opening]) -> list[torch.Tensor]:
    """Open every (kind, share) in one round (see the module docstring)."""
    if not items:
        return []
    kinds = {kind for kind, _ in items}
    if not kinds <= {SUM, XOR}:
        raise ValueError(f"unknown opening kind in {sorted(kinds)}")
    tensors = [t for _, t in items]
    c = comm.get()
    if kinds == {SUM}:
        return c.all_reduce(tensors, batched=True)
    if kinds == {XOR}:
        return c.all_reduce(tensors, op=torch.distributed.ReduceOp.BXOR, batched=True)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    gathered = c.all_gather(flat)
    other = gathered[1 - c.get_rank()]
    out = []
    pos = 0
    for kind, t in items:
        n = t.numel()
        theirs = other[pos : pos + n].view(t.shape)
        out.append(t + theirs if kind == SUM else t ^ theirs)
        pos += n
    return out
