"""The one way the durable stores write to SQLite: an immediate transaction under a lock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate_transaction(
    db: sqlite3.Connection, lock: threading.Lock | threading.RLock
) -> Iterator[sqlite3.Connection]:
    """Commit what the block writes, or nothing if it raises. The write lock is taken at BEGIN
    (IMMEDIATE), so two writers never both read, then fail to upgrade; the thread lock keeps the
    connection to one thread at a time."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
