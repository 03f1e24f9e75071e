"""Sealing shares between a client and a party: X25519 + HKDF-SHA256 + AES-256-GCM, bound to their context.

The client makes a one-time X25519 key pair per request. Every box names its
context (:class:`BoxContext`): the request id, the model, the party's rank and
the direction (``input``: client to party, ``output``: party to client).

* Key: ``k = HKDF-SHA256(X25519(sk, pk), info = "mpcvit-seal-v2" | direction
  | client public key | party public key)``, so the two directions use
  different keys, and a key belongs to one client key and one party key.
* Associated data: request id, model, rank and direction (each
  length-prefixed), then the public shape and dtype.

A box therefore opens only in its own context: a share swapped to the other
party, an input reflected as an output (or back), or a box re-sent under
another request id or model fails its tag and is refused with
:class:`SealError` before anything is computed on it. (Refusing a box replayed
in the same context is the party's job: it remembers the request ids and
client keys it has seen, ``parties.party.ReplayGuard``.) The coordinator relays
sealed boxes and can open none of them.

Tensors travel as raw little-endian bytes plus a public shape and dtype; nothing
is pickled.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpcvit.prg import PRG

_INFO = b"mpcvit-seal-v2"
_DTYPES = {"int64": (torch.int64, np.dtype("<i8"))}
MAX_SEALED_ELEMENTS = 1 << 24
Direction = Literal["input", "output"]
DIRECTIONS: tuple[str, ...] = ("input", "output")


class SealError(ValueError):
    """A sealed box does not open (wrong key, wrong context, tampered, or malformed)."""


@dataclass(frozen=True)
class KeyPair:
    private: bytes  # 32 raw bytes
    public: bytes  # 32 raw bytes


@dataclass(frozen=True)
class Sealed:
    shape: tuple[int, ...]
    dtype: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class BoxContext:
    """What a box is for: bound into its key (direction) and its associated data (all of it)."""

    request_id: str
    model: str
    rank: int
    direction: Direction

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise SealError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.rank not in (0, 1):
            raise SealError(f"rank must be 0 or 1, got {self.rank}")

    def encode(self) -> bytes:
        fields = (self.request_id.encode(), self.model.encode(), bytes([self.rank]), self.direction.encode())
        return b"".join(struct.pack("<I", len(f)) + f for f in fields)

    def describe(self) -> str:
        return f"request {self.request_id}, model {self.model}, party {self.rank}, {self.direction}"


def generate_keypair() -> KeyPair:
    sk = X25519PrivateKey.generate()
    return KeyPair(
        private=sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()),
        public=sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    )


def public_from_private(private: bytes) -> bytes:
    if len(private) != 32:
        raise SealError("X25519 keys are 32 raw bytes")
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(own_private: bytes, peer_public: bytes, direction: str, own_is_client: bool) -> bytes:
    if len(own_private) != 32 or len(peer_public) != 32:
        raise SealError("X25519 keys are 32 raw bytes")
    own_public = public_from_private(own_private)
    client_public, party_public = (own_public, peer_public) if own_is_client else (peer_public, own_public)
    shared = X25519PrivateKey.from_private_bytes(own_private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    info = _INFO + b"|" + direction.encode() + b"|" + client_public + party_public
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _aad(context: BoxContext, shape: tuple[int, ...], dtype: str) -> bytes:
    return context.encode() + struct.pack(f"<I{len(shape)}q", len(shape), *shape) + dtype.encode()


def seal_tensor(
    tensor: torch.Tensor, own_private: bytes, peer_public: bytes, context: BoxContext, *, _nonce: bytes | None = None
) -> Sealed:
    """Seal an int64 tensor for the holder of ``peer_public`` (the client seals inputs, a party outputs).

    ``_nonce`` is for known-answer test vectors only (``clients/js/test/make_vectors.py``): left out, as
    everywhere else, the nonce is 12 fresh random bytes. A nonce must never repeat under one key.
    """
    if tensor.dtype != torch.int64:
        raise SealError(f"only int64 ring shares are sealed, got {tensor.dtype}")
    if _nonce is not None and len(_nonce) != 12:
        raise SealError("nonce must be 12 bytes")
    nonce = os.urandom(12) if _nonce is None else bytes(_nonce)
    shape = tuple(int(s) for s in tensor.shape)
    data = tensor.detach().cpu().contiguous().numpy().astype("<i8", copy=False).tobytes()
    key = _key(own_private, peer_public, context.direction, own_is_client=context.direction == "input")
    ct = AESGCM(key).encrypt(nonce, data, _aad(context, shape, "int64"))
    return Sealed(shape, "int64", nonce, ct)


def open_tensor(sealed: Sealed, own_private: bytes, peer_public: bytes, context: BoxContext) -> torch.Tensor:
    """Open a sealed tensor in ``context``; raises SealError if it does not open there or does not match its shape."""
    if sealed.dtype not in _DTYPES:
        raise SealError(f"unsupported dtype {sealed.dtype!r}")
    if any(s < 0 for s in sealed.shape):
        raise SealError("negative dimension in shape")
    count = int(np.prod(sealed.shape)) if sealed.shape else 1
    if count > MAX_SEALED_ELEMENTS:
        raise SealError(f"sealed tensor too large: {count} elements")
    if len(sealed.nonce) != 12:
        raise SealError("nonce must be 12 bytes")
    key = _key(own_private, peer_public, context.direction, own_is_client=context.direction == "output")
    try:
        data = AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, _aad(context, tuple(sealed.shape), sealed.dtype))
    except InvalidTag as exc:
        raise SealError(
            f"sealed share does not open as {context.describe()}: sealed for another party, request, model or direction "
            "(swapped, reflected or re-targeted), with another key, or tampered"
        ) from exc
    torch_dtype, np_dtype = _DTYPES[sealed.dtype]
    if len(data) != count * np_dtype.itemsize:
        raise SealError(f"sealed payload has {len(data)} bytes, shape {sealed.shape} needs {count * np_dtype.itemsize}")
    return torch.from_numpy(np.frombuffer(data, dtype=np_dtype).copy()).reshape(sealed.shape).to(torch_dtype)


def share_fixed_point(x: torch.Tensor, precision_bits: int = 16, key: bytes | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``x`` in fixed point (round(x * 2^bits)) and split it into two additive shares on Z_2^64.

    Share 0 is a uniform mask r from the project's AES-256-CTR PRG
    (``mpcvit.prg``) under a fresh 256-bit key from the OS, share 1 is
    enc(x) - r: each share alone is uniform on Z_2^64 and independent of x.
    ``key`` (32 secret bytes) replaces the fresh key only where two processes
    that both play the client must derive the same split (benchmarks); a key
    must never split two different inputs.
    """
    enc = torch.round(x.double() * (1 << precision_bits)).to(torch.int64)
    r = (PRG(key) if key is not None else PRG.fresh()).ring(enc.shape)
    return r, enc - r  # int64 arithmetic wraps modulo 2^64


def reconstruct_fixed_point(share0: torch.Tensor, share1: torch.Tensor, precision_bits: int = 16) -> torch.Tensor:
    """Add two shares on Z_2^64 and decode the fixed-point value."""
    return (share0 + share1).double() / (1 << precision_bits)
