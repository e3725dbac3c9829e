"""Names, magics and sizes of upstream's storage directory (docs/protocol.md#storage,
#constants)."""

from __future__ import annotations

from typing import Final

VOTER_STATE_FILE: Final = "voter-state"
SNAPSHOT_FILE: Final = "state-snapshot"
COMMAND_LOG_FILE: Final = "command-log"
TMP_SUFFIX: Final = ".tmp"

VOTER_STATE_MAGIC: Final = b"DRFT"
SNAPSHOT_MAGIC: Final = b"DRFS"
COMMAND_LOG_MAGIC: Final = b"DRFL"
FORMAT_VERSION: Final = 1

#: magic (4) · version (1)
PREAMBLE_SIZE: Final = 5
#: magic (4) · version (1) · commit_seq (8)
LOG_HEADER_SIZE: Final = 13
COMMIT_SEQ_OFFSET: Final = 5
#: seq (8) · length (4), then the command bytes
LOG_RECORD_HEADER_SIZE: Final = 12

#: Terms and seqs are 8-byte big-endian; upstream Scala reads them signed.
MAX_U63: Final = 2**63 - 1
#: Lengths are 4-byte big-endian signed.
MAX_LENGTH: Final = 2**31 - 1
