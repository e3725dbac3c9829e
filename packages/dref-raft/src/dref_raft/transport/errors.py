"""Errors of the transport layer (all are `dref.errors.BackendError`s)."""

from __future__ import annotations

from dref.errors import BackendError, BackendUnavailableError

__all__ = ["CompareUnsupportedError", "TransportError", "WatchUnsupportedError", "WireError"]


class WireError(BackendError):
    """Bytes received or about to be sent are not a valid (or too large) protocol message."""


class TransportError(BackendUnavailableError):
    """A peer could not be reached, did not answer in time, or the RPC failed."""


class WatchUnsupportedError(BackendError):
    """The member does not serve `DRefWatch` (an upstream node): use another member."""


class CompareUnsupportedError(BackendError):
    """The leader does not serve `DRefExt/Compare` (an upstream node): the cluster is mixed.

    Not retried; configure `mixed_cluster = true` so that compare commands are not used.
    """
