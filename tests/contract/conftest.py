"""The real side of the contract suites, kept cheap: the session's servers (tests/conftest.py), one database with
both schemas made once for every contract test (a database costs most of a second here, its migration more),
emptied before each test, and fresh topics per test.

Each suite module holds an abstract class of behaviours (`...Contract`) and two concrete classes, one on the
real adapter and one on the fake of `tests/support/fakes.py`, as the `eventsourcing` library's recorder tests
are written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import Engine, make_url

from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore

# Append-only by design (a trigger refuses TRUNCATE and DELETE): left as they are; tests read their own rows.
APPEND_ONLY = ("rebuild_audit", "api_audit")


@pytest.fixture(scope="session")
def contract_database(servers: Any) -> Iterator[Engine]:
    """One database with the projections and billing_recon at the latest revision, for the contract suites."""
    url = make_url(servers.database_url)
    name = f"contract_{uuid.uuid4().hex[:10]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(url.set(database=name).render_as_string(hide_password=False))
    ProjectionStore(engine).ensure_schema()
    ReconStore(engine).migrate()
    yield engine
    engine.dispose()


@pytest.fixture
def contract_engine(contract_database: Engine) -> Engine:
    """The contract database with every table emptied (but the append-only audit): for this test alone."""
    with contract_database.begin() as conn:
        tables = [f"{schema}.{table}" for schema, table in conn.exec_driver_sql(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('billing', 'billing_recon') "
            "AND tablename <> 'alembic_version'") if table not in APPEND_ONLY]
        # DELETE, not TRUNCATE: a few rows each, and TRUNCATE makes new files for every table (a fifth of a second).
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # no foreign key order to follow
        for table in tables:
            conn.exec_driver_sql(f"DELETE FROM {table}")
    return contract_database
