"""In-memory backend for dref: contexts of one process share a store per namespace."""

from dref_inmemory.backend import InMemoryBackend, InMemorySettings, reset

__all__ = ["InMemoryBackend", "InMemorySettings", "reset"]
