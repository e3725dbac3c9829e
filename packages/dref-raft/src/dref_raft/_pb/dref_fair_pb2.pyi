from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FairSwapCommand(_message.Message):
    __slots__ = ("name", "expected", "value", "expire_at", "ticket", "rejoin", "life_ms", "now")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    REJOIN_FIELD_NUMBER: _ClassVar[int]
    LIFE_MS_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected: bytes
    value: bytes
    expire_at: int
    ticket: bytes
    rejoin: bool
    life_ms: int
    now: int
    def __init__(self, name: _Optional[str] = ..., expected: _Optional[bytes] = ..., value: _Optional[bytes] = ..., expire_at: _Optional[int] = ..., ticket: _Optional[bytes] = ..., rejoin: bool = ..., life_ms: _Optional[int] = ..., now: _Optional[int] = ...) -> None: ...

class LeaveLineCommand(_message.Message):
    __slots__ = ("name", "ticket", "release", "now")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    ticket: bytes
    release: bool
    now: int
    def __init__(self, name: _Optional[str] = ..., ticket: _Optional[bytes] = ..., release: bool = ..., now: _Optional[int] = ...) -> None: ...

class FairWaiter(_message.Message):
    __slots__ = ("ticket", "alive_until")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ALIVE_UNTIL_FIELD_NUMBER: _ClassVar[int]
    ticket: bytes
    alive_until: int
    def __init__(self, ticket: _Optional[bytes] = ..., alive_until: _Optional[int] = ...) -> None: ...

class FairLine(_message.Message):
    __slots__ = ("name", "waiters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WAITERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    waiters: _containers.RepeatedCompositeFieldContainer[FairWaiter]
    def __init__(self, name: _Optional[str] = ..., waiters: _Optional[_Iterable[_Union[FairWaiter, _Mapping]]] = ...) -> None: ...

class WaitTurnRequest(_message.Message):
    __slots__ = ("name", "ticket", "timeout_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    ticket: bytes
    timeout_ms: int
    def __init__(self, name: _Optional[str] = ..., ticket: _Optional[bytes] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class WaitTurnResponse(_message.Message):
    __slots__ = ("turn", "value")
    TURN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    turn: bool
    value: bytes
    def __init__(self, turn: bool = ..., value: _Optional[bytes] = ...) -> None: ...
