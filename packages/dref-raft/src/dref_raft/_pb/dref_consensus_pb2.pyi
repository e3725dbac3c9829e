from . import dref_membership_pb2 as _dref_membership_pb2
from . import raft_pb2 as _raft_pb2
from . import state_command_pb2 as _state_command_pb2
from . import dref_session_pb2 as _dref_session_pb2
from . import dref_fair_pb2 as _dref_fair_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClusterSnapshot(_message.Message):
    __slots__ = ("entries", "last_seq", "last_term", "membership", "sessions", "lines")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_raft_pb2.KVEntry]
    last_seq: int
    last_term: int
    membership: _dref_membership_pb2.Membership
    sessions: _containers.RepeatedCompositeFieldContainer[_dref_session_pb2.SessionState]
    lines: _containers.RepeatedCompositeFieldContainer[_dref_fair_pb2.FairLine]
    def __init__(self, entries: _Optional[_Iterable[_Union[_raft_pb2.KVEntry, _Mapping]]] = ..., last_seq: _Optional[int] = ..., last_term: _Optional[int] = ..., membership: _Optional[_Union[_dref_membership_pb2.Membership, _Mapping]] = ..., sessions: _Optional[_Iterable[_Union[_dref_session_pb2.SessionState, _Mapping]]] = ..., lines: _Optional[_Iterable[_Union[_dref_fair_pb2.FairLine, _Mapping]]] = ...) -> None: ...

class DrefEntry(_message.Message):
    __slots__ = ("seq", "term", "command")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    seq: int
    term: int
    command: bytes
    def __init__(self, seq: _Optional[int] = ..., term: _Optional[int] = ..., command: _Optional[bytes] = ...) -> None: ...

class AppendEntriesRequest(_message.Message):
    __slots__ = ("leader_id", "term", "command", "seq", "commit_seq", "dref_ext", "prev_seq", "prev_term", "entries")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    PREV_SEQ_FIELD_NUMBER: _ClassVar[int]
    PREV_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    leader_id: str
    term: int
    command: bytes
    seq: int
    commit_seq: int
    dref_ext: bool
    prev_seq: int
    prev_term: int
    entries: _containers.RepeatedCompositeFieldContainer[DrefEntry]
    def __init__(self, leader_id: _Optional[str] = ..., term: _Optional[int] = ..., command: _Optional[bytes] = ..., seq: _Optional[int] = ..., commit_seq: _Optional[int] = ..., dref_ext: bool = ..., prev_seq: _Optional[int] = ..., prev_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[DrefEntry, _Mapping]]] = ...) -> None: ...

class AppendEntriesResponse(_message.Message):
    __slots__ = ("success", "term", "dref_ext", "match_seq", "reject_hint")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    MATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    success: bool
    term: int
    dref_ext: bool
    match_seq: int
    reject_hint: int
    def __init__(self, success: bool = ..., term: _Optional[int] = ..., dref_ext: bool = ..., match_seq: _Optional[int] = ..., reject_hint: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("leader_id", "term", "commit_seq", "dref_ext", "timeout_now")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    leader_id: str
    term: int
    commit_seq: int
    dref_ext: bool
    timeout_now: bool
    def __init__(self, leader_id: _Optional[str] = ..., term: _Optional[int] = ..., commit_seq: _Optional[int] = ..., dref_ext: bool = ..., timeout_now: bool = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("acknowledged", "term", "dref_ext", "last_seq")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    acknowledged: bool
    term: int
    dref_ext: bool
    last_seq: int
    def __init__(self, acknowledged: bool = ..., term: _Optional[int] = ..., dref_ext: bool = ..., last_seq: _Optional[int] = ...) -> None: ...

class ReadIndexRequest(_message.Message):
    __slots__ = ("leader_id", "term", "dref_ext", "read_ctx")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    READ_CTX_FIELD_NUMBER: _ClassVar[int]
    leader_id: str
    term: int
    dref_ext: bool
    read_ctx: int
    def __init__(self, leader_id: _Optional[str] = ..., term: _Optional[int] = ..., dref_ext: bool = ..., read_ctx: _Optional[int] = ...) -> None: ...

class ReadIndexResponse(_message.Message):
    __slots__ = ("granted", "term", "dref_ext", "read_ctx")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    READ_CTX_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    term: int
    dref_ext: bool
    read_ctx: int
    def __init__(self, granted: bool = ..., term: _Optional[int] = ..., dref_ext: bool = ..., read_ctx: _Optional[int] = ...) -> None: ...

class VoteRequest(_message.Message):
    __slots__ = ("candidate_id", "term", "last_seq", "dref_ext", "last_term", "leadership_transfer")
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    LEADERSHIP_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    candidate_id: str
    term: int
    last_seq: int
    dref_ext: bool
    last_term: int
    leadership_transfer: bool
    def __init__(self, candidate_id: _Optional[str] = ..., term: _Optional[int] = ..., last_seq: _Optional[int] = ..., dref_ext: bool = ..., last_term: _Optional[int] = ..., leadership_transfer: bool = ...) -> None: ...

class VoteResponse(_message.Message):
    __slots__ = ("granted", "term", "dref_ext")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    term: int
    dref_ext: bool
    def __init__(self, granted: bool = ..., term: _Optional[int] = ..., dref_ext: bool = ...) -> None: ...

class PreVoteRequest(_message.Message):
    __slots__ = ("candidate_id", "term", "last_seq", "dref_ext", "last_term")
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    candidate_id: str
    term: int
    last_seq: int
    dref_ext: bool
    last_term: int
    def __init__(self, candidate_id: _Optional[str] = ..., term: _Optional[int] = ..., last_seq: _Optional[int] = ..., dref_ext: bool = ..., last_term: _Optional[int] = ...) -> None: ...

class PreVoteResponse(_message.Message):
    __slots__ = ("granted", "term", "dref_ext")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    term: int
    dref_ext: bool
    def __init__(self, granted: bool = ..., term: _Optional[int] = ..., dref_ext: bool = ...) -> None: ...

class InstallSnapshotRequest(_message.Message):
    __slots__ = ("leader_id", "term", "snapshot", "last_seq", "dref_ext", "last_term")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    leader_id: str
    term: int
    snapshot: ClusterSnapshot
    last_seq: int
    dref_ext: bool
    last_term: int
    def __init__(self, leader_id: _Optional[str] = ..., term: _Optional[int] = ..., snapshot: _Optional[_Union[ClusterSnapshot, _Mapping]] = ..., last_seq: _Optional[int] = ..., dref_ext: bool = ..., last_term: _Optional[int] = ...) -> None: ...

class InstallSnapshotResponse(_message.Message):
    __slots__ = ("success", "term", "dref_ext", "match_seq")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DREF_EXT_FIELD_NUMBER: _ClassVar[int]
    MATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    success: bool
    term: int
    dref_ext: bool
    match_seq: int
    def __init__(self, success: bool = ..., term: _Optional[int] = ..., dref_ext: bool = ..., match_seq: _Optional[int] = ...) -> None: ...
