"""The project's one cryptographic PRG: AES-256 in counter mode, keys from the OS.

Every value that masks a secret (the client's input shares, the dealer's
per-batch streams, CrypTen's pairwise zero-sharing generators, the parties'
local randomness) is drawn from a :class:`PRG`. ``torch.Generator``,
``torch.rand*``, ``random`` and numpy's default generators are
Mersenne-Twister-like or otherwise predictable: from a few hundred outputs
their state falls out, so they may drive training and tests, never a mask.

Construction: ``PRG(key)`` with a 32-byte key (256 bits; ``PRG.fresh()``
takes it from ``secrets``) and an optional 16-byte nonce is the AES-256-CTR
keystream of ``cryptography`` (OpenSSL, AES-NI where the CPU has it) read as
little-endian words. The stream is consumed in order: ``ring``, ``bits`` and
``bytes`` each take the next bytes, so two holders of the same key that make
the same calls get the same values (the dealer replays a party's stream this
way). One key must never be used for two streams (the dealer and the parties
take a fresh key per batch).

Uniformity: AES-CTR output is indistinguishable from uniform bytes under the
standard PRP assumption on AES, so ``ring`` gives uniform elements of
Z_2^64 (all 2^64 values, unlike ``torch.randint``'s half-open range), and
``bits(n, k)`` uniform k-bit values (a k-bit mask of uniform bytes).
Throughput here is about 1 GB/s on one core (faster than torch's MT19937).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32
NONCE_BYTES = 16
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)


def _numel(size: Sequence[int]) -> int:
    n = 1
    for s in size:
        if int(s) < 0:
            raise ValueError(f"negative dimension in size {tuple(size)}")
        n *= int(s)
    return n


def _as_size(size: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(size, int):
        return (size,)
    return tuple(int(s) for s in size)


class PRG:
    """A keyed AES-256-CTR stream, read as ring elements, k-bit values or bytes (see the module docstring)."""

    __slots__ = ("_enc", "drawn")

    def __init__(self, key: bytes, nonce: bytes = bytes(NONCE_BYTES)) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise ValueError(f"a PRG key is {KEY_BYTES} bytes from the OS (secrets.token_bytes), got {type(key).__name__} of length {len(key) if hasattr(key, '__len__') else '?'}")
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a PRG nonce is {NONCE_BYTES} bytes")
        self._enc = Cipher(algorithms.AES(bytes(key)), modes.CTR(bytes(nonce))).encryptor()
        self.drawn = 0  # bytes taken from the stream so far

    @classmethod
    def fresh(cls) -> "PRG":
        """A PRG under a new 256-bit key from the OS, known to nobody else."""
        return cls(new_key())

    def _fill(self, n: int) -> bytearray:
        """The next ``n`` bytes of the stream, in a buffer with 15 spare bytes at the end."""
        if n < 0:
            raise ValueError("negative byte count")
        out = bytearray(n + 15)  # update_into needs block_size - 1 bytes of room
        with memoryview(out) as view, memoryview(_ZEROS) as zeros:
            pos = 0
            while pos < n:
                k = min(_CHUNK, n - pos)
                self._enc.update_into(zeros[:k], view[pos : pos + k + 15])
                pos += k
        self.drawn += n
        return out

    def bytes(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream."""
        return bytes(self._fill(n)[:n])

    def ring(self, size: Sequence[int] | int) -> torch.Tensor:
        """Uniform elements of Z_2^64 as int64 (two's complement), shape ``size``."""
        shape = _as_size(size)
        n = _numel(shape)
        if n == 0:
            return torch.zeros(shape, dtype=torch.int64)
        return torch.frombuffer(self._fill(8 * n), dtype=torch.int64, count=n).reshape(shape)

    def bits(self, size: Sequence[int] | int, bitlength: int | None = None) -> torch.Tensor:
        """Uniform values in [0, 2^bitlength) as int64 (bitlength 64, or None: the whole ring), shape ``size``."""
        k = 64 if bitlength is None else int(bitlength)
        if not 1 <= k <= 64:
            raise ValueError(f"bitlength must be in 1..64, got {bitlength}")
        if k == 64:
            return self.ring(size)
        shape = _as_size(size)
        n = _numel(shape)
        if n == 0:
            return torch.zeros(shape, dtype=torch.int64)
        if k <= 8:  # one byte per value
            raw = torch.frombuffer(self._fill(n), dtype=torch.uint8, count=n).to(torch.int64)
        else:
            raw = torch.frombuffer(self._fill(8 * n), dtype=torch.int64, count=n)
        return (raw & ((1 << k) - 1)).reshape(shape)


def new_key() -> bytes:
    """A fresh 256-bit PRG key from the OS."""
    return secrets.token_bytes(KEY_BYTES)


def derive_key(master: bytes, label: str) -> bytes:
    """A 256-bit key for ``label`` from a secret ``master`` key (HMAC-SHA256: a PRF; distinct labels give independent keys)."""
    if len(master) < 16:
        raise ValueError("a master key has at least 128 bits")
    return hmac.new(bytes(master), label.encode(), hashlib.sha256).digest()


__all__ = ["KEY_BYTES", "PRG", "derive_key", "new_key"]
