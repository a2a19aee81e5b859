"""Sensors: Slack on any failed run, Slack on a daily run's findings, and the (off by default) auto-repair."""


from collections.abc import Sequence

import dagster as dg

from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Settings
from billing_domain.core.findings import REBUILDABLE_KINDS, Finding, Kind
from billing_domain.services.alerts import (
    Alert,
    auto_repair_refused_alert,
    findings_alert,
    lifecycle_alert,
    run_failure_alert,
)
from billing_domain.services.lifecycle import run_lifecycle
from billing_pipelines.alerting import post_alert
from billing_pipelines.assets import REPLAYED_STATE, event_log_warnings
from billing_pipelines.constants import (
    DAILY_RECONCILIATION_JOB,
    REBUILD_ACCOUNTS_JOB,
    REBUILD_TRANSACTIONS_JOB,
)
from billing_pipelines.jobs import daily_reconciliation, rebuild_accounts, rebuild_transactions
from billing_pipelines.resources import ProjectionsResource, SlackResource

REBUILD_JOB_OF = {"account": REBUILD_ACCOUNTS_JOB, "transaction": REBUILD_TRANSACTIONS_JOB}
# Auto-repair rebuilds corruption, not mere lag: the live projector catches up on its own.
AUTO_REPAIR_KINDS = REBUILDABLE_KINDS - {Kind.LAGGING}


def previous_run_id(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The successful daily_reconciliation run launched just before `run_id`, if any."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=DAILY_RECONCILIATION_JOB,
                                                   statuses=[dg.DagsterRunStatus.SUCCESS]), limit=50)
    ids = [r.run_id for r in runs]  # newest first
    if run_id in ids:
        older = ids[ids.index(run_id) + 1:]
        return older[0] if older else None
    return ids[0] if ids else None


def failed_error_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Names of the ERROR-severity checks that failed in the run (so a failed critical check alerts)."""
    failed = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            failed.append(evaluation.check_name)
    return sorted(failed)


def run_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The report-level warnings of the run (an event topic that can lose events), from its replayed state's
    materialization."""
    found: list[str] = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        event = entry.dagster_event
        if event is not None and event.asset_key == REPLAYED_STATE:
            found += event_log_warnings(dict(event.step_materialization_data.materialization.metadata))
    return list(dict.fromkeys(found))


def findings_alert_for_run(instance: dg.DagsterInstance, recon_store: ReconStore, run_id: str,
                           ui_base_url: str) -> Alert | None:
    """By the finding lifecycle when the run was applied to it; else new vs still open against the previous run."""
    lifecycle = run_lifecycle(recon_store, run_id)
    warnings = run_warnings(instance, run_id)
    if lifecycle is not None:
        return lifecycle_alert(run_id, recon_store.findings(run_id), lifecycle.statuses, lifecycle.severities,
                               ui_base_url, failed_checks=failed_error_checks(instance, run_id), warnings=warnings)
    previous = previous_run_id(instance, run_id)
    return findings_alert(run_id, recon_store.findings(run_id),
                          recon_store.findings(previous) if previous else [], ui_base_url,
                          failed_checks=failed_error_checks(instance, run_id), warnings=warnings)


@dg.run_status_sensor(
    name="reconciliation_findings_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_reconciliation],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful daily_reconciliation: one Slack message if it found warnings or "
                "critical findings not accepted: new and escalated ones named, the rest (still open, "
                "acknowledged, accepted, resolved) counted.",
)
def reconciliation_findings_sensor(context: dg.RunStatusSensorContext, projections: ProjectionsResource,
                                   slack: SlackResource) -> dg.SkipReason | None:
    run_id = context.dagster_run.run_id
    alert = findings_alert_for_run(context.instance, projections.recon_store(), run_id, slack.ui_url())
    if alert is None:
        return dg.SkipReason(f"run {run_id}: no warning or critical finding")
    post_alert(context.log, slack, alert, f"run {run_id}: findings alert")
    return None


