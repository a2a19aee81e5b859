"""The billing-recon commands end to end on the real embedded servers (issue: the admin endpoints as commands)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from billing_cli.app import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS, app
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_sandbox.simulate import Manifest

REBUILD_MAY_NOT_FIX = {"stream_corrupt", "invariant_violation", "orphan_projection", "stuck", "saga_mismatch",
                       "accounting_equation"}


@pytest.fixture
def cli_env(servers: Any, topics: Topics, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
           "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def broker_cli_env(broker_bootstrap: str, topics: Topics, database_url: str,
                   monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI's environment on this run's broker: the end-to-end scenario below runs on Tansu and Apache Kafka."""
    env = {"BILLING_KAFKA_BOOTSTRAP_SERVERS": broker_bootstrap, "BILLING_DATABASE_URL": database_url,
           "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _keys(output: str) -> set[tuple[str, str, str]]:
    report = json.loads(output)
    return {(f["entity_type"], f["entity_id"], f["kind"]) for f in report["findings"]}


def test_reconcile_prints_every_injected_fault_and_rebuild_repairs_what_may_be_repaired(
        broker_cli_env: dict[str, str], tmp_path: Path) -> None:
    manifest_path = tmp_path / "manifest.json"
    simulated = run("simulate", "--accounts", "80", "--days", "2", "--manifest", str(manifest_path))
    assert simulated.exit_code == 0, simulated.output
    manifest = Manifest.read(manifest_path)

    before = run("reconcile", "all", "--json")
    assert before.exit_code == EXIT_FINDINGS
    assert _keys(before.stdout) == manifest.expected_findings()
    run_id = json.loads(before.stdout)["run_id"]

    table = run("reconcile", "accounts")
    assert table.exit_code == EXIT_FINDINGS and "balance_mismatch" in table.stdout

    for entity_type in ("account", "transaction"):
        repaired = run("rebuild", f"{entity_type}s", "--from-report", run_id, "--reason", "test repair",
                       "--actor", "ci")
        # Exit 1 exactly when the report flagged an entity of this type a rebuild must refuse or cannot fix.
        unfixable = any(t == entity_type and k in REBUILD_MAY_NOT_FIX for t, _, k in manifest.expected_findings())
        assert repaired.exit_code == (EXIT_FINDINGS if unfixable else EXIT_CLEAN), repaired.output

    exported = run("export-findings", "--run", run_id)
    assert exported.exit_code == 0 and exported.stdout.count("\n") == len(manifest.expected_findings()) + 1

    after = run("reconcile", "all", "--json", "--full")
    remaining = _keys(after.stdout)
    expected = manifest.expected_findings()
    assert {kind for _, _, kind in remaining} <= REBUILD_MAY_NOT_FIX
    # Entities keep exactly what a rebuild must not fix; ledger identities broken only by fixed rows recover.
    assert {k for k in remaining if k[0] != "ledger"} == {k for k in expected if k[2] in REBUILD_MAY_NOT_FIX
                                                          and k[0] != "ledger"}
    assert {k for k in remaining if k[0] == "ledger"} <= {k for k in expected if k[0] == "ledger"}


def test_single_entity_commands_stuck_and_equation(cli_env: dict[str, str], tmp_path: Path,
                                                   projection_store: ProjectionStore) -> None:
    assert run("simulate", "--no-faults", "--accounts", "30", "--manifest", str(tmp_path / "m.json")).exit_code == 0
    assert run("reconcile", "all").exit_code == EXIT_CLEAN
    unknown = run("reconcile", "account", "no-such-account", "--json")
    assert unknown.exit_code == EXIT_ERROR and "no-such-account" in unknown.output
    account_id = next(iter(projection_store.read_accounts()))
    transaction_id = next(iter(projection_store.read_transactions()))
    assert run("reconcile", "account", account_id).exit_code == EXIT_CLEAN
    assert run("reconcile", "transaction", transaction_id).exit_code == EXIT_CLEAN
    equation = run("accounting-equation", "--json")
    assert equation.exit_code == EXIT_CLEAN
    assert all(identity["holds"] for identity in json.loads(equation.stdout))
    assert run("stuck", "--minutes", "5").exit_code == EXIT_CLEAN


def _written(projections: ProjectionStore) -> tuple[Any, ...]:
    """Everything a rebuild could write: both projections and the audit trail."""
    return (sorted(projections.read_accounts().items()), sorted(projections.read_transactions().items()),
            ReconStore(projections.engine).audit_records())


def test_bad_input_names_the_field_and_writes_nothing(cli_env: dict[str, str], tmp_path: Path,
                                                      projection_store: ProjectionStore) -> None:
    # Faults and a report first: a request that slipped through would have rows to write.
    assert run("simulate", "--accounts", "20", "--days", "1", "--manifest", str(tmp_path / "m.json")).exit_code == 0
    assert run("reconcile", "all").exit_code == EXIT_FINDINGS
    before = _written(projection_store)
    for args, says in ((("accounts", "--all", "--reason", " "), "reason"),
                       (("accounts", "--all", "--ids", "a", "--reason", "x"), "ids / all"),
                       (("account", "no-such-account", "--reason", "x"), "no-such-account"),
                       (("accounts", "--ids", "", "--reason", "x"), "--ids"),
                       (("transactions", "--ids", " , ", "--reason", "x"), "--ids")):
        refused = run("rebuild", *args)
        assert refused.exit_code == EXIT_ERROR and says in refused.output, (args, refused.output)
    assert _written(projection_store) == before
