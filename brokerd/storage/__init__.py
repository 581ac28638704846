"""Durable storage for the broker: the Store protocol, the typed Batch and
Query kinds it takes, and its two implementations. SQL lives only here."""

from .base import Batch, Op, Query, Recovered, Store
from .errors import StorageOpenError
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = [
    "Batch",
    "MemoryStore",
    "Op",
    "Query",
    "Recovered",
    "SqliteStore",
    "StorageOpenError",
    "Store",
]
