"""A replay's read path: look, decide, then read each topic's range once.

1. Look. The checkpoint's header and, to know the log still holds what it covered, the record at each end it
   covers; for a delta run also the memo, the report it names, whether the projections compare with the
   memo's read (one snapshot, opened here), and the tail's length from the ends the broker reports.
2. Decide: `read_plan.plan_read`, a pure function of what was seen, logged before any event is read.
3. Read. The projection rows first (see reconcile.py), then the checkpointed states the plan loads, then the
   plan's range of each topic, once: from the start (a full replay, in worker processes if asked), or the
   tail after the checkpoint, streamed (incremental) or held (delta: which rows to diff again is known only
   once the tail is read).

A delta run stopped once its tail is read (`delta.NotPossible`) does not read the tail again: every row is
read from the snapshot taken before the tail, and the tail held is fed to a replay of every entity, after
every checkpointed state (incremental) or, when a state does not decode, after the log up to the tail (full).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from billing_domain.config import DEFAULT_REPLAY_ENGINE
from billing_domain.core.accounts import AccountState
from billing_domain.core.checkpoint import CheckpointHeader, marks_key, topics_key
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.exceptions import CheckpointUnreadableError
from billing_domain.core.lag import LagJudge
from billing_domain.core.records import LogRecord
from billing_domain.core.replay import Replay
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import (
    CheckpointStore,
    CheckpointView,
    EventLog,
    ProgressCallback,
    ProjectionSnapshot,
    ProjectionStore,
    ReadMark,
    ReportStore,
)
from billing_domain.services import delta, incremental
from billing_domain.services.outcome import ReplayOutcome
from billing_domain.services.parallel import replay_in_parallel
from billing_domain.services.read_plan import (
    CheckpointFacts,
    DeltaFacts,
    Hydration,
    ReadPlan,
    ReadRequest,
    ReplayMode,
    plan_read,
    start_after,
    tail_length,
    why_not_delta_yet,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sources:
    event_log: EventLog
    projections: ProjectionStore
    checkpoints: CheckpointStore | None = None
    reports: ReportStore | None = None  # where the report a delta memo names is stored


@dataclass(frozen=True, slots=True)
class Scope:
    """What to replay, and how."""

    request: ReadRequest
    entity_types: tuple[str, ...]
    only_ids: set[str] | None = None
    stop: dict[TopicPartitionKey, int] | None = None
    workers: int = 1
    progress: ProgressCallback | None = None
    engine: str = DEFAULT_REPLAY_ENGINE  # how a full replay in one process folds (config.REPLAY_ENGINES)


@dataclass(frozen=True, slots=True)
class _Rows:
    accounts: dict[str, AccountState]
    transactions: dict[str, TransactionState]
    mark: ReadMark  # taken before they were read
    read_s: float


@dataclass(frozen=True, slots=True)
class _DeltaLook:
    facts: DeltaFacts
    previous: delta.Previous | None = None  # both set when nothing seen so far rules a delta run out
    snapshot: ProjectionSnapshot | None = None


def replay(sources: Sources, scope: Scope, judge: LagJudge) -> ReplayOutcome:
    """Look, plan, read once. `judge` was taken before anything here reads the projections."""
    with ExitStack() as view_scope:
        view = (view_scope.enter_context(sources.checkpoints.reading())
                if sources.checkpoints is not None and not scope.request.full else None)
        facts = None if view is None else _checkpoint_facts(sources.event_log, view)
        with ExitStack() as snapshot_scope:
            look = _look_for_delta(sources, scope.request, view, facts, snapshot_scope)
            plan = plan_read(scope.request, facts, None if look is None else look.facts)
            log.info("read plan: %s, %s", plan.mode, plan.reason)
            if plan.mode is ReplayMode.DELTA:
                assert look is not None and look.previous is not None and look.snapshot is not None \
                    and view is not None, "a delta run is planned only once its memo and snapshot are at hand"
                return _delta(sources, scope, plan, judge, view, look.previous, look.snapshot,
                              (view_scope, snapshot_scope))
        rows = _read_rows(sources.projections, scope)
        began = time.perf_counter()
        replay = _replay_of(sources.event_log, rows, scope)
        plan = _hydrated(plan, scope, view, None if facts is None else facts.header, replay)
        loaded_s = time.perf_counter() - began
    return _fold(plan, scope, sources.event_log, rows, replay, judge, loaded_s)


# --- look -------------------------------------------------------------------------------------------------
def _checkpoint_facts(event_log: EventLog, view: CheckpointView) -> CheckpointFacts:
    topics = event_log.topics.all()
    partitions = {topic: event_log.partitions_of(topic) for topic in topics}
    try:
        header = view.header(topics_key(topics))
    except CheckpointUnreadableError as exc:
        return CheckpointFacts(None, partitions, {}, unreadable=str(exc))
    if header is None:
        return CheckpointFacts(None, partitions, {})
    marks = incremental.current_marks(event_log, header.cut)
    return CheckpointFacts(header, partitions, {marks_key(tp): mark for tp, mark in marks.items()})


def _look_for_delta(sources: Sources, request: ReadRequest, view: CheckpointView | None,
                    facts: CheckpointFacts | None, snapshot_scope: ExitStack) -> _DeltaLook | None:
    """What a delta run needs, looked at only while nothing seen so far rules it out."""
    if view is None or facts is None or facts.header is None or why_not_delta_yet(request, facts) is not None:
        return None
    previous = delta.previous_run(view, sources.reports, facts.header)
    if isinstance(previous, delta.NotPossible):
        return _DeltaLook(DeltaFacts("", 0, 0, previous.reason))
    memo = previous.memo
    # The rows' snapshot now, before the log: a row can then only be behind the events read.
    snapshot = snapshot_scope.enter_context(sources.projections.snapshot())
    why_not = snapshot.why_not_comparable(memo.mark)
    if why_not is not None:
        return _DeltaLook(DeltaFacts(memo.run_id, memo.accounts + memo.transactions, 0, why_not))
    start = start_after(facts.header, facts.partitions)
    tail = tail_length(start, sources.event_log.reported_ends(list(start)))
    return _DeltaLook(DeltaFacts(memo.run_id, memo.accounts + memo.transactions, tail), previous, snapshot)


# --- read ---------------------------------------------------------------------------------------------------
def _delta(sources: Sources, scope: Scope, plan: ReadPlan, judge: LagJudge, view: CheckpointView,
           previous: delta.Previous, snapshot: ProjectionSnapshot, scopes: tuple[ExitStack, ExitStack]
           ) -> ReplayOutcome:
    """The delta run; when it stops once the tail is read, every entity diffed with the tail it holds."""
    view_scope, snapshot_scope = scopes
    changes = delta.row_changes(snapshot, previous.memo)
    tail = _hold(sources.event_log, plan.start, scope.progress)
    folded = delta.fold_delta(sources.event_log.topics, view, snapshot, previous, changes, tail)
    if not isinstance(folded, delta.NotPossible):
        snapshot_scope.close()
        view_scope.close()
        return delta.finish_delta(sources.event_log, folded, previous, changes, tail, judge)
    log.info("diffing every entity: %s", folded.reason)
    began = time.perf_counter()
    rows = _Rows(snapshot.read_accounts(sorted(changes.ids["account"])),
                 snapshot.read_transactions(sorted(changes.ids["transaction"])), snapshot.mark,
                 changes.read_s + time.perf_counter() - began)
    snapshot_scope.close()
    began = time.perf_counter()
    replay = _replay_of(sources.event_log, rows, scope)
    plan = (plan.every_entity(folded.reason) if folded.checkpoint_usable
            else plan.without_checkpoint(folded.reason, scope.request))
    plan = _hydrated(plan, scope, view, previous.header, replay)
    view_scope.close()
    return _fold(plan, scope, sources.event_log, rows, replay, judge, time.perf_counter() - began, tail)


def _hold(event_log: EventLog, start: dict[TopicPartitionKey, int] | None,
          progress: ProgressCallback | None) -> delta.HeldTail:
    began = time.perf_counter()
    reader = event_log.read_cut(start=start, on_batch=progress)
    batches = list(reader)
    return delta.HeldTail(batches, reader.cut, time.perf_counter() - began)


def _read_rows(projections: ProjectionStore, scope: Scope) -> _Rows:
    began = time.perf_counter()
    mark = projections.read_mark()
    ids = sorted(scope.only_ids) if scope.only_ids is not None else None
    accounts = projections.read_accounts(ids) if "account" in scope.entity_types else {}
    transactions = projections.read_transactions(ids) if "transaction" in scope.entity_types else {}
    return _Rows(accounts, transactions, mark, time.perf_counter() - began)


def _replay_of(event_log: EventLog, rows: _Rows, scope: Scope) -> Replay:
    """A replay that knows the version of every row read (of the types read: the others have no rows)."""
    return Replay(event_log.topics,
                  account_versions={k: r.version for k, r in rows.accounts.items()}
                  if "account" in scope.entity_types else None,
                  transaction_versions={k: r.version for k, r in rows.transactions.items()}
                  if "transaction" in scope.entity_types else None, only_ids=scope.only_ids)


def _hydrated(plan: ReadPlan, scope: Scope, view: CheckpointView | None, header: CheckpointHeader | None,
              replay: Replay) -> ReadPlan:
    """Load every checkpointed state the plan resumes from; a state that does not decode means the whole log."""
    if plan.hydrate is not Hydration.EVERY or view is None or header is None:
        return plan
    try:
        incremental.hydrate_every(view, header, replay, scope.entity_types)
    except CheckpointUnreadableError as exc:  # `replay` is left untouched
        log.warning("not resuming from the checkpoint: %s; replaying in full", exc)
        return plan.without_checkpoint(str(exc), scope.request)
    return plan


def _fold(plan: ReadPlan, scope: Scope, event_log: EventLog, rows: _Rows, replay: Replay, judge: LagJudge,
          loaded_s: float, held: delta.HeldTail | None = None) -> ReplayOutcome:
    began = time.perf_counter()
    older = incremental.rows_below_checkpoint(replay) if plan.start is not None else set()
    cut = _read_into(plan, scope, event_log, replay, held)
    if plan.start is not None:
        incremental.fill_older_snapshots(event_log, replay, older, plan.start)
    timings = {"read_projections_s": rows.read_s, "load_checkpoint_s": loaded_s,
               "replay_s": time.perf_counter() - began}
    return ReplayOutcome(replay, cut, rows.accounts, rows.transactions, timings, plan.mode, plan.reason, rows.mark,
                         entity_types=scope.entity_types, resumed_from=plan.resumed_from, judge=judge)


def _read_into(plan: ReadPlan, scope: Scope, event_log: EventLog, replay: Replay,
               held: delta.HeldTail | None) -> Cut:
    """Feed `replay` the plan's range of each topic, read once: a tail already held is fed, not read again."""
    if held is not None and plan.start is not None:  # resumed from the checkpoint the tail follows
        for batch in held.batches:
            replay.feed(batch)
        return held.cut
    stop = scope.stop if held is None else dict(held.cut.start)  # with a tail held: the log up to it
    if plan.parallel:
        cut = replay_in_parallel(event_log, replay, scope.workers, stop, scope.progress)
    else:
        reader = event_log.read_cut(start=plan.start, stop=stop, on_batch=scope.progress)
        if plan.start is None and held is None and scope.engine == "columnar" and scope.only_ids is None:
            _fold_by_columns(replay, reader)
        else:
            for batch in reader:
                replay.feed(batch)
        cut = reader.cut
    if held is None:
        return cut
    for batch in held.batches:
        replay.feed(batch)
    return Cut(start=dict(cut.start), end=cut.end | held.cut.end)


def _fold_by_columns(replay: Replay, batches: Iterable[Sequence[LogRecord]]) -> None:
    """The full cut, held, folded by the columnar engine (plain streams by columns, the rest by `replay`)."""
    from billing_domain.columnar import can_fold, fold_into  # here: Polars loads only for a run that asks for it

    if not can_fold(replay):  # something was loaded into it after all: the aggregates fold on top of that
        for batch in batches:
            replay.feed(batch)
        return
    records = [record for batch in batches for record in batch]
    split = fold_into(replay, records)
    log.info("columnar replay: %d records by columns, %d by the aggregates", split.columnar, split.reference)
