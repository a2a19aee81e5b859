"""Op jobs for recovery and the finding lifecycle: `recover_stuck_sagas`, `acknowledge_findings`, `shadow_rebuild`.

Each op turns launchpad config into the arguments of one domain service (the CLI calls the same ones), turns
a `ConfigurationError` into a Dagster failure that says what to fix, and describes the result as metadata.
Like the rebuild jobs, they run in-process, so a killed run worker is a crash the daemon's run retries relaunch.
"""

from datetime import timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from billing_domain.config import Settings
from billing_domain.core.exceptions import ConcurrentOperationError, ConfigurationError
from billing_domain.core.operators import from_dagster_run
from billing_domain.services.lifecycle import Key, acknowledge, keys_of_finding_ids
from billing_domain.services.saga_recovery import RecoveryPlan, execute_plan, plan_recovery
from billing_domain.services.shadow_rebuild import diff_markdown, shadow_rebuild
from billing_pipelines.constants import OPERATION_TAG
from billing_pipelines.resources import EventStoreResource, ProjectionsResource

RECOVER_STUCK_SAGAS_JOB = "recover_stuck_sagas"
ACKNOWLEDGE_FINDINGS_JOB = "acknowledge_findings"
SHADOW_REBUILD_JOB = "shadow_rebuild"
MAX_TABLE_ROWS = 200


def _config_failure(exc: ConfigurationError) -> dg.Failure:
    return dg.Failure(description=f"Nothing was written. Fix the run config: {exc}", allow_retries=False)


def _refusal(exc: ConcurrentOperationError) -> dg.Failure:
    """Another rebuild or recovery holds the lock: a refusal (audited), not a crash."""
    return dg.Failure(description=f"Refused, nothing was written: {exc}", allow_retries=False)


# --- recover_stuck_sagas ----------------------------------------------------------------------------
class RecoverSagasConfig(dg.Config):
    reason: str = Field(description="Why you recover these sagas; goes to the audit trail. Required.")
    dry_run: bool = Field(default=True, description="Show the plan only; append nothing.")
    # None, not []: an empty list given on purpose is an error, never "every stuck saga".
    ids: list[str] | None = Field(default=None, description="Only these transactions (each must be stuck to be "
                                                            "touched). Leave it out (not []) for every stuck saga.")
    max: int | None = Field(default=None, description="Act on at most this many sagas (oldest first).")
    actor: str | None = Field(default=None, description="Who asks; defaults to the launching user or 'dagster'.")


@dg.op(name="recover_stuck_sagas_op", out=dg.Out(dg.Nothing),
       description="Fail, compensate or complete stuck transfer sagas from their events; re-reads before appending.")
def recover_stuck_sagas_op(context: dg.OpExecutionContext, config: RecoverSagasConfig,
                           event_store: EventStoreResource, projections: ProjectionsResource) -> dg.Output[None]:
    recon = projections.recon_store()
    operator = from_dagster_run(config.actor, dict(context.run.tags))  # who, and how Dagster knows it
    try:
        stuck_after = timedelta(minutes=Settings.from_env().stuck_after_minutes)
        plan = plan_recovery(event_store.get_store(), projections.projection_store(), recon, reason=config.reason,
                             operator=operator, ids=_chosen_ids(config.ids), max_sagas=config.max,
                             stuck_after=stuck_after,
                             run_id=context.run.run_id)
        appended, audit_id = 0, plan.audit_id
        if not config.dry_run:
            result = execute_plan(event_store.get_store(), projections.projection_store(), recon, plan,
                                  reason=config.reason, operator=operator)
            appended, audit_id = result.appended, result.audit_id
    except ConfigurationError as exc:
        raise _config_failure(exc) from exc
    except ConcurrentOperationError as exc:
        raise _refusal(exc) from exc
    context.log.info(f"saga recovery ({'dry run' if config.dry_run else 'executed'}): {plan.counts()}, "
                     f"{appended} event(s) appended, audit #{audit_id}")
    metadata: dict[str, Any] = {
        "dry_run": dg.MetadataValue.bool(config.dry_run),
        "appended": dg.MetadataValue.int(appended),
        "audit_id": dg.MetadataValue.int(audit_id or 0),
        "plan": dg.MetadataValue.md(plan_markdown(plan)),
    }
    metadata |= {f"action/{a}": dg.MetadataValue.int(n) for a, n in sorted(plan.counts().items())}
    return dg.Output(None, metadata=metadata)


def _chosen_ids(ids: list[str] | None) -> list[str]:
    if ids is None:
        return []  # no selection given: every stuck saga
    chosen = [i.strip() for i in ids if i.strip()]
    if not chosen:
        raise ConfigurationError("ids: the list is empty; name at least one transaction, or leave ids out for "
                                 "every stuck saga")
    return chosen


def plan_markdown(plan: RecoveryPlan) -> str:
    if not plan.actions:
        return "No stuck saga."
    rows = ["| transaction | action | events | why | outcome |", "| --- | --- | --- | --- | --- |"]
    for a in plan.actions[:MAX_TABLE_ROWS]:
        events = ", ".join(f"{e.event_type} {e.aggregate_id} v{e.aggregate_version}" for e in a.appends) or "-"
        rows.append(f"| `{a.transaction_id}` | {a.action} | {events} | {a.reason} | {a.outcome or '-'} |")
    return "\n".join(rows)


