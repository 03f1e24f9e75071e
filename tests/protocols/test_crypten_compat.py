"""The compat shim makes crypten 0.4.1 import and run a two-process secret-shared computation."""

from __future__ import annotations

import torch

from protocols.crypten_compat import crypten
from protocols.local import run_two_party


def test_crypten_init_and_local_sharing() -> None:
    crypten.init()
    x = crypten.cryptensor(torch.tensor([1.5, -2.0, 3.25]))
    torch.testing.assert_close((x * x + 1).get_plain_text(), torch.tensor([3.25, 5.0, 11.5625]), atol=1e-3, rtol=0)


def test_two_process_secret_shared_computation() -> None:
    results = run_two_party(_two_party_product, timeout=120)
    for r in results:
        torch.testing.assert_close(torch.tensor(r), torch.tensor([[2.0, -6.0], [0.5, 12.0]]), atol=1e-3, rtol=0)


def _two_party_product(rank: int) -> list[list[float]]:
    # plain lists cross the process boundary; torch tensors would be shared by fd and vanish with the child
    a = crypten.cryptensor(torch.tensor([[1.0, 2.0], [0.25, 3.0]]), src=0)  # party 0's secret
    b = crypten.cryptensor(torch.tensor([[2.0, -3.0], [2.0, 4.0]]), src=1)  # party 1's secret
    return (a * b).get_plain_text().tolist()
