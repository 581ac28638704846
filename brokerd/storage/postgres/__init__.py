"""The PostgreSQL store: brokerd's queues in a database the operator already
runs, replicates and backs up. Importing this package does not import the
driver (an optional extra, ``brokerd[postgresql]``); opening a store does."""

from .store import PostgresStore
from .url import StoreURLError, check_url, is_postgres_url, redact

__all__ = ["PostgresStore", "StoreURLError", "check_url", "is_postgres_url", "redact"]
