from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionCommand(_message.Message):
    __slots__ = ("session", "request", "first_incomplete", "now", "idle_ms", "command")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    FIRST_INCOMPLETE_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    IDLE_MS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    session: bytes
    request: int
    first_incomplete: int
    now: int
    idle_ms: int
    command: bytes
    def __init__(self, session: _Optional[bytes] = ..., request: _Optional[int] = ..., first_incomplete: _Optional[int] = ..., now: _Optional[int] = ..., idle_ms: _Optional[int] = ..., command: _Optional[bytes] = ...) -> None: ...

class SessionResult(_message.Message):
    __slots__ = ("request", "created", "current", "stale", "ahead")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    AHEAD_FIELD_NUMBER: _ClassVar[int]
    request: int
    created: bool
    current: bytes
    stale: bool
    ahead: int
    def __init__(self, request: _Optional[int] = ..., created: bool = ..., current: _Optional[bytes] = ..., stale: bool = ..., ahead: _Optional[int] = ...) -> None: ...

class SessionState(_message.Message):
    __slots__ = ("session", "last_seen", "first_incomplete", "results")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    FIRST_INCOMPLETE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    session: bytes
    last_seen: int
    first_incomplete: int
    results: _containers.RepeatedCompositeFieldContainer[SessionResult]
    def __init__(self, session: _Optional[bytes] = ..., last_seen: _Optional[int] = ..., first_incomplete: _Optional[int] = ..., results: _Optional[_Iterable[_Union[SessionResult, _Mapping]]] = ...) -> None: ...
