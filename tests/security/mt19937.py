"""A Mersenne-Twister (MT19937) cloner: the attack a party mounts on generator words it receives.

From 624 consecutive 32-bit outputs the generator's whole state follows
(each output is an invertible "tempering" of one state word), and then every
later output. torch's CPU generator is MT19937; ``torch.randint`` over the
whole int64 range returns two consecutive 32-bit outputs per word. The
tests use this to show that the raw words a party receives today (for
example party 1's Beaver mask b_1, which party 0 can compute) no longer let
anyone predict the stream they came from.
"""

from __future__ import annotations

N, M = 624, 397
MASK32 = 0xFFFFFFFF


def _undo_right(y: int, shift: int) -> int:
    out = y
    for _ in range(32 // shift + 1):
        out = y ^ (out >> shift)
    return out & MASK32


def _undo_left(y: int, shift: int, mask: int) -> int:
    out = y
    for _ in range(32 // shift + 1):
        out = y ^ ((out << shift) & mask)
    return out & MASK32


def untemper(y: int) -> int:
    y = _undo_right(y, 18)
    y = _undo_left(y, 15, 0xEFC60000)
    y = _undo_left(y, 7, 0x9D2C5680)
    return _undo_right(y, 11)


def _temper(y: int) -> int:
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    return (y ^ (y >> 18)) & MASK32


class Clone:
    """The generator after the 624 outputs it was built from."""

    def __init__(self, outputs: list[int]) -> None:
        if len(outputs) < N:
            raise ValueError(f"need {N} outputs, got {len(outputs)}")
        self.state = [untemper(o & MASK32) for o in outputs[:N]]
        self.index = N

    def _twist(self) -> None:
        s = self.state
        for i in range(N):
            y = (s[i] & 0x80000000) | (s[(i + 1) % N] & 0x7FFFFFFF)
            s[i] = s[(i + M) % N] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        self.index = 0

    def next32(self) -> int:
        if self.index >= N:
            self._twist()
        y = self.state[self.index]
        self.index += 1
        return _temper(y)


def words_to_outputs(words: list[int]) -> list[int]:
    """int64 words of ``torch.randint(-2**63, 2**63 - 1)`` -> the 32-bit MT outputs behind them, in order."""
    out = []
    for w in words:
        u = (int(w) + (1 << 63)) & ((1 << 64) - 1)  # randint adds its lower bound
        out += [u >> 32, u & MASK32]
    return out


def predict_words(words: list[int], count: int) -> list[int]:
    """Clone from the first 312 int64 words and predict the ``count`` int64 words that follow them."""
    clone = Clone(words_to_outputs(words[: N // 2]))
    preds = []
    for _ in range(count):
        hi, lo = clone.next32(), clone.next32()
        u = (hi << 32) | lo
        preds.append(u - (1 << 63))
    return preds
