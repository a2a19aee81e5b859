"""Which projection rows changed since an earlier read, from PostgreSQL's own row versions.

Every row version carries `xmin`, the id of the transaction that wrote it. A read records the oldest
transaction still running when it began (`pg_snapshot_xmin`): every transaction older than that had
finished and was seen. At the next read, a row whose `xmin` is not older than the recorded value may
have been written since, so it is read again; a row whose `xmin` is older is as it was (an over-read
is possible, a miss is not). Deleted rows leave no version behind: they are found by comparing the
ids with the ids the earlier read saw.

Nothing is installed on the engine's tables: no trigger, no column. The projections stay the
contract's. Comparisons use `age()`, which is exact while fewer than 2^31 transactions separate the two
reads, and only mean something on the same server: `why_not_comparable` checks both first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine

from billing_domain.adapters.postgres.bulk_read import stream_rows
from billing_domain.core.accounts import AccountState
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import ACCOUNT_COLUMNS, TRANSACTION_COLUMNS
from billing_domain.ports import ReadMark as ReadMark  # the port's value; importable from here too

XID_SPACE = 1 << 32
# Past this many transaction ids between two reads `age()` could wrap (2^31): compare nothing then.
MAX_XID_DISTANCE = 1 << 30
# Schema-qualified: the projection store (projection_store.py) reads its snapshots from here, not the reverse.
TABLES = {"account": ("billing.account_projection", "account_id"),
          "transaction": ("billing.transaction_projection", "transaction_id")}


# Transaction ids only compare within one server's life: a restored or moved database starts another.
_DATABASE = ("SELECT d.oid::text || '@' || pg_postmaster_start_time()::text FROM pg_database d "
             "WHERE d.datname = current_database()")


def read_mark(engine: Engine) -> ReadMark:
    """Take it *before* a read: every transaction older than `xmin` had finished and is seen by the read."""
    with engine.connect() as conn:
        xmin = int(conn.exec_driver_sql("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").scalar_one())
        return ReadMark(xmin, str(conn.exec_driver_sql(_DATABASE).scalar_one()))


@dataclass
class ProjectionSnapshot:
    """Reads of both projection tables inside one REPEATABLE READ transaction: one consistent picture."""

    conn: Connection
    mark: ReadMark  # of this transaction's snapshot
    xmax: int  # the next transaction id at the snapshot

    def why_not_comparable(self, earlier: ReadMark) -> str | None:
        """None if rows can be compared with that earlier read by `xmin`; else why not."""
        if earlier.database != self.mark.database:
            return "the projections database is not the one the last run read (restored, moved or restarted)"
        distance = self.xmax - earlier.xmin
        if not 0 <= distance < MAX_XID_DISTANCE:
            return f"{distance} transaction ids since the last run's read"
        return None

    def ids(self, entity_type: str) -> set[str]:
        table, key = TABLES[entity_type]
        return {row[0] for row in stream_rows(self.conn, f"SELECT {key} FROM {table}")}

    def changed_ids(self, entity_type: str, earlier_xmin: int) -> set[str]:
        """Rows written by a transaction not older than `earlier_xmin` (see the module's note)."""
        table, key = TABLES[entity_type]
        result = self.conn.exec_driver_sql(
            f"SELECT {key} FROM {table} WHERE age(xmin) <= age(%(x)s::text::xid)",
            {"x": str(earlier_xmin % XID_SPACE)})
        return {row[0] for row in result}

    def balance_sums(self) -> dict[str, tuple[int, int]]:
        """Per row currency: Σ balance_minor and the number of rows."""
        result = self.conn.exec_driver_sql(
            f"SELECT currency, sum(balance_minor)::text, count(*) FROM {TABLES['account'][0]} GROUP BY currency")
        return {row[0]: (int(row[1]), int(row[2])) for row in result}

    def read_accounts(self, ids: Sequence[str]) -> dict[str, AccountState]:
        return {row[0]: AccountState(*row) for row in self._rows("account", ACCOUNT_COLUMNS, ids)}

    def read_transactions(self, ids: Sequence[str]) -> dict[str, TransactionState]:
        return {row[0]: TransactionState(*row) for row in self._rows("transaction", TRANSACTION_COLUMNS, ids)}

    def _rows(self, entity_type: str, columns: Sequence[str], ids: Sequence[str]) -> list[tuple[Any, ...]]:
        if not ids:
            return []
        table, key = TABLES[entity_type]
        result = self.conn.exec_driver_sql(
            f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = ANY(%(ids)s)", {"ids": list(ids)})
        return [tuple(row) for row in result]


@contextmanager
def projection_snapshot(engine: Engine) -> Iterator[ProjectionSnapshot]:
    with engine.connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin() as transaction:
            # The first statement fixes the snapshot every later read of this transaction sees.
            row = conn.exec_driver_sql("SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
                                       "FROM pg_current_snapshot() AS s").one()
            database = str(conn.exec_driver_sql(_DATABASE).scalar_one())
            yield ProjectionSnapshot(conn, ReadMark(int(row[0]), database), int(row[1]))
            transaction.rollback()  # read only: nothing to keep
