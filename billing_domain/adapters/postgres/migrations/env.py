"""Alembic environment for the pipeline's own schema, `billing_recon`. Run through `ReconStore.migrate()`."""

from __future__ import annotations

from alembic import context

SCHEMA = "billing_recon"
connection = context.config.attributes["connection"]
# Only when absent: even IF NOT EXISTS needs CREATE on the database, which least-privilege roles lack.
if not connection.exec_driver_sql("SELECT 1 FROM pg_namespace WHERE nspname = %(s)s", {"s": SCHEMA}).scalar():
    connection.exec_driver_sql(f"CREATE SCHEMA {SCHEMA}")
context.configure(connection=connection, version_table_schema=SCHEMA, include_schemas=True)
with context.begin_transaction():
    context.run_migrations()
