"""Alembic environment for the pipeline's own schema, `billing_recon`. Run through `ReconStore.migrate()`."""

from __future__ import annotations

from alembic import context

SCHEMA = "billing_recon"
connection = context.config.attributes["connection"]
connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
context.configure(connection=connection, version_table_schema=SCHEMA, include_schemas=True)
with context.begin_transaction():
    context.run_migrations()
