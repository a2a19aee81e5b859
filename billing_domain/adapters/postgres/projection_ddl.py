"""The contract's projection tables, written once (billing-engine-contract.md, "PostgreSQL: the projections").

Every other copy of these tables is made from, or checked against, `TABLES`:

- `ProjectionStore.ensure_schema` runs `PROJECTION_DDL`, made here; the store's column lists and COPY types
  come from here too.
- Migration 0202 creates the shadow rebuild's tables (`billing_recon.shadow_<table>`, `shadow_ddl()`). It keeps
  its own statements, frozen, as a migration must: what a revision creates may not change when this module
  does. tests/unit/test_projection_ddl.py checks them against `shadow_ddl()`, so a change of the contract here
  fails until a new migration brings the shadow tables along.
- deploy/postgres-init/01-roles.sql creates the tables in plain SQL for the deployment (psql cannot import
  Python); the same test parses it and checks it against these tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SCHEMA = "billing"
SHADOW_SCHEMA = "billing_recon"
SHADOW_PREFIX = "shadow_"

# The binary COPY type of each SQL type the tables use (char(3) has text's binary form).
_COPY_TYPES = {"text": "text", "char(3)": "text", "bigint": "int8", "integer": "int4", "timestamptz": "timestamptz"}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # as the contract writes it
    nullable: bool = False
    note: str = ""  # the contract's comment on the column

    @property
    def copy_type(self) -> str:
        return _COPY_TYPES[self.type]


@dataclass(frozen=True, slots=True)
class Table:
    name: str  # without the schema
    columns: tuple[Column, ...]  # the first is the primary key

    @property
    def key(self) -> str:
        return self.columns[0].name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def shadow(self) -> str:
        """The shadow rebuild's copy of this table: the same columns, in the pipeline's own schema."""
        return f"{SHADOW_SCHEMA}.{SHADOW_PREFIX}{self.name}"

    def create(self, name: str | None = None, *, unlogged: bool = False) -> str:
        """`CREATE TABLE IF NOT EXISTS` of these columns, named `name` (default: the contract's name)."""
        width = max(len(c.name) for c in self.columns) + 1
        lines = []
        for i, column in enumerate(self.columns):
            constraint = "PRIMARY KEY" if i == 0 else "" if column.nullable else "NOT NULL"
            line = f"    {column.name:<{width}} {column.type:<11} {constraint}".rstrip()
            comma = "," if i < len(self.columns) - 1 else ""
            lines.append(f"{line}{comma}  -- {column.note}" if column.note else f"{line}{comma}")
        kind = "UNLOGGED TABLE" if unlogged else "TABLE"
        return f"CREATE {kind} IF NOT EXISTS {name or self.qualified} (\n" + "\n".join(lines) + "\n);"


ACCOUNT_PROJECTION = Table("account_projection", (
    Column("account_id", "text"),
    Column("owner_id", "text"),
    Column("currency", "char(3)"),
    Column("balance_minor", "bigint"),
    Column("min_balance_minor", "bigint"),
    Column("max_balance_minor", "bigint"),
    Column("status", "text", note="active | suspended | closed"),
    Column("version", "integer", note="aggregate_version of the last applied event"),
    Column("last_event_id", "text", nullable=True),
    Column("updated_at", "timestamptz"),
))

TRANSACTION_PROJECTION = Table("transaction_projection", (
    Column("transaction_id", "text"),
    Column("source_account_id", "text"),
    Column("destination_account_id", "text"),
    Column("amount_minor", "bigint"),
    Column("currency", "char(3)"),
    Column("status", "text", note="pending | completed | failed | compensated"),
    Column("failure_reason", "text", nullable=True),
    Column("version", "integer"),
    Column("initiated_at", "timestamptz", note="occurred_at of TransactionInitiated"),
    Column("updated_at", "timestamptz"),
))

TABLES = (ACCOUNT_PROJECTION, TRANSACTION_PROJECTION)


def projection_ddl() -> str:
    """The schema and the contract's tables, each created only if absent."""
    return "\n".join([f"CREATE SCHEMA IF NOT EXISTS {SCHEMA};", *(t.create() for t in TABLES)]) + "\n"


def shadow_ddl() -> str:
    """The shadow rebuild's tables: unlogged (scratch, rebuilt from the log each time), in `billing_recon`."""
    return "\n".join(t.create(t.shadow, unlogged=True) for t in TABLES) + "\n"


def copy_types(columns: Sequence[str]) -> list[str]:
    """The binary COPY types of these columns (of either table: a name the two share has one type)."""
    return [_COPY_TYPE_OF[c] for c in columns]


def _copy_type_of_each_name() -> dict[str, str]:
    types: dict[str, str] = {}
    for table in TABLES:
        for column in table.columns:
            if types.setdefault(column.name, column.copy_type) != column.copy_type:
                raise ValueError(f"column {column.name} has two types: copy_types would be ambiguous")
    return types


_COPY_TYPE_OF = _copy_type_of_each_name()
PROJECTION_DDL = projection_ddl()
