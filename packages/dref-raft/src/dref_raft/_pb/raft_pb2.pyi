from . import dref_pb2 as _dref_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartNewTermOpProto(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KVEntry(_message.Message):
    __slots__ = ("key", "value", "expireAt")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIREAT_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    expireAt: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., expireAt: _Optional[int] = ...) -> None: ...

class KVSnapshotChunkData(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _containers.RepeatedCompositeFieldContainer[KVEntry]
    def __init__(self, entry: _Optional[_Iterable[_Union[KVEntry, _Mapping]]] = ...) -> None: ...

class KVSnapshotChunk(_message.Message):
    __slots__ = ("term", "index", "operation", "snapshotChunkIndex", "snapshotChunkCount")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTCHUNKINDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTCHUNKCOUNT_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    operation: KVSnapshotChunkData
    snapshotChunkIndex: int
    snapshotChunkCount: int
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., operation: _Optional[_Union[KVSnapshotChunkData, _Mapping]] = ..., snapshotChunkIndex: _Optional[int] = ..., snapshotChunkCount: _Optional[int] = ...) -> None: ...

class SnapshotEntryProto(_message.Message):
    __slots__ = ("term", "index", "snapshotChunk")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTCHUNK_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    snapshotChunk: _containers.RepeatedCompositeFieldContainer[KVSnapshotChunk]
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., snapshotChunk: _Optional[_Iterable[_Union[KVSnapshotChunk, _Mapping]]] = ...) -> None: ...
