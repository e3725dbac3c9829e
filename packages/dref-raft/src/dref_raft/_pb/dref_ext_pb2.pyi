from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CompareRequest(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: bytes
    def __init__(self, command: _Optional[bytes] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("matched", "current", "seq", "stale")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    matched: bool
    current: bytes
    seq: int
    stale: bool
    def __init__(self, matched: bool = ..., current: _Optional[bytes] = ..., seq: _Optional[int] = ..., stale: bool = ...) -> None: ...
