"""Reconcile and record: the one use case behind every entry point that stores a report.

The CLI, the admin API, the daily Dagster run and the partitioned job all call `run_reconciliation`;
none of them saves a report, updates the finding lifecycle or writes a checkpoint itself. The steps:

1. replay one cut of the log and read the projections (or take a replay the caller already folded:
   the partitioned job folds its partition groups in parallel steps), or reconcile one entity (an id
   with neither events nor a row is refused with `UnknownEntityError`, and nothing is stored);
2. build the report, with a warning in its stats if a topic's configuration can lose events;
3. record it, in this order:
   - the report (its findings under the run id), which every reader shows;
   - the finding lifecycle (new, open, resolved...), which refers to the stored run and ignores partial
     scopes;
   - the checkpoint with its delta memo, last: the memo names this run's report as the one the next run
     carries findings over from, so it must never exist without that report. A run that fails before
     this step leaves the previous checkpoint, and the next run only re-reads more.

Each record step commits on its own, and each is safe to repeat: a report is stored under its run id,
the lifecycle skips a run it has applied, and a checkpoint older than the stored one is not saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing_domain.core.exceptions import UnknownEntityError
from billing_domain.core.findings import ReconciliationReport
from billing_domain.ports import CheckpointStore, EventLog, ProjectionStore, ReportsWithLifecycle
from billing_domain.services.lifecycle import LifecycleUpdate, on_full_reconciliation
from billing_domain.services.reconcile import (
    ALL_ENTITY_TYPES,
    ProgressCallback,
    ReconcileOptions,
    ReplayOutcome,
    build_report,
    replay_all,
    save_checkpoint,
    utc_now,
)
from billing_domain.services.single import reconcile_entity
from billing_domain.services.topic_safety import judge_topics


@dataclass(frozen=True, slots=True)
class RunStores:
    """The ports one reconciliation reads and writes."""

    event_log: EventLog
    projections: ProjectionStore
    reports: ReportsWithLifecycle  # the reports and the finding lifecycle they feed
    checkpoints: CheckpointStore


@dataclass(frozen=True, slots=True)
class ReconciliationRequest:
    """What to reconcile and how to record it."""

    run_id: str
    source: str  # who ran it, stored with the report: cli, api, dagster, bench
    scope: str = "all"  # all, accounts, transactions, ledger, or <entity type>:<id> for one entity
    entity_types: tuple[str, ...] = ALL_ENTITY_TYPES
    entity: tuple[str, str] | None = None  # (entity type, id): reconcile just this one
    full: bool = False  # replay the whole log, not from the checkpoint
    delta: bool = False  # diff only what changed since the checkpointed run, when that can be done
    record: bool = True  # False: a read-only query (nothing stored, not even the checkpoint)
    checkpoint: bool = True  # False: record the report and lifecycle only (see the partitioned job)


@dataclass(frozen=True, slots=True)
class ReconciliationRun:
    report: ReconciliationReport
    outcome: ReplayOutcome | None  # None for one entity (its replay is not the whole log's)
    lifecycle: LifecycleUpdate | None  # None when not recorded or for a partial scope


def run_reconciliation(stores: RunStores, request: ReconciliationRequest, options: ReconcileOptions, *,
                       progress: ProgressCallback | None = None, replayed: ReplayOutcome | None = None,
                       started_at: datetime | None = None) -> ReconciliationRun:
    """Replay (unless `replayed` is given), report, then record in the module's order."""
    started_at = started_at or utc_now()
    if request.entity is not None:
        report = reconcile_entity(stores.event_log, stores.projections, *request.entity, run_id=request.run_id,
                                  options=options, checkpoints=stores.checkpoints)
        if not is_known(report, request.entity[0]):
            raise UnknownEntityError(*request.entity)  # before recording: an unknown id stores nothing
        outcome = None
    else:
        outcome = replayed or replay_all(stores.event_log, stores.projections, options=options, progress=progress,
                                         checkpoints=stores.checkpoints, full=request.full, delta=request.delta,
                                         reports=stores.reports)
        report = build_report(outcome, run_id=request.run_id, scope=request.scope, started_at=started_at,
                              options=options, entity_types=request.entity_types)
    judge_topics(stores.event_log, report.stats)  # a topic that can drop events makes the replay a guess: say so
    lifecycle = _record(stores, report, outcome if request.checkpoint else None, request.source) \
        if request.record else None
    return ReconciliationRun(report, outcome, lifecycle)


def is_known(report: ReconciliationReport, entity_type: str) -> bool:
    """Did one entity's events or projection row show up (or a corrupt stream under its id)?"""
    folded = report.stats.get("accounts" if entity_type == "account" else "transactions", 0)
    rows = report.stats.get("account_rows" if entity_type == "account" else "transaction_rows", 0)
    return bool(folded or rows or report.findings)


def _record(stores: RunStores, report: ReconciliationReport, outcome: ReplayOutcome | None,
            source: str) -> LifecycleUpdate | None:
    stores.reports.save_report(report, source=source)
    lifecycle = on_full_reconciliation(stores.reports, report)
    if outcome is not None:
        save_checkpoint(stores.event_log, stores.checkpoints, outcome, report.run_id, report)
    return lifecycle
