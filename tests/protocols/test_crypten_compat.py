"""The compat shim makes crypten 0.4.1 import and run a two-process secret-shared computation."""

from __future__ import annotations

import pytest
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


# -- CrypTen's generator API on the PRG slots -------------------------------------------------------------


def _keep_mask(seed: int, size: tuple[int, ...], p: float = 0.5) -> torch.Tensor:
    """The keep-mask CrypTen's own dropout draws from a "global" torch.Generator seeded ``seed``."""
    return (torch.rand(size, generator=torch.Generator().manual_seed(seed)) > p).float()


def _dropout_then_feature_dropout(seed: int, x: torch.Tensor, p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """CrypTen's Dropout then Dropout2d of ``x`` (N, C, ...) from one "global" torch.Generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    element = (torch.rand(x.shape, generator=g) > p).float()
    channel = (torch.rand(x.shape[:2], generator=g) > p).float().reshape(*x.shape[:2], *([1] * (x.dim() - 2)))
    return x * element / (1 - p), x * channel / (1 - p)


def test_generator_api_works_and_masks_stay_on_the_prg() -> None:
    from mpcvit.prg import PRG
    from protocols.crypten_compat import GeneratorSlot, generate_random_ring_element

    crypten.init()
    cpu = torch.device("cpu")
    slots = ("prev", "next", "local", "global")
    with pytest.raises(ValueError, match="debug mode"):  # CrypTen's own rule, kept
        crypten.manual_seed(0, 0, 0)

    def seeded_draws() -> dict[str, torch.Tensor]:
        with crypten.cfg.temp_override({"debug.debug_mode": True}):
            crypten.manual_seed(0, 0, 3)
        assert {s: crypten.generators[s][cpu].initial_seed() for s in slots} == {"prev": 0, "next": 0, "local": 0, "global": 3}
        return {s: generate_random_ring_element((16,), generator=crypten.generators[s][cpu]) for s in slots}

    first = seeded_draws()
    crypten._setup_prng()  # the next session: fresh keys, the same seeds
    second = seeded_draws()
    upstream = torch.randint(-(2**63), 2**63 - 1, (16,), generator=torch.Generator().manual_seed(0))  # CrypTen's draw under seed 0
    for s in slots:
        slot = crypten.generators[s][cpu]
        assert isinstance(slot, GeneratorSlot) and isinstance(slot, PRG) and not isinstance(slot, torch.Generator)
        assert not torch.equal(first[s], second[s]), s  # seeding did not make the masks repeat
        assert not torch.equal(second[s], upstream), s
        with pytest.raises(TypeError, match="mpcvit.prg"):  # the training stream never feeds a draw
            generate_random_ring_element((4,), generator=slot.training)
    # seed() re-seeds the training stream only; initial_seed reports it
    glob = crypten.generators["global"][cpu]
    new_seed = glob.seed()
    assert glob.initial_seed() == new_seed == glob.training.initial_seed()
    glob.manual_seed(-1)
    assert glob.initial_seed() == 2**64 - 1  # unsigned, as torch.Generator reports it


def test_training_time_dropout_runs_and_is_reproducible_under_manual_seed() -> None:
    crypten.init()
    x_plain = torch.arange(1.0, 25.0).reshape(2, 3, 4)
    for _ in range(2):  # the same public keep-mask after the same seed, as in CrypTen
        with crypten.cfg.temp_override({"debug.debug_mode": True}):
            crypten.manual_seed(1, 2, 7)
        x = crypten.cryptensor(x_plain, requires_grad=True)
        y = crypten.nn.Dropout(0.5).encrypt().train()(x)
        torch.testing.assert_close(y.get_plain_text(), x_plain * _keep_mask(7, (2, 3, 4)) * 2, atol=1e-3, rtol=0)
        y.sum().backward()  # the mask is kept for the backward pass
        torch.testing.assert_close(x.grad.get_plain_text(), _keep_mask(7, (2, 3, 4)) * 2, atol=1e-3, rtol=0)
    feature = crypten.nn.Dropout2d(0.5).encrypt().train()(crypten.cryptensor(x_plain, requires_grad=True)).get_plain_text()
    torch.testing.assert_close(feature, _dropout_then_feature_dropout(7, x_plain)[1], atol=1e-3, rtol=0)  # whole channels
    # an MPCTensor's own dropout (no autograd): a secret random mask from the local PRG
    out = crypten.cryptensor(x_plain).dropout(0.5, training=True).get_plain_text()
    assert all(torch.isclose(o, torch.tensor(0.0), atol=1e-3) or torch.isclose(o, 2 * v, atol=1e-3) for o, v in zip(out.flatten(), x_plain.flatten()))
    # in eval mode dropout is the identity
    torch.testing.assert_close(crypten.nn.Dropout(0.5).encrypt().eval()(crypten.cryptensor(x_plain)).get_plain_text(), x_plain, atol=1e-3, rtol=0)


@pytest.mark.timeout(240)
def test_generator_api_over_grpc_two_sessions_seeded_alike() -> None:
    """Two parties over the gRPC communicator, two sessions, both after crypten.manual_seed(0, 0, 0): the pairwise keys
    agree within a session, every mask draw differs between the sessions, the public dropout masks repeat."""
    from parties.pair import PairConfig, run_pair
    from tests.parties import workers

    runs = [run_pair(workers.generator_api, config=PairConfig(backend="grpc"), timeout_s=100) for _ in range(2)]
    for run in runs:
        r0, r1 = run
        assert torch.equal(r0["draws"]["next"], r1["draws"]["prev"]) and torch.equal(r0["draws"]["prev"], r1["draws"]["next"])
        assert torch.equal(r0["draws"]["global"], r1["draws"]["global"])
        assert not torch.equal(r0["draws"]["local"], r1["draws"]["local"])
        for r in run:
            assert r["initial_seed"] == {"prev": 0, "next": 0, "local": 0, "global": 0}
            element, channel = _dropout_then_feature_dropout(0, workers.DROPOUT_X)  # both parties' public masks agree
            torch.testing.assert_close(r["nn_dropout"], element, atol=1e-3, rtol=0)
            torch.testing.assert_close(r["feature_dropout"], channel, atol=1e-3, rtol=0)
            mpc = r["mpc_dropout"].flatten()
            assert bool(((mpc.abs() < 1e-3) | ((mpc - 2 * workers.DROPOUT_X.flatten()).abs() < 1e-3)).all())
    for slot in ("prev", "next", "local", "global"):
        for rank in (0, 1):
            assert not torch.equal(runs[0][rank]["draws"][slot], runs[1][rank]["draws"][slot]), (slot, rank)
