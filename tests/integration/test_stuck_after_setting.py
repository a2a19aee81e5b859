"""BILLING_STUCK_AFTER_MINUTES is the stuck threshold of every CLI command that judges `stuck`, unless the
command's own option says otherwise (issue 15: `reconcile transactions` once kept its own default of 5).

One transfer has been pending for 8 minutes: stuck under a threshold of 7 (or the default, 5), not under 10.
Run through the CLI against the real embedded servers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.builders import EventFactory, project
from typer.testing import CliRunner

from billing_cli.app import EXIT_CLEAN, EXIT_FINDINGS, app
from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.config import DEFAULT_STUCK_AFTER_MINUTES, Topics
from billing_domain.core.events import AccountCredited, AccountDebited, AccountOpened, TransactionInitiated

PENDING = "tx-pending"


@pytest.fixture(autouse=True)
def pending_for_eight_minutes(event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    event = EventFactory(datetime.now(UTC) - timedelta(minutes=10))
    events = [event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
              event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
              event("acc-a", 2, AccountCredited(5_000, None, "deposit"), 1),
              event(PENDING, 1, TransactionInitiated("acc-a", "acc-b", 700, "EUR"), 2),
              event("acc-a", 3, AccountDebited(700, PENDING, "transfer_out"), 2, PENDING)]
    event_store.append(events)
    project(events, projection_store)


@pytest.fixture(autouse=True)
def servers_env(servers: Any, topics: Topics, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", servers.bootstrap_servers)
    monkeypatch.setenv("BILLING_DATABASE_URL", database_url)
    monkeypatch.setenv("BILLING_TOPIC_PREFIX", topics.accounts.removesuffix("account-events"))
    monkeypatch.delenv("BILLING_STUCK_AFTER_MINUTES", raising=False)


def _thresholds(*args: str) -> dict[str, float]:
    """The stuck findings a command prints: transaction id → the threshold it was judged by, in minutes."""
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    output = json.loads(result.stdout)
    findings = output if isinstance(output, list) else output["findings"]
    stuck = {f["entity_id"]: f["expected"]["within_minutes"] for f in findings if f["kind"] == "stuck"}
    assert result.exit_code == (EXIT_FINDINGS if stuck else EXIT_CLEAN), result.output
    return stuck


def _planned(*args: str) -> set[str]:
    result = CliRunner().invoke(app, ["recover-sagas", "--reason", "stuck threshold", "--actor", "ci", "--json",
                                      *args], catch_exceptions=False)
    assert result.exit_code == EXIT_CLEAN, result.output
    return {a["transaction_id"] for a in json.loads(result.stdout)["actions"]}


REPORTS = [("reconcile", "transactions", "--full", "--json"), ("reconcile", "all", "--full", "--json"),
           ("stuck", "--json")]
THRESHOLD_OPTION: dict[tuple[str, ...], str] = {("reconcile", "transactions"): "--stuck-minutes",
                                               ("stuck", "--json"): "--minutes"}


@pytest.mark.parametrize("command", REPORTS, ids=" ".join)
def test_the_setting_is_the_threshold(command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_STUCK_AFTER_MINUTES", "10")
    assert _thresholds(*command) == {}
    monkeypatch.setenv("BILLING_STUCK_AFTER_MINUTES", "7")
    assert _thresholds(*command) == {PENDING: 7.0}


@pytest.mark.parametrize("command", REPORTS, ids=" ".join)
def test_without_the_setting_the_default_and_an_option_beats_the_setting(
        command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _thresholds(*command) == {PENDING: DEFAULT_STUCK_AFTER_MINUTES}
    option = THRESHOLD_OPTION.get(command[:2])
    if option is not None:  # `reconcile all` has no threshold option: the setting alone decides
        monkeypatch.setenv("BILLING_STUCK_AFTER_MINUTES", "10")
        assert _thresholds(*command, option, "6") == {PENDING: 6.0}


def test_saga_recovery_plans_by_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_STUCK_AFTER_MINUTES", "10")
    assert _planned() == set()
    assert _planned("--stuck-minutes", "7") == {PENDING}
    monkeypatch.setenv("BILLING_STUCK_AFTER_MINUTES", "7")
    assert _planned() == {PENDING}
