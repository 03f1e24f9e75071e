from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeedRequest(_message.Message):
    __slots__ = ("batch_id", "rank")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    rank: int
    def __init__(self, batch_id: _Optional[str] = ..., rank: _Optional[int] = ...) -> None: ...

class SeedReply(_message.Message):
    __slots__ = ("batch_id", "key", "dealer_id", "commitment", "dealer_instance")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DEALER_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    DEALER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    key: bytes
    dealer_id: bytes
    commitment: bytes
    dealer_instance: bytes
    def __init__(self, batch_id: _Optional[str] = ..., key: _Optional[bytes] = ..., dealer_id: _Optional[bytes] = ..., commitment: _Optional[bytes] = ..., dealer_instance: _Optional[bytes] = ...) -> None: ...

class RandomnessRequest(_message.Message):
    __slots__ = ("kind", "size0", "size1", "op", "kwargs_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE0_FIELD_NUMBER: _ClassVar[int]
    SIZE1_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    KWARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    size0: _containers.RepeatedScalarFieldContainer[int]
    size1: _containers.RepeatedScalarFieldContainer[int]
    op: str
    kwargs_json: str
    def __init__(self, kind: _Optional[str] = ..., size0: _Optional[_Iterable[int]] = ..., size1: _Optional[_Iterable[int]] = ..., op: _Optional[str] = ..., kwargs_json: _Optional[str] = ...) -> None: ...

class CorrectionsRequest(_message.Message):
    __slots__ = ("batch_id", "requests", "max_chunk_bytes", "rank")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    requests: _containers.RepeatedCompositeFieldContainer[RandomnessRequest]
    max_chunk_bytes: int
    rank: int
    def __init__(self, batch_id: _Optional[str] = ..., requests: _Optional[_Iterable[_Union[RandomnessRequest, _Mapping]]] = ..., max_chunk_bytes: _Optional[int] = ..., rank: _Optional[int] = ...) -> None: ...

class CorrectionChunk(_message.Message):
    __slots__ = ("request_index", "shape", "data", "chunk_index", "chunk_count")
    REQUEST_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    request_index: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    chunk_index: int
    chunk_count: int
    def __init__(self, request_index: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., chunk_index: _Optional[int] = ..., chunk_count: _Optional[int] = ...) -> None: ...

class DealerPingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DealerPingReply(_message.Message):
    __slots__ = ("open_batches",)
    OPEN_BATCHES_FIELD_NUMBER: _ClassVar[int]
    open_batches: int
    def __init__(self, open_batches: _Optional[int] = ...) -> None: ...
