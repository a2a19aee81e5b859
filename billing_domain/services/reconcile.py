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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.kafka.offsets import all_partitions, committed_offsets
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_changes import ReadMark, read_mark
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.config import Settings
from billing_domain.core.accounts import AccountState
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.diff import diff_accounts, diff_transactions
from billing_domain.core.findings import Finding, LedgerIdentity, ReconciliationReport, merge_lagging
from billing_domain.core.lag import DEFAULT_LAG_WINDOW, LagJudge
from billing_domain.core.ledger import identities_from_totals, ledger_findings, ledger_identities
from billing_domain.core.replay import AGGREGATE_TYPES, Replay
from billing_domain.core.sagas import check_sagas
from billing_domain.core.transactions import TransactionState
from billing_domain.services import incremental
from billing_domain.services.collector import collector_paused
from billing_domain.services.delta import DeltaResult, encode_memo, memo_of, try_delta
from billing_domain.services.parallel import replay_in_parallel

ProgressCallback = Callable[[int], None]
log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    stuck_after: timedelta = timedelta(minutes=5)
    stop: dict[tuple[str, int], int] | None = None  # read the log only up to these offsets
    workers: int = 1  # processes for a full replay; partitions are dealt among them
    lag_window: timedelta = DEFAULT_LAG_WINDOW  # the contract's lag window (see reconcile.lag)
    projector_group: str | None = None  # the live projector's consumer group: its offsets decide exactly
    clock: Callable[[], datetime] = utc_now  # the run's clock: `stuck` and the lag window are judged by it

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ReconcileOptions:
        """The options every entry point uses: the thresholds of the settings, unless overridden."""
        values: dict[str, Any] = {"stuck_after": timedelta(minutes=settings.stuck_after_minutes),
                                  "lag_window": timedelta(seconds=settings.lag_window_seconds),
                                  "projector_group": settings.projector_group}
        return cls(**(values | overrides))


@dataclass(slots=True)
class ReplayOutcome:
    """A replay with the projection rows it was diffed against (read before the events)."""

    replay: Replay
    cut: Cut
    account_rows: dict[str, AccountState]
    transaction_rows: dict[str, TransactionState]
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = "full"  # full | incremental | delta
    mode_reason: str = "full replay"
    read_mark: ReadMark | None = None  # see projection_changes; taken before the rows were read
    delta: DeltaResult | None = None  # set in delta mode: the rows and replay hold only the entities diffed again
    entity_types: tuple[str, ...] = AGGREGATE_TYPES  # whose rows and checkpointed state were loaded
    resumed_from: str | None = None  # the run whose checkpoint this replay continued
    # The run's clock and the projector's offsets as the run began reading the projections: `stuck`, rows
    # behind and sagas across the two topics are judged by them (see reconcile.lag).
    judge: LagJudge = field(default_factory=lambda: LagJudge(utc_now()))


def projector_offsets(event_store: KafkaEventStore, group: str | None) -> dict[TopicPartitionKey, int] | None:
    """The offsets the projector's group has committed on every partition (0 where none), read before the
    projections so that every event below them is in the rows read; None without a group, or when the group
    has committed nothing at all (a misnamed group would call every row lagging: the window decides then)."""
    if group is None:
        return None
    committed = committed_offsets(event_store, group, all_partitions(event_store))
    if all(offset is None for offset in committed.values()):
        log.warning("projector group %s has committed no offsets: judging lag by the window", group)
        return None
    return {tp: offset or 0 for tp, offset in committed.items()}


def judge_from_here(event_store: KafkaEventStore, options: ReconcileOptions) -> LagJudge:
    """The run's clock, then the projector's offsets: taken right before the projections are read."""
    read_at = options.clock()
    return LagJudge(read_at, options.lag_window, options.projector_group,
                    projector_offsets(event_store, options.projector_group))


