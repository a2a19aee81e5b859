"""`ReconStore.migrate()` runs at every command: on a database at the latest revisions it must cost one query,
not Alembic's load and run (issue 18.10: a read command's start), and a database behind must still migrate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from billing_domain.adapters.postgres.recon_store import MIGRATIONS, SCHEMA, ReconStore, migration_heads
from billing_domain.config import Topics

# In a fresh process, so that nothing else has loaded Alembic: prints whether `migrate()` did.
MIGRATE_AND_SAY = """
import sys
from billing_domain.adapters.postgres.projection_store import make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
ReconStore(make_engine(sys.argv[1])).migrate()
print("alembic loaded" if "alembic" in sys.modules else "alembic not loaded")
"""


def migrate_in_a_fresh_process(database_url: str) -> str:
    done = subprocess.run([sys.executable, "-c", MIGRATE_AND_SAY, database_url], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def applied(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.exec_driver_sql(f"SELECT version_num FROM {SCHEMA}.alembic_version").scalars())


def test_the_heads_read_from_the_scripts_are_alembics() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert migration_heads() == set(ScriptDirectory.from_config(config).get_heads())


def test_a_database_at_the_heads_is_not_migrated_again_and_one_behind_is(database_url: str, engine: Engine) -> None:
    assert migrate_in_a_fresh_process(database_url) == "alembic loaded"  # a new database: every migration
    assert applied(engine) == migration_heads()
    assert migrate_in_a_fresh_process(database_url) == "alembic not loaded"

    with engine.begin() as conn:  # as if migrated by the release before 0420 (whose upgrade may run twice)
        rewound = conn.exec_driver_sql(f"UPDATE {SCHEMA}.alembic_version SET version_num = '0410_wide_ledger_sums' "
                                       "WHERE version_num = '0420_checkpoint_buckets'").rowcount
    assert rewound == 1
    assert migrate_in_a_fresh_process(database_url) == "alembic loaded"
    assert applied(engine) == migration_heads()
    ReconStore(engine).migrate()  # and in this process, again: a no-op
    assert applied(engine) == migration_heads()


# A read command's process, as the operator runs it: what it imported, and its exit code.
READ_COMMAND = """
import json, sys
from billing_cli.app import app
try:
    app(sys.argv[1:], prog_name="billing-recon")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""
NOT_FOR_A_READ = {"alembic", "slack_sdk", "dagster", "pandas", "polars", "fastapi"}


def test_a_read_command_on_a_prepared_database_loads_no_migration_tool_or_framework(
        servers: Any, topics: Topics, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")} | {
        "BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
        "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3"}
    for _ in range(2):  # the first one prepares the new database
        done = subprocess.run([sys.executable, "-c", READ_COMMAND, "findings", "list"], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["code"] in (0, None), done.stdout + done.stderr
    assert set(outcome["modules"]) & NOT_FOR_A_READ == set()
