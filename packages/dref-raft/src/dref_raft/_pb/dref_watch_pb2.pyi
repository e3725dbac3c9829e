from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRequest(_message.Message):
    __slots__ = ("names", "from_seq")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    from_seq: int
    def __init__(self, names: _Optional[_Iterable[str]] = ..., from_seq: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("name", "value", "seq", "resync")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: bytes
    seq: int
    resync: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[bytes] = ..., seq: _Optional[int] = ..., resync: bool = ...) -> None: ...
