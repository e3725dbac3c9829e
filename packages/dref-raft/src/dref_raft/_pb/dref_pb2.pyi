from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EndpointResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetEndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetExpirationTableRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExpireElementRequest(_message.Message):
    __slots__ = ("id", "name", "expireAt")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIREAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    expireAt: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., expireAt: _Optional[int] = ...) -> None: ...

class ExpireElementResponse(_message.Message):
    __slots__ = ("applied_seq",)
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    applied_seq: int
    def __init__(self, applied_seq: _Optional[int] = ...) -> None: ...

class SetElementRequest(_message.Message):
    __slots__ = ("id", "name", "value", "expireAt")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIREAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    value: bytes
    expireAt: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[bytes] = ..., expireAt: _Optional[int] = ...) -> None: ...

class SetElementResponse(_message.Message):
    __slots__ = ("applied_seq",)
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    applied_seq: int
    def __init__(self, applied_seq: _Optional[int] = ...) -> None: ...

class SetElementIfNotExistRequest(_message.Message):
    __slots__ = ("id", "name", "value", "expireAt")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIREAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    value: bytes
    expireAt: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[bytes] = ..., expireAt: _Optional[int] = ...) -> None: ...

class SetElementIfNotExistResponse(_message.Message):
    __slots__ = ("created", "applied_seq")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    created: bool
    applied_seq: int
    def __init__(self, created: bool = ..., applied_seq: _Optional[int] = ...) -> None: ...

class GetElementRequest(_message.Message):
    __slots__ = ("id", "name", "session_seq", "follower_read", "read_index")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOWER_READ_FIELD_NUMBER: _ClassVar[int]
    READ_INDEX_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    session_seq: int
    follower_read: bool
    read_index: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., session_seq: _Optional[int] = ..., follower_read: bool = ..., read_index: bool = ...) -> None: ...

class GetElementResponse(_message.Message):
    __slots__ = ("value", "applied_seq")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    applied_seq: int
    def __init__(self, value: _Optional[bytes] = ..., applied_seq: _Optional[int] = ...) -> None: ...

class DeleteElementRequest(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteElementResponse(_message.Message):
    __slots__ = ("applied_seq",)
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    applied_seq: int
    def __init__(self, applied_seq: _Optional[int] = ...) -> None: ...

class SendCommandRequest(_message.Message):
    __slots__ = ("id", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    payload: bytes
    def __init__(self, id: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class SendCommandResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
