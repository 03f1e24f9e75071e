"""Shared helpers of the protocols tests: a quickly trained digits model and a two-party secure evaluation."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from mpcvit.models.registry import create_model
from mpcvit.models.vit import VisionTransformer


def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn digits in [0, 1], (B, 1, 8, 8), via mpcvit.data when present."""
    try:
        from mpcvit.data import load_dataset

        ds = load_dataset("digits", split)
        return ds.tensors[0].float(), ds.tensors[1].long()
    except ImportError:  # pragma: no cover - before mpcvit.data existed
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(d.target)
        cut = int(len(y) * 0.8)
        return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


NORMALISATION = {"mean": [0.3], "std": [0.4]}


CACHE = Path(tempfile.gettempdir()) / "mpcvit-protocols-test-models"


def _fit(model: VisionTransformer, epochs: int, seed: int) -> VisionTransformer:
    x, y = digits("train")
    xn = (x - NORMALISATION["mean"][0]) / NORMALISATION["std"][0]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(xn[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@lru_cache(maxsize=None)
def trained(name: str, seed: int = 0) -> VisionTransformer:
    """A ``*_2_4_8`` model trained on digits with plain AdamW, inputs normalised by NORMALISATION.

    ``vit_2_4_8`` trains 12 epochs from scratch; every other variant starts from
    its weights (all variants share parameter shapes) and fine-tunes 4 epochs.
    Cached on disk (a temp dir), one thread, a few seconds each.
    """
    path = CACHE / f"{name}-{seed}.pt"
    model = create_model(name)
    if path.is_file():
        model.load_state_dict(torch.load(path))
        return model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        if name == "vit_2_4_8":
            model = _fit(model, 12, seed)
        else:
            model.load_state_dict(trained("vit_2_4_8", seed).state_dict())
            model = _fit(model, 4, seed)
    finally:
        torch.set_num_threads(threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def plain_logits(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model((x - NORMALISATION["mean"][0]) / NORMALISATION["std"][0])


def meta() -> dict[str, Any]:
    return {"normalisation": NORMALISATION}


def run_with_dealer(rank: int, master_key: bytes, program: Any) -> tuple[Any, list]:
    """``program()`` on this party with the dealer provider, as the runtime does it: a local dry run records the
    randomness plan (nothing sent to the peer), an ``InProcessDealer`` makes this rank's batch, then the real run.

    Returns (the real run's result, the plan).
    """
    from protocols.planning import offline
    from protocols.providers import DealerProvider, InProcessDealer, install_provider

    dealer, party = InProcessDealer(master_key), DealerProvider(rank)
    install_provider(party)
    with offline(), party.recording() as plan:
        program()
    key, corrections = dealer.next_batch(rank, plan)
    party.begin_batch(key, plan, corrections)
    out = program()
    party.end_batch()
    return out, plan
