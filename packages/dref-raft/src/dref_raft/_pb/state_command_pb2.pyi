from . import dref_membership_pb2 as _dref_membership_pb2
from . import dref_session_pb2 as _dref_session_pb2
from . import dref_fair_pb2 as _dref_fair_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetElementCommand(_message.Message):
    __slots__ = ("name", "value", "expire_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: bytes
    expire_at: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[bytes] = ..., expire_at: _Optional[int] = ...) -> None: ...

class SetElementIfNotExistCommand(_message.Message):
    __slots__ = ("name", "value", "expire_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: bytes
    expire_at: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[bytes] = ..., expire_at: _Optional[int] = ...) -> None: ...

class DeleteElementCommand(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ExpireElementCommand(_message.Message):
    __slots__ = ("name", "expire_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    expire_at: int
    def __init__(self, name: _Optional[str] = ..., expire_at: _Optional[int] = ...) -> None: ...

class DeleteIfExpiredCommand(_message.Message):
    __slots__ = ("name", "now")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    now: int
    def __init__(self, name: _Optional[str] = ..., now: _Optional[int] = ...) -> None: ...

class StartNewTermCommand(_message.Message):
    __slots__ = ("term",)
    TERM_FIELD_NUMBER: _ClassVar[int]
    term: int
    def __init__(self, term: _Optional[int] = ...) -> None: ...

class CompareAndSetCommand(_message.Message):
    __slots__ = ("name", "expected", "value", "expire_at", "now")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected: bytes
    value: bytes
    expire_at: int
    now: int
    def __init__(self, name: _Optional[str] = ..., expected: _Optional[bytes] = ..., value: _Optional[bytes] = ..., expire_at: _Optional[int] = ..., now: _Optional[int] = ...) -> None: ...

class CompareAndDeleteCommand(_message.Message):
    __slots__ = ("name", "expected", "now")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected: bytes
    now: int
    def __init__(self, name: _Optional[str] = ..., expected: _Optional[bytes] = ..., now: _Optional[int] = ...) -> None: ...

class CompareAndExpireCommand(_message.Message):
    __slots__ = ("name", "expected", "expire_at", "now")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected: bytes
    expire_at: int
    now: int
    def __init__(self, name: _Optional[str] = ..., expected: _Optional[bytes] = ..., expire_at: _Optional[int] = ..., now: _Optional[int] = ...) -> None: ...

class FencedWriteCommand(_message.Message):
    __slots__ = ("lock", "token", "name", "value", "expire_at", "condition", "expected", "now")
    LOCK_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    lock: str
    token: bytes
    name: str
    value: bytes
    expire_at: int
    condition: int
    expected: bytes
    now: int
    def __init__(self, lock: _Optional[str] = ..., token: _Optional[bytes] = ..., name: _Optional[str] = ..., value: _Optional[bytes] = ..., expire_at: _Optional[int] = ..., condition: _Optional[int] = ..., expected: _Optional[bytes] = ..., now: _Optional[int] = ...) -> None: ...

class StateCommand(_message.Message):
    __slots__ = ("set_element", "set_element_if_not_exist", "delete_element", "expire_element", "delete_if_expired", "start_new_term", "compare_and_set", "compare_and_delete", "compare_and_expire", "fenced_write", "config_change", "session", "fair_swap", "leave_line")
    SET_ELEMENT_FIELD_NUMBER: _ClassVar[int]
    SET_ELEMENT_IF_NOT_EXIST_FIELD_NUMBER: _ClassVar[int]
    DELETE_ELEMENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_ELEMENT_FIELD_NUMBER: _ClassVar[int]
    DELETE_IF_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    START_NEW_TERM_FIELD_NUMBER: _ClassVar[int]
    COMPARE_AND_SET_FIELD_NUMBER: _ClassVar[int]
    COMPARE_AND_DELETE_FIELD_NUMBER: _ClassVar[int]
    COMPARE_AND_EXPIRE_FIELD_NUMBER: _ClassVar[int]
    FENCED_WRITE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_CHANGE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    FAIR_SWAP_FIELD_NUMBER: _ClassVar[int]
    LEAVE_LINE_FIELD_NUMBER: _ClassVar[int]
    set_element: SetElementCommand
    set_element_if_not_exist: SetElementIfNotExistCommand
    delete_element: DeleteElementCommand
    expire_element: ExpireElementCommand
    delete_if_expired: DeleteIfExpiredCommand
    start_new_term: StartNewTermCommand
    compare_and_set: CompareAndSetCommand
    compare_and_delete: CompareAndDeleteCommand
    compare_and_expire: CompareAndExpireCommand
    fenced_write: FencedWriteCommand
    config_change: _dref_membership_pb2.ConfigChangeCommand
    session: _dref_session_pb2.SessionCommand
    fair_swap: _dref_fair_pb2.FairSwapCommand
    leave_line: _dref_fair_pb2.LeaveLineCommand
    def __init__(self, set_element: _Optional[_Union[SetElementCommand, _Mapping]] = ..., set_element_if_not_exist: _Optional[_Union[SetElementIfNotExistCommand, _Mapping]] = ..., delete_element: _Optional[_Union[DeleteElementCommand, _Mapping]] = ..., expire_element: _Optional[_Union[ExpireElementCommand, _Mapping]] = ..., delete_if_expired: _Optional[_Union[DeleteIfExpiredCommand, _Mapping]] = ..., start_new_term: _Optional[_Union[StartNewTermCommand, _Mapping]] = ..., compare_and_set: _Optional[_Union[CompareAndSetCommand, _Mapping]] = ..., compare_and_delete: _Optional[_Union[CompareAndDeleteCommand, _Mapping]] = ..., compare_and_expire: _Optional[_Union[CompareAndExpireCommand, _Mapping]] = ..., fenced_write: _Optional[_Union[FencedWriteCommand, _Mapping]] = ..., config_change: _Optional[_Union[_dref_membership_pb2.ConfigChangeCommand, _Mapping]] = ..., session: _Optional[_Union[_dref_session_pb2.SessionCommand, _Mapping]] = ..., fair_swap: _Optional[_Union[_dref_fair_pb2.FairSwapCommand, _Mapping]] = ..., leave_line: _Optional[_Union[_dref_fair_pb2.LeaveLineCommand, _Mapping]] = ...) -> None: ...
