"""The PostgreSQL projection store (schema `billing`): DDL, bulk reads, version-guarded writes.

Bulk reads go through a server-side cursor (see bulk_read); bulk writes COPY into a staging
table and then apply one guarded `INSERT ... ON CONFLICT ... WHERE`, so a row never moves to a
lower version, even while the live projector writes the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from billing_domain.adapters.postgres.bulk_read import stream_rows
from billing_domain.adapters.postgres.locks import AdvisoryLocks
from billing_domain.adapters.postgres.projection_changes import ProjectionSnapshot, projection_snapshot, read_mark
from billing_domain.adapters.postgres.projection_ddl import PROJECTION_DDL, SCHEMA, copy_types
from billing_domain.adapters.postgres.shadow_store import PostgresShadowTables
from billing_domain.core.accounts import AccountState
from billing_domain.core.transactions import TransactionState

# The contract's columns are the port's (a service lists them without this module); importable from here too.
from billing_domain.ports import ACCOUNT_COLUMNS, TRANSACTION_COLUMNS, ReadMark

_State = TypeVar("_State", AccountState, TransactionState)


# Seconds to wait for a connection: without it, a server behind a dropped route holds a command for the
# kernel's TCP timeout (minutes). A URL's own `?connect_timeout=` wins.
CONNECT_TIMEOUT_S = 5


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine on psycopg 3 whatever driver the URL names, with a bounded connect."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if "connect_timeout" not in sa.engine.make_url(url).query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S, **kwargs.get("connect_args", {})}
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


class ProjectionStore:
    """The engine's read-side projections, as the contract fixes them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.locks = AdvisoryLocks(engine)  # the locks of the operations that write these rows, on their database
        self.shadow = PostgresShadowTables(self)  # the shadow rebuild's tables: swapped in by one transaction here

    def ensure_schema(self) -> None:
        """Create the contract's tables if absent. Checks first: a least-privilege role may not run DDL."""
        with self.engine.connect() as conn:
            present = conn.exec_driver_sql(
                "SELECT to_regclass('billing.account_projection') IS NOT NULL "
                "AND to_regclass('billing.transaction_projection') IS NOT NULL").scalar()
        if present:
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('billing.projection_ddl'))")
            conn.exec_driver_sql(PROJECTION_DDL)

    # --- bulk reads ---------------------------------------------------------------------------------
    def read_accounts(self, ids: Sequence[str] | None = None) -> dict[str, AccountState]:
        rows = self._read_rows("account_projection", ACCOUNT_COLUMNS, "account_id", ids)
        return {row[0]: AccountState(*row) for row in rows}

    def read_transactions(self, ids: Sequence[str] | None = None) -> dict[str, TransactionState]:
        rows = self._read_rows("transaction_projection", TRANSACTION_COLUMNS, "transaction_id", ids)
        return {row[0]: TransactionState(*row) for row in rows}

    def _read_rows(self, table: str, columns: Sequence[str], key: str,
                   ids: Sequence[str] | None) -> list[tuple[Any, ...]]:
        query = f"SELECT {', '.join(columns)} FROM {SCHEMA}.{table}"
        with self.engine.connect() as conn:
            if ids is None:
                return list(stream_rows(conn, query))
            # %b: the ids go as a binary array; as text, psycopg checks every id for quoting with a regex.
            return list(stream_rows(conn, f"{query} WHERE {key} = ANY(%(ids)b)", {"ids": list(ids)}))

    # --- where a read stands, and consistent reads of both tables (see projection_changes) -----------
    def read_mark(self) -> ReadMark:
        return read_mark(self.engine)

    def snapshot(self) -> AbstractContextManager[ProjectionSnapshot]:
        return projection_snapshot(self.engine)

    # --- rows locked by the caller's transaction (the live projector) --------------------------------
    def lock_accounts(self, conn: Connection, ids: Sequence[str]) -> dict[str, AccountState]:
        """Read these rows and lock them (FOR UPDATE) until the caller's transaction ends."""
        rows = _select_for_update(conn, "account_projection", ACCOUNT_COLUMNS, ids)
        return {row[0]: AccountState(*row) for row in rows}

    def lock_transactions(self, conn: Connection, ids: Sequence[str]) -> dict[str, TransactionState]:
        rows = _select_for_update(conn, "transaction_projection", TRANSACTION_COLUMNS, ids)
        return {row[0]: TransactionState(*row) for row in rows}

    # --- guarded bulk writes ------------------------------------------------------------------------
    def upsert_accounts(self, conn: Connection, states: Iterable[AccountState]) -> int:
        """Insert or update rows, never moving a row to a lower version. Returns rows written."""
        return self._guarded_upsert(conn, "account_projection", ACCOUNT_COLUMNS,
                                    [_account_tuple(s) for s in states])

    def upsert_transactions(self, conn: Connection, states: Iterable[TransactionState]) -> int:
        return self._guarded_upsert(conn, "transaction_projection", TRANSACTION_COLUMNS,
                                    [_transaction_tuple(s) for s in states])

    def _guarded_upsert(self, conn: Connection, table: str, columns: Sequence[str],
                        rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        staging = f"staging_{table}"
        key = columns[0]
        conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {staging} "
                             f"(LIKE {SCHEMA}.{table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        conn.exec_driver_sql(f"TRUNCATE {staging}")
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {staging} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_pg_types(columns))
            for row in rows:
                copy.write_row(row)
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
        result = conn.exec_driver_sql(
            f"INSERT INTO {SCHEMA}.{table} AS live ({', '.join(columns)}) "
            f"SELECT {', '.join(columns)} FROM {staging} ORDER BY {key} "
            f"ON CONFLICT ({key}) DO UPDATE SET {assignments} "
            f"WHERE live.version <= EXCLUDED.version")
        return int(result.rowcount)

    def compare_and_set_account(self, conn: Connection, seen: AccountState, new: AccountState) -> bool:
        """Overwrite one row only if it is still exactly the row we saw (for `version_ahead` rows)."""
        return self._compare_and_set(conn, "account_projection", ACCOUNT_COLUMNS, _account_tuple(seen),
                                     _account_tuple(new))

    def compare_and_set_transaction(self, conn: Connection, seen: TransactionState,
                                    new: TransactionState) -> bool:
        return self._compare_and_set(conn, "transaction_projection", TRANSACTION_COLUMNS,
                                     _transaction_tuple(seen), _transaction_tuple(new))

    def _compare_and_set(self, conn: Connection, table: str, columns: Sequence[str], seen: tuple[Any, ...],
                         new: tuple[Any, ...]) -> bool:
        sets = ", ".join(f"{c} = %(new_{c})s" for c in columns[1:])
        same = " AND ".join(f"{c} IS NOT DISTINCT FROM %(seen_{c})s" for c in columns[1:])
        params = {f"new_{c}": v for c, v in zip(columns, new, strict=True)}
        params |= {f"seen_{c}": v for c, v in zip(columns, seen, strict=True)}
        params["key"] = seen[0]
        result = conn.exec_driver_sql(
            f"UPDATE {SCHEMA}.{table} SET {sets} WHERE {columns[0]} = %(key)s AND {same}", params)
        return int(result.rowcount) == 1

    # --- the same writes, each in a transaction of its own (the ports' form: a rebuild's batches) ------
    def upsert(self, entity_type: str, states: Sequence[AccountState | TransactionState]) -> int:
        """`upsert_accounts` or `upsert_transactions` in one transaction: a batch is written all or not at all."""
        with self.engine.begin() as conn:
            if entity_type == "account":
                return self.upsert_accounts(conn, _states(AccountState, states))
            return self.upsert_transactions(conn, _states(TransactionState, states))

    def compare_and_set(self, entity_type: str, seen: AccountState | TransactionState,
                        new: AccountState | TransactionState) -> bool:
        with self.engine.begin() as conn:
            if isinstance(seen, AccountState) and isinstance(new, AccountState) and entity_type == "account":
                return self.compare_and_set_account(conn, seen, new)
            if isinstance(seen, TransactionState) and isinstance(new, TransactionState):
                return self.compare_and_set_transaction(conn, seen, new)
        raise TypeError(f"compare_and_set: {type(seen).__name__} and {type(new).__name__} are not two "
                        f"{entity_type} states")

    def delete(self, entity_type: str, ids: Sequence[str]) -> int:
        with self.engine.begin() as conn:
            return self.delete_rows(conn, entity_type, ids)

    # --- COPY into another table of the same columns (the shadow rebuild) -----------------------------
    def copy_accounts_into(self, conn: Connection, table: str, states: Iterable[AccountState]) -> int:
        """COPY account states into `table` (schema-qualified, the contract's columns). Returns rows copied."""
        return _copy_in(conn, table, ACCOUNT_COLUMNS, (_account_tuple(s) for s in states))

    def copy_transactions_into(self, conn: Connection, table: str, states: Iterable[TransactionState]) -> int:
        return _copy_in(conn, table, TRANSACTION_COLUMNS, (_transaction_tuple(s) for s in states))

    def delete_rows(self, conn: Connection, entity_type: str, ids: Sequence[str]) -> int:
        table, key = (("account_projection", "account_id") if entity_type == "account"
                      else ("transaction_projection", "transaction_id"))
        result = conn.exec_driver_sql(f"DELETE FROM {SCHEMA}.{table} WHERE {key} = ANY(%(ids)s)",
                                      {"ids": list(ids)})
        return int(result.rowcount)


