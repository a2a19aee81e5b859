"""PostgreSQL advisory locks: one operation of a kind at a time, for its whole length.

A session lock on a connection of its own, taken with `pg_try_advisory_lock` (a second operation is
refused at once, never queued) and held until the operation ends. If the process dies the server
drops the connection and the lock with it, so a killed rebuild never blocks the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy.engine import Engine

from billing_domain.core.exceptions import ConcurrentOperationError

REBUILD_KEY = "billing.rebuild.{entity_type}"  # shared by the rebuilds and the shadow rebuild
SAGA_RECOVERY_KEY = "billing.saga_recovery"


@contextmanager
def advisory_lock(engine: Engine, key: str, busy: str) -> Iterator[None]:
    """Hold the lock named `key` while the block runs; `ConcurrentOperationError(busy)` if another session has it."""
    with engine.connect() as conn:
        taken = conn.exec_driver_sql("SELECT pg_try_advisory_lock(hashtext(%(k)s))", {"k": key}).scalar()
        # End the transaction the query opened: a session lock outlives it, and a connection idle in a
        # transaction for a whole rebuild would hold back vacuum on every table.
        conn.commit()
        if not taken:
            raise ConcurrentOperationError(busy)
        try:
            yield
        finally:
            conn.exec_driver_sql("SELECT pg_advisory_unlock(hashtext(%(k)s))", {"k": key})
            conn.commit()


def rebuild_lock(engine: Engine, entity_type: str) -> AbstractContextManager[None]:
    """One rebuild (or shadow rebuild) per entity type at a time."""
    key = REBUILD_KEY.format(entity_type=entity_type)
    return advisory_lock(engine, key, f"another {entity_type} rebuild is running (it holds the advisory lock "
                                      f"{key!r}); wait for it to finish and retry")


def saga_recovery_lock(engine: Engine) -> AbstractContextManager[None]:
    """One saga recovery at a time: two would plan the same version + 1."""
    return advisory_lock(engine, SAGA_RECOVERY_KEY, "another saga recovery is running (it holds the advisory lock "
                                                    f"{SAGA_RECOVERY_KEY!r}); wait for it to finish and retry")


class AdvisoryLocks:
    """The `Locks` port on one database's advisory locks (the projections' database, where every writer is)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def rebuild(self, entity_type: str) -> AbstractContextManager[None]:
        return rebuild_lock(self.engine, entity_type)

    def saga_recovery(self) -> AbstractContextManager[None]:
        return saga_recovery_lock(self.engine)
