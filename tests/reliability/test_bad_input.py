"""Fault 10: bad run config and bad command-line input. The error names the field; nothing is written
(CLI exit code 2; the Dagster run fails before any write). Each input counts as tried when sent and as
refused only once every assertion about its refusal held (`figures.refusal()`)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from reliability_helpers import Damaged, damaged_history, dump_projections
from support.figures import TestFigures
from typer.testing import CliRunner

from billing_cli.app import app
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource

CLI_CASES = [
    (["rebuild", "accounts", "--all", "--reason", ""], "reason"),
    (["rebuild", "accounts", "--all", "--reason", "   "], "reason"),
    (["rebuild", "accounts", "--all"], "--reason"),
    (["rebuild", "accounts", "--all", "--ids", "acc-x", "--reason", "fix"], "ids / all"),
    (["rebuild", "accounts", "--ids", "no-such-account", "--reason", "fix"], "no-such-account"),
    (["rebuild", "accounts", "--ids", " , ", "--from-report", "r", "--reason", "fix"], "--ids"),  # empty: refused
    (["rebuild", "accounts", "--from-report", "no-such-run", "--reason", "fix"], "no-such-run"),
    (["rebuild", "transactions", "--all", "--reason", "fix", "--actor", " "], "actor"),
    (["rebuild", "account", "--reason", "fix"], "entity_id"),
    (["reconcile", "transactions", "--stuck-minutes", "soon"], "--stuck-minutes"),
    (["rebuild", "accounts", "--all", "--reason", "fix", "--dry-run=maybe"], "--dry-run"),
    (["rebuild", "ledgers", "--all", "--reason", "fix"], "ledgers"),
]


@pytest.fixture(scope="module")
def damaged(servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Damaged:
    from reliability_helpers import create_database
    url = create_database(servers.database_url)
    return damaged_history(servers.bootstrap_servers, url, seed=71, accounts=30)


def _env(damaged: Damaged) -> dict[str, str]:
    return {"BILLING_KAFKA_BOOTSTRAP_SERVERS": damaged.event_store.bootstrap_servers,
            "BILLING_DATABASE_URL": damaged.database_url, "BILLING_TOPIC_PARTITIONS": "3",
            "BILLING_TOPIC_PREFIX": damaged.event_store.topics.accounts.removesuffix("account-events")}


def _writes(damaged: Damaged) -> tuple[Any, ...]:
    applied = [r for r in damaged.recon.audit_records() if not r["dry_run"] and r["outcome"] in ("applied", "partial")]
    return (*dump_projections(damaged.engine), len(applied))


@pytest.mark.parametrize(("args", "field"), CLI_CASES, ids=[" ".join(a)[:40] for a, _ in CLI_CASES])
def test_bad_command_line_input_names_the_field_and_writes_nothing(damaged: Damaged, args: list[str], field: str,
                                                                   figures: TestFigures) -> None:
    before = _writes(damaged)
    with figures.refusal():
        result = CliRunner().invoke(app, args, env=_env(damaged))
        assert result.exit_code == 2, result.output
        assert field in result.output + (result.stderr or ""), result.output
        assert _writes(damaged) == before


def _job(damaged: Damaged) -> tuple[dg.JobDefinition, dg.DagsterInstance]:
    resources = {
        "event_store": EventStoreResource(bootstrap_servers=damaged.event_store.bootstrap_servers, partitions=3,
                                          topic_prefix=damaged.event_store.topics.accounts.removesuffix("account-events")),
        "projections": ProjectionsResource(database_url=damaged.database_url), "slack": SlackResource()}
    return build_defs(resources).resolve_job_def("rebuild_accounts"), dg.DagsterInstance.ephemeral()


SCHEMA_CASES = [({"reason": "fix", "all": "yes"}, "all"), ({"reason": "fix", "idz": ["a"]}, "idz"),
                ({"all": True}, "reason"), ({"reason": "fix", "ids": "acc-1"}, "ids")]
RUNTIME_CASES = [({"reason": "", "all": True, "dry_run": False}, "reason"),
                 ({"reason": "fix", "all": True, "ids": ["x"], "dry_run": False}, "ids / all"),
                 ({"reason": "fix", "ids": ["nope"], "dry_run": False}, "nope"),
                 ({"reason": "fix", "all": True, "dry_run": False, "actor": "  "}, "actor"),
                 ({"reason": "fix", "from_run": "no-such-run", "dry_run": False}, "no-such-run")]


@pytest.mark.parametrize(("config", "field"), SCHEMA_CASES)
def test_run_config_of_the_wrong_shape_is_refused_before_the_run(damaged: Damaged, config: dict[str, Any],
                                                                 field: str, figures: TestFigures) -> None:
    job, instance = _job(damaged)
    before = _writes(damaged)
    with figures.refusal():
        with pytest.raises(dg.DagsterInvalidConfigError, match=field):
            job.execute_in_process(instance=instance, run_config={
                "ops": {"rebuild_account_projections": {"config": config}}})
        assert _writes(damaged) == before


@pytest.mark.parametrize(("config", "field"), RUNTIME_CASES)
def test_run_config_that_cannot_be_right_fails_the_run_before_any_write(damaged: Damaged, config: dict[str, Any],
                                                                        field: str, figures: TestFigures) -> None:
    job, instance = _job(damaged)
    before = _writes(damaged)
    with figures.refusal():
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config={
            "ops": {"rebuild_account_projections": {"config": config}}})
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        message = failure.step_failure_data.error.message if failure else ""  # type: ignore[union-attr]
        assert not result.success and field in message and "Nothing was written" in message
        assert _writes(damaged) == before


@pytest.mark.parametrize("variable", ["BILLING_TOPIC_PARTITIONS", "BILLING_STUCK_AFTER_MINUTES"])
def test_a_non_numeric_setting_names_the_variable(damaged: Damaged, variable: str, figures: TestFigures) -> None:
    with figures.refusal():
        result = CliRunner().invoke(app, ["reconcile", "all"], env={**_env(damaged), variable: "four"})
        assert result.exit_code == 2 and variable in result.output
