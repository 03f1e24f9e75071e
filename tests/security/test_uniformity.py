"""Every kind of opening a party receives is uniform and does not depend on the other party's secret.

For each opening kind of the runtime (a Beaver product's x - a, an AND's
x ^ a, bit-to-arithmetic's b ^ rB packed 64 per word, bitmul's packed bits
with y - s, the DCF sign gate's x + r, a weight's W - b opened at model load
and the activation's x - a of a product with it, and everything a label
answer's argmax (``protocols.argmax``) opens: its gates' d + r and its index
products' s - a, (i_b - i_a) - b; the spline GeLU's gate c = x + r, square x' - r' and
product S - a, Q - b; the Fourier GeLU's c = x + r and its product's x' - a, psi - b; the select ReLU's
c = x + r and its select round's b xor rho, packed 64 per word) both parties run the protocol with the dealer provider three
times: every share zero, party 0's share a fixed structured pattern, party
1's share that pattern. What each party receives is reduced to a byte
histogram (256 bins) and the count of ones at each of the 64 bit positions:

* uniform: chi-square of the byte histogram against uniform, and every bit
  position's frequency within 6 sigma of 1/2;
* independent of the other party's secret: a two-sample chi-square between
  the histogram with the other's share zero and with it set to the pattern.

At least 10^5 64-bit words per kind and setting; the p-value threshold
(1e-6) keeps the suite's false alarms negligible while any real leak of a
structured share (which the pattern makes far from uniform) fails at once.
"""

from __future__ import annotations

import math

import pytest
from scipy.stats import chi2_contingency, chisquare

from mpcvit.prg import new_key
from protocols.local import run_two_party
from tests.security import views

P_MIN = 1e-6


@pytest.fixture(scope="module")
def stats() -> list[dict]:
    return run_two_party(views.opening_statistics, new_key(), timeout=600)


def _uniform(h: dict) -> None:
    assert chisquare(h["bytes"]).pvalue > P_MIN
    n = h["words"]
    for j, ones in enumerate(h["bits"]):
        assert abs(ones - n / 2) < 6 * math.sqrt(n / 4), f"bit {j}: {ones} ones in {n} words"


@pytest.mark.parametrize("kind", views.OPENING_KINDS)
def test_received_openings_are_uniform_and_independent(stats: list[dict], kind: str) -> None:
    for rank in (0, 1):
        other = f"p{1 - rank}"
        base, changed = stats[rank][f"{kind}/none"], stats[rank][f"{kind}/{other}"]
        assert base["words"] >= 100_000 or kind == "bitmul" and base["words"] >= 16_384 + (1 << 20)
        _uniform(base)
        _uniform(changed)
        _uniform(stats[rank][f"{kind}/p{rank}"])
        assert chi2_contingency([base["bytes"], changed["bytes"]]).pvalue > P_MIN, f"party {rank}'s view of {kind} depends on party {1 - rank}'s secret"


def test_an_unmasked_share_would_be_caught() -> None:
    """Control: the pattern itself, received unmasked, fails the uniformity check."""
    import torch

    pattern = views._secret(0, 0, 100_000, True)
    h = views._histograms([("sum", pattern)])
    with pytest.raises(AssertionError):
        _uniform(h)
    assert torch.count_nonzero(pattern) > 0
