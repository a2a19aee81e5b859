"""The contract's projection tables exist once (billing_domain.adapters.postgres.projection_ddl); every other copy
agrees with it: the deployment's psql script, the shadow tables' migration, the store's column lists.

The copies that cannot import the definitions are parsed (tests/support/table_shapes.py) and compared table by
table: names, columns in order, types, nullability, primary keys, and anything else they declare. The same
comparison against a live PostgreSQL is in tests/integration/test_projection_ddl_on_postgres.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from support.table_shapes import TableShape, shape_of, statements_touching, tables_created

from billing_domain.adapters.postgres import projection_store
from billing_domain.adapters.postgres.projection_ddl import (
    ACCOUNT_PROJECTION,
    PROJECTION_DDL,
    TABLES,
    TRANSACTION_PROJECTION,
    copy_types,
    shadow_ddl,
)
from billing_domain.core.accounts import AccountState
from billing_domain.core.transactions import TransactionState

ROOT = Path(__file__).resolve().parents[2]
ROLES_SQL = ROOT / "deploy" / "postgres-init" / "01-roles.sql"
SHADOW_MIGRATION = ROOT / "billing_domain" / "adapters" / "postgres" / "migrations" / "versions" / "0202_shadow.py"

CONTRACT = {t.qualified: shape_of(t) for t in TABLES}
SHADOWS = {t.shadow: shape_of(t, t.shadow, unlogged=True) for t in TABLES}


class _RecordingOp:
    """Alembic's `op`, as far as migration 0202 uses it: the SQL it would run."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def execute(self, sql: str) -> None:
        self.sql.append(sql)


def _migration_sql(step: str) -> str:
    """The statements migration 0202 runs on `upgrade` or `downgrade`, without a database."""
    spec = importlib.util.spec_from_file_location("migration_0202_shadow", SHADOW_MIGRATION)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recorder = _RecordingOp()
    module.op = recorder  # type: ignore[attr-defined]
    getattr(module, step)()
    return ";\n".join(recorder.sql)


def _differences(found: dict[str, TableShape], expected: dict[str, TableShape]) -> list[str]:
    """What differs, said per table and column, so a failure names the drift."""
    problems = [f"{name}: missing" for name in expected.keys() - found.keys()]
    problems += [f"{name}: not in the contract" for name in found.keys() - expected.keys()]
    for name in expected.keys() & found.keys():
        got, want = found[name], expected[name]
        if got.columns != want.columns:
            columns = {c.name: c for c in got.columns}
            drift = [f"{name}.{c.name}: {columns.get(c.name)} instead of {c}"
                     for c in want.columns if columns.get(c.name) != c]
            drift += [f"{name}.{c}: not in the contract" for c in columns.keys() - {c.name for c in want.columns}]
            problems += drift or [f"{name}: columns in another order: {[c.name for c in got.columns]}"]
        for field in ("unlogged", "primary_key", "constraints"):
            if getattr(got, field) != getattr(want, field):
                problems.append(f"{name}: {field} is {getattr(got, field)!r}, not {getattr(want, field)!r}")
    return problems


def test_the_store_creates_exactly_the_definitions() -> None:
    assert _differences(tables_created(PROJECTION_DDL), CONTRACT) == []
    assert PROJECTION_DDL.startswith("CREATE SCHEMA IF NOT EXISTS billing;")


def test_the_deployment_sql_creates_the_contract_tables_and_changes_them_no_further() -> None:
    sql = ROLES_SQL.read_text()
    assert _differences(tables_created(sql), CONTRACT) == []
    assert statements_touching(sql, set(CONTRACT)) == []


def test_the_shadow_migration_creates_an_unlogged_copy_of_each_table() -> None:
    """Migration 0202 keeps its statements frozen (a revision must create the same tables whatever the code says
    later); they must still be the definitions'. If the contract changes, add a migration that brings the shadow
    tables along, and check the migrated tables here instead of 0202's alone."""
    upgrade = _migration_sql("upgrade")
    assert _differences(tables_created(upgrade), SHADOWS) == []
    assert _differences(tables_created(shadow_ddl()), SHADOWS) == []
    downgrade = _migration_sql("downgrade")
    assert tables_created(downgrade) == {}
    assert all(name in downgrade for name in SHADOWS)


def test_the_column_lists_are_the_definitions_and_the_states_fields() -> None:
    """`AccountState(*row)` reads rows in the store's column order: it is the tables' and the structs' order."""
    assert projection_store.ACCOUNT_COLUMNS == ACCOUNT_PROJECTION.column_names == AccountState.__struct_fields__
    assert (projection_store.TRANSACTION_COLUMNS == TRANSACTION_PROJECTION.column_names
            == TransactionState.__struct_fields__)
    assert ACCOUNT_PROJECTION.key == "account_id" and TRANSACTION_PROJECTION.key == "transaction_id"


def test_copy_types_follow_the_column_types() -> None:
    assert copy_types(ACCOUNT_PROJECTION.column_names) == [
        "text", "text", "text", "int8", "int8", "int8", "text", "int4", "text", "timestamptz"]
    assert copy_types(TRANSACTION_PROJECTION.column_names) == [
        "text", "text", "text", "int8", "text", "text", "text", "int4", "timestamptz", "timestamptz"]


# --- the comparison has teeth: each kind of drift is caught ----------------------------------------------
_ORIGINAL = "    last_event_id      text,"


@pytest.mark.parametrize(("drift", "says"), [
    ((_ORIGINAL, "    last_event_id      text NOT NULL,"), "billing.account_projection.last_event_id"),
    ((_ORIGINAL, "    last_event_id      varchar(64),"), "billing.account_projection.last_event_id"),
    ((_ORIGINAL, "    last_event_id      text DEFAULT '',"), "billing.account_projection.last_event_id"),
    ((_ORIGINAL, _ORIGINAL + "\n    note text,"), "billing.account_projection.note: not in the contract"),
    ((_ORIGINAL + "\n", ""), "billing.account_projection.last_event_id: None"),
    (("account_id         text        PRIMARY KEY", "account_id         text        NOT NULL"),
     "billing.account_projection: primary_key"),
    (("char(3)", "char(4)"), "currency"),
    (("    owner_id           text        NOT NULL,\n    currency           char(3)     NOT NULL,",
      "    currency           char(3)     NOT NULL,\n    owner_id           text        NOT NULL,"),
     "billing.account_projection: columns in another order"),
    (("bigint", "integer"), "balance_minor"),
    (("billing.transaction_projection", "billing.transactions"), "billing.transaction_projection: missing"),
    (("CREATE TABLE IF NOT EXISTS billing.account", "CREATE UNLOGGED TABLE IF NOT EXISTS billing.account"),
     "billing.account_projection: unlogged"),
])
def test_a_drifted_copy_is_caught_and_named(drift: tuple[str, str], says: str) -> None:
    old, new = drift
    assert old in PROJECTION_DDL
    problems = _differences(tables_created(PROJECTION_DDL.replace(old, new, 1)), CONTRACT)
    assert any(says in problem for problem in problems), problems


def test_a_statement_that_alters_a_contract_table_is_caught() -> None:
    sql = PROJECTION_DDL + "ALTER TABLE billing.account_projection ALTER COLUMN owner_id DROP NOT NULL;\n"
    assert _differences(tables_created(sql), CONTRACT) == []  # the CREATE alone still agrees ...
    assert statements_touching(sql, set(CONTRACT))  # ... which is why the deployment test looks for these too
