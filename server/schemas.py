"""Request and response models of the REST API (separate models for what comes in and what goes out).

Bytes travel as standard base64 strings in JSON.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from mpcvit.sealing import Sealed


def _b64decode(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64: {exc}") from exc


MAX_COMPARE_MODELS = 8  # most models one POST /v1/compare runs

B64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"

B64Bytes = Annotated[
    bytes,
    BeforeValidator(_b64decode),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str),
    WithJsonSchema({"type": "string", "format": "base64", "pattern": B64_PATTERN}),
]


def _exact_b64_pattern(n: int) -> str:
    """A regex for the standard base64 text of exactly ``n`` bytes (the last character's free bits are zero)."""
    full, rest = divmod(n, 3)
    tail = {0: "", 1: "[A-Za-z0-9+/][AQgw]==", 2: "[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]="}[rest]
    return f"^[A-Za-z0-9+/]{{{4 * full}}}{tail}$"


def b64_exactly(n: int) -> object:
    """Bytes as base64 that must decode to exactly ``n`` bytes; the schema says so (length and pattern)."""

    def check(value: bytes) -> bytes:
        if len(value) != n:
            raise ValueError(f"must be {n} bytes, got {len(value)}")
        return value

    length = 4 * ((n + 2) // 3)
    return Annotated[
        bytes,
        BeforeValidator(_b64decode),
        AfterValidator(check),
        PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str),
        WithJsonSchema({"type": "string", "format": "base64", "minLength": length, "maxLength": length, "pattern": _exact_b64_pattern(n)}),
    ]


PublicKey = b64_exactly(32)
Nonce = b64_exactly(12)

MAX_SIDE = 4096  # most pixels per image side (and per share dimension)
MAX_UNIX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the largest deadline a request may name (an int64, a float exactly)

ModelName = Annotated[
    str,
    Field(min_length=1, max_length=200, description="a model's name (GET /v1/models; the served names are this schema's enum)"),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200, "x-model-name": True}),
]

RequestId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="client-chosen id, also the sealing AAD")]


class SealedTensorIn(BaseModel):
    """An int64 tensor sealed (X25519 + HKDF-SHA256 + AES-256-GCM) to one party; shape and dtype are public."""

    model_config = ConfigDict(extra="forbid")

    shape: list[Annotated[int, Field(ge=1, le=MAX_SIDE, strict=True)]] = Field(
        ..., min_length=3, max_length=3, description="(C, H, W): must equal the model's input_shape (GET /v1/models)"
    )
    dtype: Literal["int64"] = "int64"
    nonce: Nonce = Field(..., description="12-byte AES-GCM nonce (base64)")  # type: ignore[valid-type]
    ciphertext: B64Bytes = Field(
        ..., description="AES-GCM ciphertext of the little-endian int64 values, tag appended (base64): 8 * C * H * W + 16 bytes"
    )

    def to_sealed(self) -> Sealed:
        return Sealed(tuple(self.shape), self.dtype, self.nonce, self.ciphertext)


class SealedTensorOut(BaseModel):
    shape: list[int]
    dtype: str
    nonce: B64Bytes
    ciphertext: B64Bytes

    @classmethod
    def from_sealed(cls, s: Sealed) -> "SealedTensorOut":
        return cls(shape=list(s.shape), dtype=s.dtype, nonce=s.nonce, ciphertext=s.ciphertext)


class PrivateClassifyRequest(BaseModel):
    """Private mode: the coordinator only relays sealed shares; it never sees the image."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    request_id: RequestId
    client_public_key: PublicKey = Field(..., description="the client's one-time X25519 public key (32 bytes, base64)")  # type: ignore[valid-type]
    shares: list[SealedTensorIn] = Field(..., min_length=2, max_length=2, description="share i sealed to party i")
    deadline_unix_ms: int | None = Field(
        None, ge=0, le=MAX_UNIX_MS, strict=True,
        description="absolute deadline, ms since the Unix epoch (at most year 9999); default and cap: now + the server's request timeout",
    )


class DealerCostsOut(BaseModel):
    """The offline phase of one party's forward, apart from its online costs."""

    bytes: int = Field(0, description="bytes this party received from the dealer for this forward")
    wait_seconds: float = Field(0.0, description="how long the forward waited for them (0 when fetched ahead and ready)")
    fetch_seconds: float = Field(0.0, description="how long fetching them took, wherever it ran")
    prefetched: bool = Field(False, description="fetched ahead of the forward")