@dg.job(name=RECOVER_STUCK_SAGAS_JOB, executor_def=dg.in_process_executor, tags={OPERATION_TAG: "saga_recovery"},
        description="Resolve stuck transfers (dry run by default): fail, refund and compensate, or complete.")
def recover_stuck_sagas() -> None:
    recover_stuck_sagas_op()


# --- acknowledge_findings ---------------------------------------------------------------------------
class AcknowledgeConfig(dg.Config):
    note: str = Field(description="Why: kept with the finding. Required.")
    operator: str = Field(description="Who acknowledges. Required.")
    keys: list[str] = Field(default=[], description="Findings as 'entity_type/entity_id/kind'.")
    ids: list[int] = Field(default=[], description="Stored finding ids (billing_recon.finding.finding_id).")
    accept: bool = Field(default=False, description="Accept (known and tolerated: never alerted) instead of "
                                                    "acknowledge.")


def parse_keys(values: list[str]) -> list[Key]:
    keys = []
    for value in values:
        parts = value.split("/")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ConfigurationError(f"keys: {value!r} is not 'entity_type/entity_id/kind'")
        keys.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
    return keys


@dg.op(name="acknowledge_findings_op", out=dg.Out(dg.Nothing),
       description="Acknowledge or accept open findings, with a note and the operator's name.")
def acknowledge_findings_op(context: dg.OpExecutionContext, config: AcknowledgeConfig,
                            projections: ProjectionsResource) -> dg.Output[None]:
    recon = projections.recon_store()
    try:
        keys = parse_keys(config.keys) + (keys_of_finding_ids(recon, config.ids) if config.ids else [])
        rows = acknowledge(recon, sorted(set(keys)), note=config.note, operator=config.operator,
                           accept=config.accept)
    except ConfigurationError as exc:
        raise _config_failure(exc) from exc
    context.log.info(f"{len(rows)} finding(s) {'accepted' if config.accept else 'acknowledged'} by {config.operator}")
    table = ["| entity | id | kind | status | first seen |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {r.entity_type} | `{r.entity_id}` | {r.kind} | {r.status} | {r.first_seen_at:%Y-%m-%d} |"
              for r in rows]
    return dg.Output(None, metadata={"findings": dg.MetadataValue.int(len(rows)),
                                     "acknowledged": dg.MetadataValue.md("\n".join(table))})


@dg.job(name=ACKNOWLEDGE_FINDINGS_JOB, executor_def=dg.in_process_executor, tags={OPERATION_TAG: "acknowledge"},
        description="Acknowledge (or accept) findings with a note; accepted findings are no longer alerted.")
def acknowledge_findings() -> None:
    acknowledge_findings_op()


# --- shadow_rebuild ---------------------------------------------------------------------------------
class ShadowRebuildConfig(dg.Config):
    reason: str = Field(description="Why you rebuild; goes to the audit trail. Required.")
    approve: bool = Field(default=False, description="False: build the shadow and show the diff. True: also swap.")
    delete_orphans: bool = Field(default=False, description="Delete live rows that have no events.")
    actor: str | None = Field(default=None, description="Who asks; defaults to the launching user or 'dagster'.")


@dg.op(name="shadow_rebuild_op", out=dg.Out(dg.Nothing),
       description="Rebuild every projection into shadow tables, diff, and swap on approval (version-guarded).")
def shadow_rebuild_op(context: dg.OpExecutionContext, config: ShadowRebuildConfig, event_store: EventStoreResource,
                      projections: ProjectionsResource) -> dg.Output[None]:
    try:
        result = shadow_rebuild(event_store.get_store(), projections.projection_store(), projections.recon_store(),
                                reason=config.reason, operator=from_dagster_run(config.actor, dict(context.run.tags)),
                                approve=config.approve,
                                delete_orphans=config.delete_orphans, run_id=context.run.run_id)
    except ConfigurationError as exc:
        raise _config_failure(exc) from exc
    except ConcurrentOperationError as exc:
        raise _refusal(exc) from exc
    context.log.info(f"shadow rebuild ({'swapped' if result.approved else 'diff only'}): {result.counts}, "
                     f"audit #{result.audit_id}")
    metadata: dict[str, Any] = {
        "approved": dg.MetadataValue.bool(result.approved),
        "audit_id": dg.MetadataValue.int(result.audit_id or 0),
        "diff": dg.MetadataValue.md(diff_markdown(result)),
        "refused": dg.MetadataValue.int(sum(len(r) for r in result.refused.values())),
        "still_to_repair": dg.MetadataValue.int(len(result.remaining)),
    }
    metadata |= {f"{t}/{a}": dg.MetadataValue.int(n) for t, counts in result.counts.items() for a, n in counts.items()}
    metadata |= {f"written/{t}": dg.MetadataValue.int(n) for t, n in result.written.items()}
    metadata |= {f"kept_newer_live/{t}": dg.MetadataValue.int(n) for t, n in result.kept_newer_live.items()}
    return dg.Output(None, metadata=metadata)


@dg.job(name=SHADOW_REBUILD_JOB, executor_def=dg.in_process_executor, tags={OPERATION_TAG: "rebuild"},
        description="Rebuild all projections into shadow tables and show the diff; swap only with approve=true.")
def shadow_rebuild_job() -> None:
    shadow_rebuild_op()


RECOVERY_JOBS = [recover_stuck_sagas, acknowledge_findings, shadow_rebuild_job]
