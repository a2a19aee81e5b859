"""The daily reconciliation schedule: cron and timezone from the environment, one run per day."""


import os

import dagster as dg

from billing_pipelines.constants import (
    DAILY_RECONCILIATION_JOB,
    DEFAULT_RECON_CRON,
    DEFAULT_RECON_TIMEZONE,
    ENV_RECON_CRON,
    ENV_RECON_TIMEZONE,
)


def scheduled_run_key(context: dg.ScheduleEvaluationContext) -> str:
    """The scheduled date in the schedule's timezone: the same day never runs twice."""
    when = context.scheduled_execution_time
    if when is None:
        raise dg.DagsterInvariantViolationError("the schedule was evaluated without a scheduled time")
    return when.date().isoformat()


def build_daily_reconciliation_schedule() -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{DAILY_RECONCILIATION_JOB}_schedule",
        job_name=DAILY_RECONCILIATION_JOB,
        cron_schedule=os.environ.get(ENV_RECON_CRON) or DEFAULT_RECON_CRON,
        execution_timezone=os.environ.get(ENV_RECON_TIMEZONE) or DEFAULT_RECON_TIMEZONE,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reconcile everything once a day (BILLING_RECON_CRON, BILLING_RECON_TIMEZONE).",
    )
    def daily_reconciliation_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        key = scheduled_run_key(context)
        return dg.RunRequest(run_key=key, tags={"billing/scheduled_date": key})

    return daily_reconciliation_schedule


daily_reconciliation_schedule = build_daily_reconciliation_schedule()
