"""`billing-recon --help` starts without the drivers (issue 18.10): the command modules import the adapters,
the services and SQLAlchemy, confluent-kafka, Dagster or pandas only inside the command that runs. Checked by
what a fresh process has imported, never by a time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "confluent_kafka", "dagster", "pandas", "psycopg", "alembic", "slack_sdk")
OURS_NOT_NEEDED = ("billing_domain.bootstrap", "billing_domain.adapters", "billing_domain.services", "billing_sandbox",
                   "billing_pipelines", "billing_api")
PROBE = """
import json, sys
from billing_cli.app import app
try:
    app(sys.argv[1:], prog_name="billing-recon")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _imported_by(*args: str) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], result["modules"]


@pytest.mark.parametrize("args", [
    ("--help",), ("reconcile", "all", "--help"), ("findings", "list", "--help"), ("rebuild", "accounts", "--help"),
    ("stack", "status", "--help"), ("as-of", "--help"), ("roles", "create", "--help"), ("projector-lag", "--help"),
    ("recover-sagas", "--help"), ("simulate", "--help"),
])
def test_help_imports_no_driver_and_no_adapter(args: tuple[str, ...]) -> None:
    code, modules = _imported_by(*args)
    assert code == 0
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    ours = sorted(m for m in modules if m.startswith(OURS_NOT_NEEDED))
    assert (heavy, ours) == ([], []), (args, heavy, ours)


def test_the_names_the_cli_spells_out_for_its_help_are_the_adapters_and_services_own() -> None:
    from billing_cli import projector_lag, security
    from billing_domain.adapters.postgres import security as role_adapter
    from billing_domain.services import projector_lag as lag_service

    assert (security.DEFAULT_RECON_ROLE, security.DEFAULT_REBUILD_ROLE) == (
        role_adapter.DEFAULT_RECON_ROLE, role_adapter.DEFAULT_REBUILD_ROLE)
    assert projector_lag.ENV_PROJECTOR_GROUP == lag_service.ENV_PROJECTOR_GROUP


def test_counts_read_as_words_not_as_a_dict() -> None:
    from billing_cli.support import counts_text

    assert counts_text({"compensate": 2, "fail": 0, "already_resolved": 1}) == "2 compensate, 1 already resolved"
    assert counts_text({"new": 0}, empty="no finding") == "no finding"
    assert counts_text({"new": 12_345}) == "12,345 new"
