"""The shadow rebuild's tables (`billing_recon.shadow_<table>`, beside the live projections in their database):
filled by COPY, diffed against the live tables by one full outer join each, and swapped in by one
version-guarded transaction. What to put in them and what to do with the diff is the service's
(`billing_domain.services.shadow_rebuild`); this module only runs the SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine

from billing_domain.adapters.postgres.projection_ddl import ACCOUNT_PROJECTION, TRANSACTION_PROJECTION
from billing_domain.adapters.postgres.projection_ddl import Table as ProjectionTable
from billing_domain.core.accounts import AccountState
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import ShadowDiff, ShadowPlan, ShadowSwap


class ProjectionRows(Protocol):
    """What the shadow tables use of the projection store that builds them (named here, not imported: the store
    imports this module)."""

    engine: Engine

    def copy_accounts_into(self, conn: Connection, table: str, states: Iterable[AccountState]) -> int: ...

    def copy_transactions_into(self, conn: Connection, table: str, states: Iterable[TransactionState]) -> int: ...

    def compare_and_set_account(self, conn: Connection, seen: AccountState, new: AccountState) -> bool: ...

    def compare_and_set_transaction(self, conn: Connection, seen: TransactionState,
                                    new: TransactionState) -> bool: ...

    def delete_rows(self, conn: Connection, entity_type: str, ids: Sequence[str]) -> int: ...

LOCK_TIMEOUT = "5s"  # the swap waits this long at most for a row the live projector holds


@dataclass(frozen=True, slots=True)
class Table:
    """One projection table with its shadow, by the names of projection_ddl (the contract's tables)."""

    entity_type: str
    live: str
    shadow: str
    key: str
    columns: tuple[str, ...]

    @classmethod
    def of(cls, entity_type: str, table: ProjectionTable) -> Table:
        return cls(entity_type, table.qualified, table.shadow, table.key, table.column_names)

    @property
    def content(self) -> tuple[str, ...]:
        """The columns a repair compares (the key, timestamps and event ids aside, as the rebuild does)."""
        return tuple(c for c in self.columns if c not in (self.key, "version", "updated_at", "last_event_id"))


TABLES = (Table.of("account", ACCOUNT_PROJECTION), Table.of("transaction", TRANSACTION_PROJECTION))


class PostgresShadowTables:
    """`ports.ShadowTables` on the projections' database."""

    def __init__(self, projections: ProjectionRows) -> None:
        self._projections = projections

    def ensure(self) -> None:
        """The shadow tables beside the live ones (the migration makes them when both schemas share a database)."""
        with self._projections.engine.begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS billing_recon")
            for table in TABLES:
                conn.exec_driver_sql(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table.shadow} "
                                     f"(LIKE {table.live} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)")

    def fill(self, accounts: Sequence[AccountState], transactions: Sequence[TransactionState]) -> dict[str, int]:
        """Empty both shadow tables and COPY these states in, in one transaction; the rows copied per table."""
        projections = self._projections
        with projections.engine.begin() as conn:
            for table in TABLES:
                conn.exec_driver_sql(f"TRUNCATE {table.shadow}")
            return {"account": projections.copy_accounts_into(conn, TABLES[0].shadow, accounts),
                    "transaction": projections.copy_transactions_into(conn, TABLES[1].shadow, transactions)}

    def diff(self, plan: ShadowPlan, sample_rows: int) -> dict[str, ShadowDiff]:
        with self._projections.engine.connect() as conn:
            return {table.entity_type: _diff(conn, table, plan, sample_rows) for table in TABLES}

    def swap(self, plan: ShadowPlan, *, delete_orphans: bool) -> dict[str, ShadowSwap]:
        with self._projections.engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            return {table.entity_type: self._swap(conn, table, plan, delete_orphans) for table in TABLES}

    def _swap(self, conn: Connection, table: Table, plan: ShadowPlan, delete_orphans: bool) -> ShadowSwap:
        projections, entity_type = self._projections, table.entity_type
        written = int(conn.exec_driver_sql(_upsert(table)).rowcount)
        cas: Any = (projections.compare_and_set_account if entity_type == "account"
                    else projections.compare_and_set_transaction)
        written += sum(bool(cas(conn, seen, head)) for seen, head in plan.ahead[entity_type])
        if delete_orphans and plan.orphans[entity_type]:
            written += projections.delete_rows(conn, entity_type, plan.orphans[entity_type])
        kept = int(conn.exec_driver_sql(
            f"SELECT count(*) FROM {table.shadow} s JOIN {table.live} l ON l.{table.key} = s.{table.key} "
            "WHERE l.version > s.version").scalar_one())
        return ShadowSwap(written, kept)