@dg.run_failure_sensor(
    name="run_failure_slack_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Any failed run of this code location: a Slack message with the error and a link.",
)
def run_failure_slack_sensor(context: dg.RunFailureSensorContext, slack: SlackResource) -> None:
    run = context.dagster_run
    alert = run_failure_alert(run.job_name, run.run_id, failure_cause(context), slack.ui_url())
    post_alert(context.log, slack, alert, f"run {run.run_id} of {run.job_name}: failure alert")


# Dagster's own wrappers around the error an op raised; the on-call engineer needs what is inside.
_WRAPPER_ERRORS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError")
MAX_FAILED_STEPS_SHOWN = 3


def failure_cause(context: dg.RunFailureSensorContext) -> str | None:
    """Why the run failed, for a person: each failed step and its error, else what ended the run worker.

    Dagster's run-failure message only says that steps failed ("Execution of run ... failed. Steps failed:").
    """
    steps = [_step_cause(e) for e in context.get_step_failure_events()[:MAX_FAILED_STEPS_SHOWN]]
    if steps:
        return "; ".join(steps)
    message = context.failure_event.message if context.failure_event else None
    # A crashed run worker is marked failed from outside; the code server's engine event says how it ended.
    crash = [e.message for e in context.instance.all_logs(context.dagster_run.run_id,
                                                          of_type=dg.DagsterEventType.ENGINE_EVENT)
             if e.message and "Run execution process" in e.message]
    return crash[-1] if crash else message


def _step_cause(event: dg.DagsterEvent) -> str:
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return f"step {event.step_key}: {data.user_failure_data.description}"
    error = data.error
    while error is not None and error.cls_name in _WRAPPER_ERRORS and error.cause is not None:
        error = error.cause
    detail = f"{error.cls_name}: {error.message.strip()}" if error is not None else "no error recorded"
    return f"step {event.step_key}: {detail}"


def auto_repair_max() -> int:
    return Settings.from_env().auto_repair_max  # validated there, with every other setting


def repair_targets(findings: Sequence[Finding]) -> dict[str, list[str]]:
    """Per entity type, the ids a rebuild can put right (sorted, unique)."""
    targets: dict[str, set[str]] = {}
    for f in findings:
        if f.kind in AUTO_REPAIR_KINDS and f.entity_type in REBUILD_JOB_OF:
            targets.setdefault(f.entity_type, set()).add(f.entity_id)
    return {t: sorted(ids) for t, ids in sorted(targets.items())}


def repair_requests(run_id: str, targets: dict[str, list[str]]) -> list[dg.RunRequest]:
    return [dg.RunRequest(
        run_key=f"auto-repair:{run_id}:{entity_type}", job_name=REBUILD_JOB_OF[entity_type],
        run_config={"ops": {f"rebuild_{entity_type}_projections": {"config": {
            "ids": ids, "dry_run": False, "actor": "auto_repair_sensor",
            "reason": f"auto-repair of what reconciliation run {run_id} flagged"}}}},
        tags={"billing/repair_of": run_id}) for entity_type, ids in targets.items()]


@dg.run_status_sensor(
    name="auto_repair_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_reconciliation],
    request_jobs=[rebuild_accounts, rebuild_transactions],
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Off by default. After a daily run, rebuild what it flagged (dry_run false), unless more than "
                "BILLING_AUTO_REPAIR_MAX entities are flagged: then alert and do nothing.",
)
def auto_repair_sensor(context: dg.RunStatusSensorContext, projections: ProjectionsResource,
                       slack: SlackResource) -> list[dg.RunRequest] | dg.SkipReason:
    run_id = context.dagster_run.run_id
    targets = repair_targets(projections.recon_store().findings(run_id))
    counts = {t: len(ids) for t, ids in targets.items()}
    cap = auto_repair_max()
    if not targets:
        return dg.SkipReason(f"run {run_id}: nothing a rebuild can repair")
    if sum(counts.values()) > cap:
        alert = auto_repair_refused_alert(run_id, counts, cap, slack.ui_url())
        post_alert(context.log, slack, alert, f"run {run_id}: auto-repair skipped alert")
        return dg.SkipReason(f"run {run_id}: {sum(counts.values())} entities exceed the cap of {cap}; alerted")
    return repair_requests(run_id, targets)
