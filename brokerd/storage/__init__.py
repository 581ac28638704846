"""Durable storage for the broker: the Store protocol and its two implementations."""

from .base import Batch, Recovered, Store
from .errors import StorageOpenError
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["Batch", "MemoryStore", "Recovered", "SqliteStore", "StorageOpenError", "Store"]
