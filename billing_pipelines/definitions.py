"""The one `Definitions` of the project (workspace.yaml points here)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from billing_pipelines.assets import reconciliation
from billing_pipelines.checks import reconciliation_checks
from billing_pipelines.jobs import daily_reconciliation, rebuild_accounts, rebuild_transactions
from billing_pipelines.month_end import month_end_balances, month_end_balances_job, month_end_balances_schedule
from billing_pipelines.partitioned import partitioned_reconciliation
from billing_pipelines.projector_lag import projector_lag, projector_lag_sensor
from billing_pipelines.recovery_jobs import RECOVERY_JOBS
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource
from billing_pipelines.schedules import daily_reconciliation_schedule
from billing_pipelines.sensors import auto_repair_sensor, reconciliation_findings_sensor, run_failure_slack_sensor


def _env(name: str) -> dg.EnvVar | None:
    """`dg.EnvVar(name)` when the variable is set (resolved at launch, hidden in the UI), else None:
    an unset optional variable must not fail the load; the resource then falls back to the defaults."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "event_store": EventStoreResource(bootstrap_servers=_env("BILLING_KAFKA_BOOTSTRAP_SERVERS"),
                                          topic_prefix=_env("BILLING_TOPIC_PREFIX")),
        "projections": ProjectionsResource(database_url=_env("BILLING_DATABASE_URL"),
                                           recon_database_url=_env("BILLING_RECON_DATABASE_URL")),
        "slack": SlackResource(bot_token=_env("BILLING_SLACK_BOT_TOKEN"), channel=_env("BILLING_SLACK_CHANNEL"),
                               api_url=_env("BILLING_SLACK_API_URL"), ui_base_url=_env("BILLING_DAGSTER_UI_URL")),
    }


def build_defs(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The definitions with the environment's resources, or with `resources` (tests, the demo)."""
    return dg.Definitions(
        assets=[reconciliation, month_end_balances, projector_lag],
        asset_checks=reconciliation_checks,
        jobs=[daily_reconciliation, rebuild_accounts, rebuild_transactions, partitioned_reconciliation,
              month_end_balances_job, *RECOVERY_JOBS],
        schedules=[daily_reconciliation_schedule, month_end_balances_schedule],
        sensors=[run_failure_slack_sensor, reconciliation_findings_sensor, auto_repair_sensor,
                 projector_lag_sensor],
        resources=dict(resources) if resources is not None else default_resources(),
    )


defs = build_defs()
