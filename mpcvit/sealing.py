"""Sealing shares between a client and a party: X25519 + HKDF-SHA256 + AES-256-GCM.

The client makes a one-time X25519 key pair per request. For party i it derives
``k_i = HKDF(X25519(client_sk, party_pk_i))`` and seals its input share with
AES-GCM under ``k_i``; party i derives the same key from its long-term secret
key and the client's public key, opens the share, and seals its output share
back under the same key (fresh random nonce, other associated data). The
coordinator relays sealed boxes and can open none of them.

Tensors travel as raw little-endian bytes plus a public shape and dtype; nothing
is pickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpcvit.prg import PRG

_INFO = b"mpcvit-seal-v1"
_DTYPES = {"int64": (torch.int64, np.dtype("<i8"))}
MAX_SEALED_ELEMENTS = 1 << 24


class SealError(ValueError):
    """A sealed box does not open (wrong key, tampered, or malformed)."""


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


def generate_keypair() -> KeyPair:
    sk = X25519PrivateKey.generate()
    return KeyPair(
        private=sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()),
        public=sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    )


def _key(own_private: bytes, peer_public: bytes) -> bytes:
    if len(own_private) != 32 or len(peer_public) != 32:
        raise SealError("X25519 keys are 32 raw bytes")
    shared = X25519PrivateKey.from_private_bytes(own_private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(shared)


def seal_tensor(tensor: torch.Tensor, own_private: bytes, peer_public: bytes, aad: bytes) -> Sealed:
    """Seal an int64 tensor for the holder of ``peer_public``."""
    if tensor.dtype != torch.int64:
        raise SealError(f"only int64 ring shares are sealed, got {tensor.dtype}")
    nonce = os.urandom(12)
    data = tensor.detach().cpu().contiguous().numpy().astype("<i8", copy=False).tobytes()
    ct = AESGCM(_key(own_private, peer_public)).encrypt(nonce, data, aad)
    return Sealed(tuple(int(s) for s in tensor.shape), "int64", nonce, ct)


def open_tensor(sealed: Sealed, own_private: bytes, peer_public: bytes, aad: bytes) -> torch.Tensor:
    """Open a sealed tensor; raises SealError if it does not open or does not match its shape."""
    if sealed.dtype not in _DTYPES:
        raise SealError(f"unsupported dtype {sealed.dtype!r}")
    if any(s < 0 for s in sealed.shape):
        raise SealError("negative dimension in shape")
    count = int(np.prod(sealed.shape)) if sealed.shape else 1
    if count > MAX_SEALED_ELEMENTS:
        raise SealError(f"sealed tensor too large: {count} elements")
    if len(sealed.nonce) != 12:
        raise SealError("nonce must be 12 bytes")
    try:
        data = AESGCM(_key(own_private, peer_public)).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag as exc:
        raise SealError("sealed share does not open for this key (wrong party, wrong client key, or tampered)") from exc
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