def new_run_id(prefix: str = "cli") -> str:
    return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def replay_all(event_store: KafkaEventStore, projections: ProjectionStore, *, options: ReconcileOptions | None = None,
               progress: ProgressCallback | None = None, only_ids: set[str] | None = None,
               checkpoints: CheckpointStore | None = None, full: bool = False, delta: bool = False,
               entity_types: tuple[str, ...] = AGGREGATE_TYPES) -> ReplayOutcome:
    """Read the projections, then fold one cut of both topics in a single pass.

    With `checkpoints` (and not `full`), resume from the last checkpoint when it can be trusted
    (else replay in full and say why in `mode_reason`). With `delta` too, diff only what changed
    since the checkpointed run when that can be done (see `reconcile.delta`); only a report of
    every entity may ask for that, since the outcome then holds just the entities diffed again.
    `entity_types` limits the rows read and the checkpointed state loaded (a rebuild needs one type);
    the tail of both topics is still folded, so a stream made corrupt from the other topic is seen.
    """
    options = options or ReconcileOptions()
    why_not_delta = ""
    if (delta and checkpoints is not None and not full and only_ids is None and options.stop is None
            and set(entity_types) == set(AGGREGATE_TYPES)):
        with collector_paused():
            judge = judge_from_here(event_store, options)
            attempt = try_delta(event_store, projections.engine, checkpoints, judge)
        if not isinstance(attempt, str):
            return ReplayOutcome(attempt.replay, attempt.cut, attempt.account_rows, attempt.transaction_rows,
                                 attempt.timings, "delta", attempt.reason, attempt.mark,
                                 attempt.result, resumed_from=attempt.resumed_from, judge=judge)
        log.info("diffing every entity: %s", attempt)
        why_not_delta = f" (every entity diffed: {attempt})"
    started = time.perf_counter()
    judge = judge_from_here(event_store, options)
    mark = read_mark(projections.engine)
    ids = sorted(only_ids) if only_ids is not None else None
    account_rows = projections.read_accounts(ids) if "account" in entity_types else {}
    transaction_rows = projections.read_transactions(ids) if "transaction" in entity_types else {}
    read_projections = time.perf_counter()
    replay = Replay(event_store.topics,
                    account_versions={k: r.version for k, r in account_rows.items()}
                    if "account" in entity_types else None,
                    transaction_versions={k: r.version for k, r in transaction_rows.items()}
                    if "transaction" in entity_types else None, only_ids=only_ids)
    with collector_paused():
        resumed = (incremental.resume(event_store, checkpoints, replay, entity_types)
                   if checkpoints is not None and not full
                   else incremental.Resumed(None, "full replay" + (" (asked for)" if full else "")))
        older = incremental.rows_below_checkpoint(replay) if resumed.start is not None else set()
        loaded = time.perf_counter()
        if resumed.start is None and only_ids is None and options.workers > 1:
            cut = replay_in_parallel(event_store, replay, options.workers, options.stop, progress)
        else:
            reader = event_store.read_cut(start=resumed.start, stop=options.stop, on_batch=progress)
            for batch in reader:
                replay.feed(batch)
            cut = reader.cut
        if resumed.start is not None:
            incremental.fill_older_snapshots(event_store, replay, older, resumed.start)
    finished = time.perf_counter()
    timings = {"read_projections_s": read_projections - started, "load_checkpoint_s": loaded - read_projections,
               "replay_s": finished - loaded}
    return ReplayOutcome(replay, cut, account_rows, transaction_rows, timings,
                         "incremental" if resumed.start is not None else "full", resumed.reason + why_not_delta,
                         mark, entity_types=entity_types, resumed_from=resumed.run_id, judge=judge)


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
             "replay_mode": outcome.mode, "replay_mode_reason": outcome.mode_reason,
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


def reconcile_all(event_store: KafkaEventStore, projections: ProjectionStore, *, run_id: str | None = None,
                  options: ReconcileOptions | None = None, progress: ProgressCallback | None = None,
                  checkpoints: CheckpointStore | None = None, full: bool = False) -> ReconciliationReport:
    """Every account, transaction and ledger identity against one cut of the log.

    With `checkpoints`, the run resumes from the last checkpoint (unless `full`), diffs only what
    changed since when it can, and writes the next checkpoint.
    """
    started_at = datetime.now(UTC)
    run_id = run_id or new_run_id()
    outcome = replay_all(event_store, projections, options=options, progress=progress, checkpoints=checkpoints,
                         full=full, delta=True)
    report = build_report(outcome, run_id=run_id, scope="all", started_at=started_at, options=options)
    if checkpoints is not None:
        save_checkpoint(event_store, checkpoints, outcome, run_id, report)
    return report


def save_checkpoint(event_store: KafkaEventStore, checkpoints: CheckpointStore, outcome: ReplayOutcome, run_id: str,
                    report: ReconciliationReport) -> None:
    """Checkpoint the replay just done (never for a bounded or filtered one)."""
    if outcome.replay.only_ids is not None or set(outcome.entity_types) != set(AGGREGATE_TYPES):
        return  # a partial state would be taken for the whole
    began = time.perf_counter()
    with collector_paused():
        memo = _memo_for_next_run(outcome, run_id, report)
        rows = incremental.save_checkpoint(event_store, checkpoints, outcome.replay, outcome.cut, run_id,
                                           full=outcome.mode == "full", delta=memo, resumed_from=outcome.resumed_from)
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
