from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("rank", "peer_reachable", "dealer_reachable", "models", "public_key", "certificate", "key_signature", "max_sessions")
    RANK_FIELD_NUMBER: _ClassVar[int]
    PEER_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    DEALER_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    KEY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    peer_reachable: bool
    dealer_reachable: bool
    models: _containers.RepeatedScalarFieldContainer[str]
    public_key: bytes
    certificate: bytes
    key_signature: bytes
    max_sessions: int
    def __init__(self, rank: _Optional[int] = ..., peer_reachable: _Optional[bool] = ..., dealer_reachable: _Optional[bool] = ..., models: _Optional[_Iterable[str]] = ..., public_key: _Optional[bytes] = ..., certificate: _Optional[bytes] = ..., key_signature: _Optional[bytes] = ..., max_sessions: _Optional[int] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model", "session_id", "deadline_unix_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    session_id: str
    deadline_unix_ms: int
    def __init__(self, model: _Optional[str] = ..., session_id: _Optional[str] = ..., deadline_unix_ms: _Optional[int] = ...) -> None: ...

class LoadModelReply(_message.Message):
    __slots__ = ("model", "input_shape", "num_classes", "precision_bits", "costs", "output_policy")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PRECISION_BITS_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_POLICY_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    num_classes: int
    precision_bits: int
    costs: Costs
    output_policy: str
    def __init__(self, model: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., num_classes: _Optional[int] = ..., precision_bits: _Optional[int] = ..., costs: _Optional[_Union[Costs, _Mapping]] = ..., output_policy: _Optional[str] = ...) -> None: ...

class SealedTensor(_message.Message):
    __slots__ = ("shape", "dtype", "nonce", "ciphertext")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    nonce: bytes
    ciphertext: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class InferItem(_message.Message):
    __slots__ = ("request_id", "client_public_key", "input_share")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHARE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    client_public_key: bytes
    input_share: SealedTensor
    def __init__(self, request_id: _Optional[str] = ..., client_public_key: _Optional[bytes] = ..., input_share: _Optional[_Union[SealedTensor, _Mapping]] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("session_id", "model", "deadline_unix_ms", "items", "batch_series", "batch_number")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SERIES_FIELD_NUMBER: _ClassVar[int]
    BATCH_NUMBER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model: str
    deadline_unix_ms: int
    items: _containers.RepeatedCompositeFieldContainer[InferItem]
    batch_series: str
    batch_number: int
    def __init__(self, session_id: _Optional[str] = ..., model: _Optional[str] = ..., deadline_unix_ms: _Optional[int] = ..., items: _Optional[_Iterable[_Union[InferItem, _Mapping]]] = ..., batch_series: _Optional[str] = ..., batch_number: _Optional[int] = ...) -> None: ...

class OpCost(_message.Message):
    __slots__ = ("op", "rounds", "bytes_sent", "bytes_received", "seconds")
    OP_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    op: str
    rounds: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    def __init__(self, op: _Optional[str] = ..., rounds: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class Costs(_message.Message):
    __slots__ = ("rounds", "bytes_sent", "bytes_received", "seconds", "ops", "dealer_bytes_received", "dealer_seconds", "dealer_fetch_seconds", "dealer_prefetched")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    DEALER_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DEALER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEALER_FETCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEALER_PREFETCHED_FIELD_NUMBER: _ClassVar[int]
    rounds: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    ops: _containers.RepeatedCompositeFieldContainer[OpCost]
    dealer_bytes_received: int
    dealer_seconds: float
    dealer_fetch_seconds: float
    dealer_prefetched: bool
    def __init__(self, rounds: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., seconds: _Optional[float] = ..., ops: _Optional[_Iterable[_Union[OpCost, _Mapping]]] = ..., dealer_bytes_received: _Optional[int] = ..., dealer_seconds: _Optional[float] = ..., dealer_fetch_seconds: _Optional[float] = ..., dealer_prefetched: _Optional[bool] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("output_shares", "costs", "precision_bits", "output_policy")
    OUTPUT_SHARES_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_BITS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_POLICY_FIELD_NUMBER: _ClassVar[int]
    output_shares: _containers.RepeatedCompositeFieldContainer[SealedTensor]
    costs: Costs
    precision_bits: int
    output_policy: str
    def __init__(self, output_shares: _Optional[_Iterable[_Union[SealedTensor, _Mapping]]] = ..., costs: _Optional[_Union[Costs, _Mapping]] = ..., precision_bits: _Optional[int] = ..., output_policy: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("sessions_ok", "sessions_failed", "totals")
    SESSIONS_OK_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FAILED_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    sessions_ok: int
    sessions_failed: int
    totals: Costs
    def __init__(self, sessions_ok: _Optional[int] = ..., sessions_failed: _Optional[int] = ..., totals: _Optional[_Union[Costs, _Mapping]] = ...) -> None: ...