class PartyCostsOut(BaseModel):
    rank: int
    rounds: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    dealer: DealerCostsOut = Field(default_factory=DealerCostsOut)


class TotalCostsOut(BaseModel):
    rounds: int = Field(..., description="communication rounds (max over the parties)")
    bytes: int = Field(..., description="bytes sent by both parties")
    seconds: float = Field(..., description="wall time of the secure forward")


class CostsOut(BaseModel):
    """Costs of the secure forward this request was part of (the whole batch)."""

    total: TotalCostsOut
    parties: list[PartyCostsOut]


class PrivateClassifyResponse(BaseModel):
    model: str
    request_id: str
    session_id: str
    coordinator_saw_image: Literal[False] = False
    output_shares: list[SealedTensorOut] = Field(..., description="party i's share of the fixed-point logits, sealed to the client; "
                                                  "under a label / topk:K output policy its share of the class indices instead "
                                                  "(ring integers, shape (1,) / (K,); the client adds the two on Z_2^64)")
    precision_bits: int
    output_policy: str = Field("logits", description="what the output shares hold, as the model owner (party 0) set it: "
                                                     "logits, label or topk:K")
    costs: CostsOut
    queue_seconds: float
    batch_size: int


def _has_bool(value: object) -> bool:
    """Whether a nested list holds a boolean anywhere (JSON true/false are not numbers)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            if item and not isinstance(item[0], list):
                if any(isinstance(v, bool) for v in item):
                    return True
            else:
                stack.extend(item)
    return False


def _pixel_array(value: object) -> np.ndarray:
    """A rectangular array of numbers in [0, 1], (H, W), (H, W, C) or (C, H, W) with C in {1, 3}, at most MAX_SIDE per side."""
    if isinstance(value, np.ndarray):
        return value
    if not isinstance(value, list):
        raise ValueError("must be an array of rows of numbers")
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ValueError("must be a rectangular array (every row the same length)") from None
    if arr.dtype.kind not in "iuf" or _has_bool(value):  # numpy turns [true, 0.5] into [1.0, 0.5]
        raise ValueError("must be a rectangular array of numbers (every row the same length, no strings, booleans or nulls)")
    if arr.ndim not in (2, 3):
        raise ValueError(f"must have 2 or 3 dimensions, (H, W), (H, W, C) or (C, H, W); got {arr.ndim}")
    if arr.ndim == 3 and arr.shape[0] not in (1, 3) and arr.shape[-1] not in (1, 3):
        raise ValueError(f"a 3-dimensional array needs C in {{1, 3}} first or last; got shape {list(arr.shape)}")
    if max(arr.shape) > MAX_SIDE or arr.size == 0:
        raise ValueError(f"sides must be 1 to {MAX_SIDE} long; got shape {list(arr.shape)}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError("pixel values must lie in [0, 1]")
    return arr


_UNIT = {"type": "number", "minimum": 0, "maximum": 1}


def _side(items: dict[str, object], fixed: int | None = None) -> dict[str, object]:
    """An array level: a fixed channel count, or an image side of at least the patch grid ('x-min-side')."""
    if fixed is not None:
        return {"type": "array", "minItems": fixed, "maxItems": fixed, "items": items}
    return {"type": "array", "minItems": 1, "maxItems": MAX_SIDE, "x-min-side": True, "items": items}


PIXELS_SCHEMA: dict[str, object] = {
    "description": "a rectangular array of numbers in [0, 1] (every row the same length): (H, W), (C, H, W) or (H, W, C) "
                   f"with C in {{1, 3}}, H and W from the model's patch grid (input side / patch size; 'x-min-side' is the "
                   f"largest grid among the served models) to {MAX_SIDE}",
    "anyOf": [
        _side(_side(_UNIT)),
        *(_side(_side(_side(_UNIT)), fixed=c) for c in (1, 3)),
        *(_side(_side(_side(_UNIT, fixed=c))) for c in (1, 3)),
    ],
}
PixelArray = Annotated[np.ndarray, BeforeValidator(_pixel_array), WithJsonSchema(PIXELS_SCHEMA)]


class DemoJsonRequest(BaseModel):
    """Demo mode with a JSON pixel array in [0, 1]: (H, W), (H, W, C) or (C, H, W), C in {1, 3}."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: ModelName
    pixels: PixelArray


class CompareJsonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    pixels: PixelArray
    models: list[ModelName] | None = Field(
        None, min_length=1, max_length=MAX_COMPARE_MODELS,
        description="default: one listed model per variant (GET /v1/models' compare_default)",
    )


class DemoClassifyResponse(BaseModel):
    model: str
    request_id: str
    coordinator_saw_image: Literal[True] = True
    class_index: int
    class_name: str
    probabilities: list[float] = Field(..., description="empty when the model's output policy reveals only indices")
    logits: list[float] = Field(..., description="empty when the model's output policy reveals only indices")
    output_policy: str = "logits"
    top_k: list[int] = Field(default_factory=list, description="the revealed class indices, largest logit first (label / topk:K)")
    costs: CostsOut
    queue_seconds: float
    batch_size: int
    latency_seconds: float = Field(..., description="coordinator-side wall time of this classification")


class CompareEntry(BaseModel):
    model: str
    variant: str
    accuracy: float | None
    ok: bool
    error: str | None = None
    class_index: int | None = None
    class_name: str | None = None
    probabilities: list[float] | None = None
    costs: CostsOut | None = None
    latency_seconds: float | None = None


class CompareResponse(BaseModel):
    coordinator_saw_image: Literal[True] = True
    results: list[CompareEntry]


class ModelInfo(BaseModel):
    name: str
    label: str = Field(..., description="a readable name (from the checkpoint folder's manifest; else the name)")
    variant: str
    arch: str = Field(..., description="architecture summary: heads, activations, norm")
    attention: dict[str, int] = Field(..., description="number of heads of each attention kind")
    input_shape: list[int] = Field(..., description="(C, H, W) of the raw [0, 1] image the client sends")
    classes: list[str]
    precision_bits: int
    accuracy: float | None = Field(None, description="plaintext test accuracy from meta.json")
    dataset: str | None = None
    loaded: bool
    measured_cost: dict[str, float] | None = Field(None, description="rounds, bytes, seconds of the last batch-of-one forward")
    output_policy: str = Field("logits", description="what an answer reveals, set by the model owner (party 0) and enforced by both "
                                                     "parties: logits (the logit vector), label (the class index only) or topk:K "
                                                     "(the K most likely classes' indices, ranked)")


class ModelsResponse(BaseModel):
    models: list[ModelInfo] = Field(..., description="the curated models (the folders' manifest.json), or every model with ?all=true")
    default: str | None = Field(None, description="the model the deployment offers first (the manifest's default)")
    compare_default: list[str] = Field(..., description="what POST /v1/compare runs when given no models: one per variant")


class PartyKey(BaseModel):
    rank: int = Field(..., ge=0, le=1, description="the party's rank: 0 (model owner) or 1 (compute peer)")
    public_key: B64Bytes = Field(..., description="the party's X25519 sealing key (32 bytes): clients seal share `rank` to it")
    certificate: str = Field("", description="the party's TLS certificate (PEM), issued by the deployment's CA for role party<rank>; "
                                             "empty when the coordinator talks to the parties without TLS")
    signature: B64Bytes = Field(b"", description="ECDSA P-256 / SHA-256 signature (DER) by the certificate's key over "
                                                 "'mpcvit party sealing key v1' || 0x00 || rank || public_key; empty without TLS")


class PartyKeysResponse(BaseModel):
    parties: list[PartyKey]


class PartyHealth(BaseModel):
    pair: int = 0
    rank: int
    address: str
    reachable: bool
    reported_rank: int | None = None
    peer_reachable: bool | None = None
    dealer_reachable: bool | None = None
    models: list[str] = []
    key_matches: bool | None = None  # its sealing key is the one clients seal to
    max_sessions: int | None = None  # sessions it runs at once, as it reports
    error: str | None = None


class PairHealth(BaseModel):
    index: int
    ok: bool  # both parties answer, reach their peer and the dealer, and hold the sealing keys clients use
    in_rotation: bool  # takes sessions now (a failure takes it out, a good Health puts it back)
    in_flight: int  # sessions running on it
    sessions: int = 1  # sessions it may run at once (max_sessions, else the smaller of its parties' reports)
    loaded: list[str]  # models loaded on both of its parties
    why_out: str | None = None


class HealthResponse(BaseModel):
    ok: bool  # at least one pair is ok
    parties: list[PartyHealth]  # every party of every pair
    pairs: list[PairHealth]
    dealer_reachable: bool  # every party that answers reaches its dealer
    queue_length: int


class ErrorResponse(BaseModel):
    detail: str
