"""A quiet engine does not stop time: a transfer left pending with no later traffic becomes `stuck` once the
threshold passes on the run's clock, through every entry point (issue 13).

Before, `stuck` was measured to the newest event's time: with the initiation itself the newest event, the
transfer was "pending for 0 min" however long ago it began, until an unrelated deposit arrived.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.builders import EventFactory, project
from typer.testing import CliRunner

from billing_cli.app import EXIT_FINDINGS, app
from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_domain.core.events import AccountCredited, AccountDebited, AccountOpened, TransactionInitiated
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource

STALE = "tx-stale"


@pytest.fixture
def quiet_log(event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    """tx-stale began and debited its source 8 minutes ago, the newest events of the log; nothing since."""
    event = EventFactory(datetime.now(UTC) - timedelta(minutes=10))
    events = [event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
              event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
              event("acc-a", 2, AccountCredited(5_000, None, "deposit"), 1),
              event(STALE, 1, TransactionInitiated("acc-a", "acc-b", 700, "EUR"), 2),
              event("acc-a", 3, AccountDebited(700, STALE, "transfer_out"), 2, STALE)]
    event_store.append(events)
    project(events, projection_store)


@pytest.fixture
def cli_env(servers: Any, topics: Topics, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", servers.bootstrap_servers)
    monkeypatch.setenv("BILLING_DATABASE_URL", database_url)
    monkeypatch.setenv("BILLING_TOPIC_PREFIX", topics.accounts.removesuffix("account-events"))
    monkeypatch.setenv("BILLING_STUCK_AFTER_MINUTES", "5")


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _stuck_ids(report_json: str) -> set[str]:
    return {f["entity_id"] for f in json.loads(report_json)["findings"] if f["kind"] == "stuck"}


@pytest.mark.usefixtures("quiet_log", "cli_env")
def test_the_cli_finds_the_stale_transfer_stuck_on_a_quiet_log() -> None:
    for command in (("reconcile", "transactions", "--full", "--json"), ("reconcile", "all", "--full", "--json")):
        result = _cli(*command)
        assert result.exit_code == EXIT_FINDINGS, result.output
        assert _stuck_ids(result.stdout) == {STALE}, command
    stuck = _cli("stuck", "--json")
    assert stuck.exit_code == EXIT_FINDINGS, stuck.output
    [finding] = json.loads(stuck.stdout)
    assert (finding["entity_id"], finding["kind"]) == (STALE, "stuck")
    assert finding["actual"]["pending_minutes"] >= 8.0  # measured to the run's clock, not to the newest event
    assert finding["actual"]["cut_time"] < finding["actual"]["judged_at"]


@pytest.mark.usefixtures("quiet_log", "cli_env")
def test_saga_recovery_plans_for_the_stale_transfer_only() -> None:
    plan = _cli("recover-sagas", "--reason", "quiet engine", "--actor", "ci", "--json")
    assert plan.exit_code in (0, EXIT_FINDINGS), plan.output
    actions = {a["transaction_id"]: a["action"] for a in json.loads(plan.stdout)["actions"]}
    assert set(actions) == {STALE}
    assert actions[STALE] == "compensate"  # the source was debited: refund it


@pytest.mark.usefixtures("quiet_log")
def test_the_dagster_check_fails_for_the_stale_transfer(servers: Any, topics: Topics, database_url: str) -> None:
    import dagster as dg

    resources = {"event_store": EventStoreResource(bootstrap_servers=servers.bootstrap_servers,
                                                   topic_prefix=topics.accounts.removesuffix("account-events"),
                                                   partitions=3),
                 "projections": ProjectionsResource(database_url=database_url),
                 "slack": SlackResource(ui_base_url="http://dagster.test")}
    job = build_defs(resources).resolve_job_def("daily_reconciliation")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["no_stuck_transfers"].passed
    stored = ReconStore(ProjectionsResource(database_url=database_url).projection_store().engine)
    assert {f.entity_id for f in stored.findings(result.run_id) if f.kind.value == "stuck"} == {STALE}
