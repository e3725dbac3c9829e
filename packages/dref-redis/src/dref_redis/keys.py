"""The Redis key layout shared with upstream, plus dref's fence companion keys.

- An element named `n` lives under the key `<key_prefix>n` (the prefix is empty by default, as
  upstream has none); its value is the codec's bytes, a lock's value the 8-byte token.
- Change notifications go to the channel `dref-change`; their `name` is the full key.
- The fence counter of a lock key `k` is `{k}:dref-fence` when `k` is not empty and contains no
  `}` (Redis Cluster hashes `k` and the tag `{k}` alike, so both share a slot). A key containing
  `}` that has a hash tag of its own uses `k:dref-fence` (same tag); any other key uses
  `{<t>}:dref-fence:k`, where `t` is a short tag chosen to hash to `k`'s slot. The lock's line
  of waiters is named alike with `:dref-queue` (tokens by arrival) and `:dref-lives` (tokens to
  the time until which they wait). Upstream never reads these keys.
- With revisions on (`history` > 0), an element's change history is the stream named alike
  with `:dref-rev` (`dref_redis.revisions`).
- With exactly-once writes on, session `s`'s record of results for element key `k` is the hash
  named alike with `:dref-session`, then `:<s>` (32 hex digits): `{k}:dref-session:<s>`
  (`dref_redis.sessions`).
"""

from __future__ import annotations

import functools
import itertools

from redis.crc import key_slot

__all__ = [
    "CHANNEL",
    "FENCE_SUFFIX",
    "HISTORY_SUFFIX",
    "LIVES_SUFFIX",
    "QUEUE_SUFFIX",
    "SESSION_SUFFIX",
    "KeyLayout",
    "fence_key",
    "hash_tag",
    "history_key",
    "is_companion",
    "lives_key",
    "queue_key",
    "session_key",
]

CHANNEL = "dref-change"
FENCE_SUFFIX = ":dref-fence"
QUEUE_SUFFIX = ":dref-queue"
LIVES_SUFFIX = ":dref-lives"
HISTORY_SUFFIX = ":dref-rev"
SESSION_SUFFIX = ":dref-session"
_SESSION_ID_HEX = 32


class KeyLayout:
    """Maps element names to Redis keys and back."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._raw_prefix = prefix.encode()

    def key(self, name: str) -> bytes:
        return (self.prefix + name).encode()

    def name_of(self, key: bytes) -> str | None:
        """The element name of a key, or None when the key is outside our prefix."""
        if not key.startswith(self._raw_prefix):
            return None
        try:
            return key[len(self._raw_prefix) :].decode()
        except UnicodeDecodeError:
            return None


def hash_tag(key: bytes) -> bytes | None:
    """The part of `key` Redis Cluster hashes when it is not the whole key (None otherwise)."""
    start = key.find(b"{")
    if start < 0:
        return None
    end = key.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def fence_key(key: bytes) -> bytes:
    """The fence counter's key for lock key `key`, in the same cluster slot."""
    return _companion(key, FENCE_SUFFIX.encode())


def queue_key(key: bytes) -> bytes:
    """The sorted set of lock key `key`'s waiters by arrival, in the same cluster slot."""
    return _companion(key, QUEUE_SUFFIX.encode())


def lives_key(key: bytes) -> bytes:
    """The hash of lock key `key`'s waiters to the end of their wait, in the same slot."""
    return _companion(key, LIVES_SUFFIX.encode())


def history_key(key: bytes) -> bytes:
    """The change history stream of element key `key`, in the same slot."""
    return _companion(key, HISTORY_SUFFIX.encode())


def session_key(key: bytes, session: bytes) -> bytes:
    """The hash of session `session`'s recorded write results on element key `key` (same slot)."""
    return _companion(key, SESSION_SUFFIX.encode()) + b":" + session


def _is_session_key(key: bytes) -> bool:
    base, sep, session = key.rpartition(b":")
    if not sep or len(session) != _SESSION_ID_HEX:
        return False
    try:
        bytes.fromhex(session.decode())
    except ValueError:
        return False
    return _is_companion_with(base, SESSION_SUFFIX.encode())


_SUFFIXES = (
    FENCE_SUFFIX.encode(),
    QUEUE_SUFFIX.encode(),
    LIVES_SUFFIX.encode(),
    HISTORY_SUFFIX.encode(),
)


def is_companion(key: bytes) -> bool:
    """Whether `key` is a fence, queue or lives key of some lock key (dref's internal keys).

    Exact: true only when `key` is what `fence_key`/`queue_key`/`lives_key` make of a key, so
    an element whose name merely contains a suffix is still an element. Session keys
    (`session_key`) are companions too.
    """
    return any(_is_companion_with(key, suffix) for suffix in _SUFFIXES) or _is_session_key(key)


def _is_companion_with(key: bytes, suffix: bytes) -> bool:
    at = key.find(suffix)
    while at >= 0:
        end = at + len(suffix)
        if end == len(key):  # `{k}<suffix>` or `k<suffix>`
            bases = [key[:at]]
            if key.startswith(b"{") and key[at - 1 : at] == b"}":
                bases.append(key[1 : at - 1])
        elif key[end : end + 1] == b":":  # `{t}<suffix>:k`
            bases = [key[end + 1 :]]
        else:
            bases = []
        if any(_companion(base, suffix) == key for base in bases):
            return True
        at = key.find(suffix, at + 1)
    return False


@functools.lru_cache(maxsize=4096)
def _companion(key: bytes, suffix: bytes) -> bytes:
    if key and b"}" not in key:
        return b"{" + key + b"}" + suffix
    if hash_tag(key) is not None:
        return key + suffix
    return b"{" + _tag_for_slot(key_slot(key)) + b"}" + suffix + b":" + key


@functools.lru_cache(maxsize=1024)
def _tag_for_slot(slot: int) -> bytes:
    """The first tag `f<n>` (n = 0, 1, …) that hashes to `slot`."""
    for n in itertools.count():
        tag = b"f%d" % n
        if key_slot(tag) == slot:
            return tag
    raise AssertionError("unreachable")  # pragma: no cover