def _diff(conn: Connection, table: Table, plan: ShadowPlan, sample_rows: int) -> ShadowDiff:
    """Counts per action, the first rows that would change, and the ids of every row that would."""
    params, classified = _params(table, plan), _classified(table)
    counts = conn.exec_driver_sql(f"SELECT action, count(*) FROM ({classified}) d GROUP BY action", params).all()
    sample = conn.exec_driver_sql(
        f"SELECT id, action, live_row, shadow_row FROM ({classified}) d "
        f"WHERE action <> 'unchanged' ORDER BY id LIMIT {int(sample_rows)}", params).all()
    changed = conn.exec_driver_sql(f"SELECT id FROM ({classified}) d WHERE action <> 'unchanged' ORDER BY id",
                                   params)
    return ShadowDiff(counts={str(a): int(n) for a, n in sorted(counts)},
                      sample=[{"id": i, "action": a, "live": live, "shadow": shadow} for i, a, live, shadow in sample],
                      changed_ids=[str(i) for (i,) in changed])


def _classified(table: Table) -> str:
    """Every key of shadow and live with the action the swap would take, and both rows as JSON."""
    k = table.key
    differs = " OR ".join(f"s.{c} IS DISTINCT FROM l.{c}" for c in table.content)
    return f"""
        SELECT coalesce(s.{k}, l.{k}) AS id, CASE WHEN l.{k} IS NULL THEN NULL ELSE to_jsonb(l) END AS live_row,
          CASE WHEN s.{k} IS NULL THEN NULL ELSE to_jsonb(s) END AS shadow_row,
          CASE
            WHEN l.{k} IS NULL THEN 'insert'
            WHEN s.{k} IS NULL THEN CASE WHEN l.{k} = ANY(%(refused)s) THEN 'refused'
                                         WHEN l.{k} = ANY(%(orphans)s) THEN 'orphan' ELSE 'live_only_newer' END
            WHEN l.version > s.version THEN CASE WHEN l.{k} = ANY(%(ahead)s) THEN 'reset_ahead'
                                                 ELSE 'keep_live_newer' END
            WHEN l.version < s.version THEN 'catch_up'
            WHEN {differs} THEN 'repair'
            ELSE 'unchanged'
          END AS action
        FROM {table.shadow} s FULL OUTER JOIN {table.live} l ON s.{k} = l.{k}"""


def _params(table: Table, plan: ShadowPlan) -> dict[str, Any]:
    return {"refused": sorted(plan.refused[table.entity_type]), "orphans": plan.orphans[table.entity_type],
            "ahead": [_key(seen) for seen, _ in plan.ahead[table.entity_type]]}


def _upsert(table: Table) -> str:
    """Write the shadow rows that differ; a live row of a higher version always wins, even one written since
    the diff (the guard is checked again on conflict)."""
    k, cols = table.key, ", ".join(table.columns)
    differs = " OR ".join(f"{{a}}.{c} IS DISTINCT FROM {{b}}.{c}" for c in table.content)
    return (f"INSERT INTO {table.live} AS l ({cols}) "
            f"SELECT {', '.join('s.' + c for c in table.columns)} FROM {table.shadow} s "
            f"LEFT JOIN {table.live} c ON c.{k} = s.{k} "
            f"WHERE c.{k} IS NULL OR c.version < s.version OR (c.version = s.version AND ("
            + differs.format(a="c", b="s") + f")) ORDER BY s.{k} "
            f"ON CONFLICT ({k}) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in table.columns[1:])} "
            "WHERE l.version < EXCLUDED.version OR (l.version = EXCLUDED.version AND ("
            + differs.format(a="l", b="EXCLUDED") + "))")


def _key(state: AccountState | TransactionState) -> str:
    return state.account_id if isinstance(state, AccountState) else state.transaction_id
