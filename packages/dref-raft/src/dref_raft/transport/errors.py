"""Errors of the transport layer (both are `dref.errors.BackendError`s)."""

from __future__ import annotations

from dref.errors import BackendError, BackendUnavailableError

__all__ = ["TransportError", "WatchUnsupportedError", "WireError"]


class WireError(BackendError):
    """Bytes received or about to be sent are not a valid (or too large) protocol message."""


class TransportError(BackendUnavailableError):
    """A peer could not be reached, did not answer in time, or the RPC failed."""


class WatchUnsupportedError(BackendError):
    """The member does not serve `DRefWatch` (an upstream node): use another member."""
