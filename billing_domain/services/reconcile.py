"""The reconciliation services the CLI and the Dagster assets both call.

Order matters: the projections are read *before* the events. The engine appends an event
before its projector applies it, so against events read afterwards a healthy projection can
only be behind (`lagging`), never ahead: `version_ahead` is then always a real fault, even
while the live projector keeps writing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from billing_domain.config import DEFAULT_REPLAY_ENGINE, DEFAULT_STUCK_AFTER, REPLAY_ENGINES, Settings
from billing_domain.core.cut import TopicPartitionKey
from billing_domain.core.diff import diff_accounts, diff_transactions
from billing_domain.core.findings import Finding, LedgerIdentity, ReconciliationReport, merge_lagging
from billing_domain.core.lag import DEFAULT_LAG_WINDOW, LagJudge
from billing_domain.core.ledger import identities_from_totals, ledger_findings, ledger_identities
from billing_domain.core.replay import AGGREGATE_TYPES
from billing_domain.core.sagas import check_sagas
from billing_domain.ports import CheckpointStore, EventLog, ProgressCallback, ProjectionStore, ReportStore
from billing_domain.services import incremental, read_path
from billing_domain.services.collector import collector_paused
from billing_domain.services.delta_memo import encode_memo, memo_of
from billing_domain.services.outcome import DeltaResult, ReplayOutcome
from billing_domain.services.read_plan import ReadRequest, ReplayMode

__all__ = ["ALL_ENTITY_TYPES", "DeltaResult", "ProgressCallback", "ReconcileOptions", "ReplayMode", "ReplayOutcome",
           "build_report", "collector_paused", "entity_counts", "judge_from_here", "new_run_id", "reconcile_all",
           "replay_all", "save_checkpoint", "utc_now"]
log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    stuck_after: timedelta = DEFAULT_STUCK_AFTER
    stop: dict[tuple[str, int], int] | None = None  # read the log only up to these offsets
    workers: int = 1  # processes for a full replay; partitions are dealt among them
    lag_window: timedelta = DEFAULT_LAG_WINDOW  # the contract's lag window (see reconcile.lag)
    projector_group: str | None = None  # the live projector's consumer group: its offsets decide exactly
    clock: Callable[[], datetime] = utc_now  # the run's clock: `stuck` and the lag window are judged by it
    # How a full replay in one process folds (REPLAY_ENGINES): "columnar" folds the plain streams by columns
    # and the rest by the aggregates; incremental, delta, parallel and filtered replays always use the aggregates.
    engine: str = DEFAULT_REPLAY_ENGINE

    def __post_init__(self) -> None:
        if self.engine not in REPLAY_ENGINES:
            raise ValueError(f"engine must be one of {', '.join(REPLAY_ENGINES)}, not {self.engine!r}")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ReconcileOptions:
        """The options every entry point uses: the thresholds of the settings, unless overridden."""
        values: dict[str, Any] = {"stuck_after": timedelta(minutes=settings.stuck_after_minutes),
                                  "lag_window": timedelta(seconds=settings.lag_window_seconds),
                                  "projector_group": settings.projector_group, "engine": settings.replay_engine}
        return cls(**(values | overrides))


def projector_offsets(event_log: EventLog, group: str | None) -> dict[TopicPartitionKey, int] | None:
    """The offsets the projector's group has committed on every partition (0 where none), read before the
    projections so that every event below them is in the rows read; None without a group, or when the group
    has committed nothing at all (a misnamed group would call every row lagging: the window decides then)."""
    if group is None:
        return None
    committed = event_log.committed_offsets(group, event_log.all_partitions())
    if all(offset is None for offset in committed.values()):
        log.warning("projector group %s has committed no offsets: judging lag by the window", group)
        return None
    return {tp: offset or 0 for tp, offset in committed.items()}


def judge_from_here(event_log: EventLog, options: ReconcileOptions) -> LagJudge:
    """The run's clock, then the projector's offsets: taken right before the projections are read."""
    read_at = options.clock()
    return LagJudge(read_at, options.lag_window, options.projector_group,
                    projector_offsets(event_log, options.projector_group))


def new_run_id(prefix: str = "cli") -> str:
    return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def replay_all(event_store: EventLog, projections: ProjectionStore, *, options: ReconcileOptions | None = None,
               progress: ProgressCallback | None = None, only_ids: set[str] | None = None,
               checkpoints: CheckpointStore | None = None, full: bool = False, delta: bool = False,
               entity_types: tuple[str, ...] = AGGREGATE_TYPES, reports: ReportStore | None = None) -> ReplayOutcome:
    """Read the projections, then fold one cut of both topics, each topic's range read once.

    With `checkpoints` (and not `full`), resume from the last checkpoint when it can be trusted
    (else replay in full and say why in `mode_reason`). With `delta` and `reports` (where the report
    the checkpoint's memo names is stored) too, diff only what changed since the checkpointed run
    when that can be done (see `delta`); only a report of every entity may ask for that, since the
    outcome then holds just the entities diffed again. Which of the three is decided before any
    event is read (`read_plan`). `entity_types` limits the rows read and the checkpointed state
    loaded (a rebuild needs one type); the tail of both topics is still folded, so a stream made
    corrupt from the other topic is seen.
    """
    options = options or ReconcileOptions()
    request = ReadRequest(checkpoints=checkpoints is not None, full=full, delta=delta, only_ids=only_ids is not None,
                          bounded=options.stop is not None, every_type=set(entity_types) == set(AGGREGATE_TYPES),
                          workers=options.workers)
    scope = read_path.Scope(request, entity_types, only_ids, options.stop, options.workers, progress, options.engine)
    with collector_paused():
        judge = judge_from_here(event_store, options)  # before the projections are read
        return read_path.replay(read_path.Sources(event_store, projections, checkpoints, reports), scope, judge)


ALL_ENTITY_TYPES = ("account", "transaction", "ledger")


def build_report(outcome: ReplayOutcome, *, run_id: str, scope: str, started_at: datetime,
                 options: ReconcileOptions | None = None,
                 entity_types: tuple[str, ...] = ALL_ENTITY_TYPES) -> ReconciliationReport:
    """Diff a replay against its projection rows and collect every finding of the asked entity types."""
    with collector_paused():  # the diff allocates a state per row while the replay is still retained
        return _build_report(outcome, run_id, scope, started_at, options or ReconcileOptions(), entity_types)


def _build_report(outcome: ReplayOutcome, run_id: str, scope: str, started_at: datetime, options: ReconcileOptions,
                  entity_types: tuple[str, ...]) -> ReconciliationReport:
    began = time.perf_counter()
    replay = outcome.replay
    judge = outcome.judge
    findings: list[Finding] = []
    if "account" in entity_types:
        findings += diff_accounts(replay, outcome.account_rows, judge)
        findings += [c.finding() for (kind, _), c in replay.corrupt.items() if kind == "account"]
    sagas = check_sagas(replay, judge)
    if "transaction" in entity_types:
        findings += diff_transactions(replay, outcome.transaction_rows, options.stuck_after, judge)
        findings += sagas.findings
        findings += [c.finding() for (kind, _), c in replay.corrupt.items() if kind == "transaction"]
    identities: list[LedgerIdentity] = []
    if "ledger" in entity_types:
        identities = (identities_from_totals(outcome.delta.totals, replay, sagas.seen_apart)
                      if outcome.delta is not None
                      else ledger_identities(replay, outcome.account_rows, judge, sagas.seen_apart))
    findings += ledger_findings(identities)
    if outcome.delta is not None:
        findings += [f for f in outcome.delta.carried if f.entity_type in entity_types]
    diff_s = time.perf_counter() - began
    replay_s = outcome.timings.get("replay_s", 0.0)
    stats: dict[str, Any] = {**outcome.timings, "diff_s": diff_s, "events_read": replay.events_read,
             "duplicates_ignored": replay.duplicates, **entity_counts(outcome),
             "events_per_s": replay.events_read / replay_s if replay_s > 0 else 0.0,
             "replay_mode": outcome.mode.value, "replay_mode_reason": outcome.mode_reason,
             "cut_time": replay.cut_time.isoformat() if replay.cut_time else None}
    if outcome.delta is not None:
        stats["findings_carried"] = len(outcome.delta.carried)
    stats |= judge.describe()
    return ReconciliationReport(run_id=run_id, scope=scope, started_at=started_at, finished_at=datetime.now(UTC),
                                cut=outcome.cut, findings=merge_lagging(findings), ledger=identities,
                                stats=stats, entity_types=entity_types)


def entity_counts(outcome: ReplayOutcome) -> dict[str, int]:
    """Aggregates folded and rows read; in delta mode, those the run stands for (most carried over)."""
    replay = outcome.replay
    diffed = (len(set(outcome.account_rows) | set(replay.accounts))
              + len(set(outcome.transaction_rows) | set(replay.transactions)))
    if outcome.delta is not None:
        memo = outcome.delta.memo
        return {"accounts": memo.accounts, "transactions": memo.transactions, "account_rows": len(memo.account_ids),
                "transaction_rows": len(memo.transaction_ids), "entities_diffed": diffed}
    return {"accounts": len(replay.accounts), "transactions": len(replay.transactions),
            "account_rows": len(outcome.account_rows), "transaction_rows": len(outcome.transaction_rows),
            "entities_diffed": diffed}


def reconcile_all(event_store: EventLog, projections: ProjectionStore, *, run_id: str | None = None,
                  options: ReconcileOptions | None = None, progress: ProgressCallback | None = None,
                  checkpoints: CheckpointStore | None = None, full: bool = False,
                  reports: ReportStore | None = None) -> ReconciliationReport:
    """Every account, transaction and ledger identity against one cut of the log.

    With `checkpoints`, the run resumes from the last checkpoint (unless `full`), diffs only what
    changed since when it can (with `reports`, where the previous report is stored), and writes the
    next checkpoint. The report itself is not stored here.
    """
    started_at = datetime.now(UTC)
    run_id = run_id or new_run_id()
    outcome = replay_all(event_store, projections, options=options, progress=progress, checkpoints=checkpoints,
                         full=full, delta=True, reports=reports)
    report = build_report(outcome, run_id=run_id, scope="all", started_at=started_at, options=options)
    if checkpoints is not None:
        save_checkpoint(event_store, checkpoints, outcome, run_id, report)
    return report


def save_checkpoint(event_store: EventLog, checkpoints: CheckpointStore, outcome: ReplayOutcome, run_id: str,
                    report: ReconciliationReport) -> None:
    """Checkpoint the replay just done (never for a bounded or filtered one)."""
    if outcome.replay.only_ids is not None or set(outcome.entity_types) != set(AGGREGATE_TYPES):
        return  # a partial state would be taken for the whole
    began = time.perf_counter()
    with collector_paused():
        memo = _memo_for_next_run(outcome, run_id, report)
        rows = incremental.save_checkpoint(event_store, checkpoints, outcome.replay, outcome.cut, run_id,
                                           full=outcome.mode is ReplayMode.FULL, delta=memo,
                                           resumed_from=outcome.resumed_from)
    if rows is None:
        log.warning("run %s: not checkpointed: another run saved a checkpoint after this one resumed from %s",
                    run_id, outcome.resumed_from)
    report.stats["checkpoint_saved"] = rows is not None
    report.stats["checkpoint_rows_written"] = rows or 0
    report.stats["checkpoint_s"] = time.perf_counter() - began


def _memo_for_next_run(outcome: ReplayOutcome, run_id: str, report: ReconciliationReport) -> bytes | None:
    """The delta memo, only under a report of every entity type (the next run carries its findings over)."""
    if set(report.entity_types) != set(ALL_ENTITY_TYPES) or outcome.read_mark is None:
        return None
    if outcome.delta is not None:
        return encode_memo(msgspec.structs.replace(outcome.delta.memo, run_id=run_id))
    return encode_memo(memo_of(outcome.replay, outcome.account_rows, outcome.transaction_rows,
                               outcome.read_mark, run_id, outcome.judge))