def _states(kind: type[_State], states: Sequence[object]) -> list[_State]:
    """The states, checked to be of the entity type written: a wrong one is a bug, never a row."""
    checked = [state for state in states if isinstance(state, kind)]
    if len(checked) != len(states):
        raise TypeError(f"upsert: not every state is a {kind.__name__}")
    return checked


def _select_for_update(conn: Connection, table: str, columns: Sequence[str],
                       ids: Sequence[str]) -> list[tuple[Any, ...]]:
    if not ids:
        return []
    # Locking in key order keeps two writers of overlapping batches from deadlocking.
    result = conn.exec_driver_sql(
        f"SELECT {', '.join(columns)} FROM {SCHEMA}.{table} WHERE {columns[0]} = ANY(%(ids)s) "
        f"ORDER BY {columns[0]} FOR UPDATE", {"ids": list(ids)})
    return [tuple(row) for row in result]


def _copy_in(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    count = 0
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_pg_types(columns))
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def _pg_types(columns: Sequence[str]) -> list[str]:
    return copy_types(columns)  # the types of projection_ddl, the tables' one definition


def _account_tuple(s: AccountState) -> tuple[Any, ...]:
    return (s.account_id, s.owner_id, s.currency, s.balance_minor, s.min_balance_minor, s.max_balance_minor,
            s.status, s.version, s.last_event_id, s.updated_at or _epoch())


def _transaction_tuple(s: TransactionState) -> tuple[Any, ...]:
    return (s.transaction_id, s.source_account_id, s.destination_account_id, s.amount_minor, s.currency,
            s.status, s.failure_reason, s.version, s.initiated_at or _epoch(), s.updated_at or _epoch())


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)
