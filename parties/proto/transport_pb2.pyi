from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_KIND_UNSPECIFIED: _ClassVar[FrameKind]
    FRAME_KIND_TENSOR: _ClassVar[FrameKind]
    FRAME_KIND_ABORT: _ClassVar[FrameKind]
FRAME_KIND_UNSPECIFIED: FrameKind
FRAME_KIND_TENSOR: FrameKind
FRAME_KIND_ABORT: FrameKind

class Frame(_message.Message):
    __slots__ = ("session_id", "seq", "src_rank", "kind", "tag", "dtype", "shape", "data", "chunk_index", "chunk_count", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SRC_RANK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seq: int
    src_rank: int
    kind: FrameKind
    tag: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    chunk_index: int
    chunk_count: int
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., seq: _Optional[int] = ..., src_rank: _Optional[int] = ..., kind: _Optional[_Union[FrameKind, str]] = ..., tag: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., chunk_index: _Optional[int] = ..., chunk_count: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: int
    def __init__(self, frames: _Optional[int] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("src_rank",)
    SRC_RANK_FIELD_NUMBER: _ClassVar[int]
    src_rank: int
    def __init__(self, src_rank: _Optional[int] = ...) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("rank",)
    RANK_FIELD_NUMBER: _ClassVar[int]
    rank: int
    def __init__(self, rank: _Optional[int] = ...) -> None: ...
