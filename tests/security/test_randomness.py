"""Where randomness comes from: the PRG's known answers, fresh dealer keys, and no torch generator in any secure path."""

from __future__ import annotations

import pytest
import torch

from mpcvit.models.registry import VARIANTS, create_model, model_spec
from mpcvit.prg import KEY_BYTES, PRG, derive_key, new_key
from protocols.local import run_two_party
from tests.security import views


# -- the PRG ---------------------------------------------------------------------------------------
def test_prg_known_answers() -> None:
    """AES-256 (FIPS-197 style zero key / zero block) and NIST SP 800-38A F.5.5 CTR-AES256 block 1."""
    assert PRG(bytes(32)).bytes(16).hex() == "dc95c078a2408989ad48a21492842087"
    key = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    counter = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    plain = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    stream = PRG(key, counter).bytes(16)
    assert bytes(a ^ b for a, b in zip(stream, plain)).hex() == "601ec313775789a5b7a7f504bbf3d228"


def test_prg_stream_is_consumed_in_order_and_typed() -> None:
    key = new_key()
    a, b = PRG(key), PRG(key)
    first = a.ring((3, 5))
    assert first.dtype == torch.int64 and first.shape == (3, 5)
    assert torch.equal(first, b.ring(15).view(3, 5))  # same key, same calls: same values
    bits = a.bits(1000, 1)
    assert set(bits.unique().tolist()) <= {0, 1}
    assert int(a.bits(1000, 20).max()) < 2**20
    assert a.drawn == 15 * 8 + 1000 + 8000
    assert not torch.equal(PRG(new_key()).ring(8), PRG(new_key()).ring(8))
    with pytest.raises(ValueError, match="32 bytes"):
        PRG(b"short")
    assert derive_key(key, "a") != derive_key(key, "b") and len(derive_key(key, "a")) == KEY_BYTES


def test_crypten_draws_use_the_prg_and_refuse_torch_generators() -> None:
    from protocols.crypten_compat import generate_kbit_random_tensor, generate_random_ring_element

    import crypten.common.rng as rng
    import crypten.mpc.primitives.arithmetic as arithmetic

    assert rng.generate_random_ring_element is generate_random_ring_element
    assert arithmetic.generate_random_ring_element is generate_random_ring_element
    key = new_key()
    assert torch.equal(generate_random_ring_element((4,), generator=PRG(key)), PRG(key).ring(4))
    assert int(generate_kbit_random_tensor((50,), bitlength=3).max()) < 8
    with pytest.raises(TypeError, match="mpcvit.prg"):
        generate_random_ring_element((4,), generator=torch.Generator().manual_seed(1))


# -- the dealer's keys ---------------------------------------------------------------------------------
def test_dealer_keys_are_256_bit_and_fresh_per_batch() -> None:
    from parties.dealer import DealerState

    state = DealerState()
    keys = [state.key(f"batch-{i}", rank)[0] for i in range(20) for rank in (0, 1)]
    assert all(isinstance(k, bytes) and len(k) * 8 >= 128 for k in keys)
    assert len(set(keys)) == len(keys)


def test_a_batch_key_is_used_once() -> None:
    from protocols.providers import DealerProvider, InProcessDealer

    provider = DealerProvider(1)
    dealer = InProcessDealer(new_key())
    key, _ = dealer.next_batch(1, [])
    provider.begin_batch(key, [])
    provider.end_batch()
    with pytest.raises(RuntimeError, match="used before"):
        provider.begin_batch(key, [])
    assert dealer.next_batch(1, [])[0] != key
    with pytest.raises(ValueError, match="master key"):
        InProcessDealer(b"")


# -- no Mersenne Twister in any secure path ----------------------------------------------------------------
def test_secure_forward_of_every_variant_without_torch_generators() -> None:
    """Load + one forward of every variant, with torch.Generator / randint / rand raising in both parties."""
    names = [f"{v}_2_4_8" for v in VARIANTS]
    images = [torch.rand(1, *model_spec(n).input_shape, generator=torch.Generator().manual_seed(i)) for i, n in enumerate(names)]
    from mpcvit.sealing import share_fixed_point

    with views.no_torch_randomness():
        splits = [share_fixed_point(x, 16) for x in images]
    r0, r1 = run_two_party(views.forward_without_torch_rng, names, new_key(),
                           rank_args=(([s[0] for s in splits],), ([s[1] for s in splits],)), timeout=300)
    for i, name in enumerate(names):
        torch.manual_seed(i)
        with torch.no_grad():
            plain = create_model(name).eval()(images[i])
        got = (torch.tensor(r0[i]) + torch.tensor(r1[i])).double() / 2**16
        assert (got - plain).abs().max() < 0.25, name


def test_dealer_and_seal_input_without_torch_generators() -> None:
    from mpcvit.client import seal_input
    from mpcvit.sealing import generate_keypair
    from protocols.providers import Request, dealer_corrections

    requests = [Request("additive", (3, 4), (4, 5), "matmul"), Request("binary", (6,), (6,)), Request("B2A", (9,)),
                Request("bitmul", (4,)), Request("wraps", (3,)), Request("square", (2,))]
    keys = [generate_keypair().public for _ in range(2)]
    with views.no_torch_randomness():
        corrections = dealer_corrections((new_key(), new_key()), requests)
        sealed = seal_input(torch.full((1, 1, 8, 8), 0.5), keys, model="vit_2_4_8")
    assert len(corrections) == len(requests) and len(sealed.shares) == 2
