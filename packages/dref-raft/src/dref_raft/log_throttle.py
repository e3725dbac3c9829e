"""`LogThrottle`: a recurring failure (a transfer to one peer, a refused handshake from one
host, an oversized snapshot for one follower) logged at its level at most once per interval per
key, so that a flood of it neither fills the log nor hides the first one."""

from __future__ import annotations

import time

__all__ = ["LogThrottle"]


class LogThrottle:
    """Per key, whether a line is due now: none was logged for that key in the last
    `interval` seconds. At most `max_keys` keys are remembered (all forgotten when full), so
    that keys an attacker chooses (source hosts) never grow memory without bound."""

    __slots__ = ("_interval", "_last", "_max_keys")

    def __init__(self, interval: float, *, max_keys: int = 1024) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        """True (and the time noted) when `key`'s line may be logged at its level now."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        if last is None and len(self._last) >= self._max_keys:
            self._last.clear()
        self._last[key] = now
        return True
