"""The projection tables as a real PostgreSQL makes them, from each of their three sources, are the definitions of
billing_domain.adapters.postgres.projection_ddl: the store's `ensure_schema`, the migrations' shadow tables, and
the deployment script's `CREATE TABLE` statements (run alone: the rest of the script creates cluster-wide roles).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine
from support.table_shapes import shape_in_database, shape_of, statements, tables_in_schema

from billing_domain.adapters.postgres.projection_ddl import SCHEMA, SHADOW_SCHEMA, TABLES
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore

ROLES_SQL = Path(__file__).resolve().parents[2] / "deploy" / "postgres-init" / "01-roles.sql"


def test_the_store_and_the_migrations_make_the_defined_tables(projection_store: ProjectionStore) -> None:
    ReconStore(projection_store.engine).migrate()
    with projection_store.engine.connect() as conn:
        assert tables_in_schema(conn, SCHEMA) == {t.qualified for t in TABLES}
        for table in TABLES:
            assert shape_in_database(conn, table.qualified) == shape_of(table)
            assert shape_in_database(conn, table.shadow) == shape_of(table, table.shadow, unlogged=True)
        assert {t.shadow for t in TABLES} <= tables_in_schema(conn, SHADOW_SCHEMA)


def test_the_deployment_scripts_tables_are_the_defined_tables(engine: Engine) -> None:
    creates = [s for s in statements(ROLES_SQL.read_text()) if s.upper().startswith("CREATE TABLE")]
    assert len(creates) == len(TABLES)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {SCHEMA}")
        for statement in creates:
            conn.exec_driver_sql(statement)
    with engine.connect() as conn:
        assert tables_in_schema(conn, SCHEMA) == {t.qualified for t in TABLES}
        for table in TABLES:
            assert shape_in_database(conn, table.qualified) == shape_of(table)
    ProjectionStore(engine).ensure_schema()  # finds them there: nothing to create, nothing refused
