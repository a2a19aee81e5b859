"""The reconciliation services the CLI and the Dagster assets both call.

Order matters: the projections are read *before* the events. The engine appends an event
before its projector applies it, so against events read afterwards a healthy projection can
only be behind (`lagging`), never ahead: `version_ahead` is then always a real fault, even
while the live projector keeps writing.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from billing_domain.accounts import AccountState
from billing_domain.adapters.checkpoint_store import CheckpointStore
from billing_domain.adapters.kafka import KafkaEventStore
from billing_domain.adapters.postgres import ProjectionStore
from billing_domain.cut import Cut
from billing_domain.findings import Finding, ReconciliationReport
from billing_domain.reconcile import incremental
from billing_domain.reconcile.diff import diff_accounts, diff_transactions
from billing_domain.reconcile.ledger import ledger_findings, ledger_identities
from billing_domain.reconcile.parallel import replay_in_parallel
from billing_domain.reconcile.replay import Replay
from billing_domain.reconcile.sagas import saga_findings
from billing_domain.transactions import TransactionState

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    stuck_after: timedelta = timedelta(minutes=5)
    stop: dict[tuple[str, int], int] | None = None  # read the log only up to these offsets
    workers: int = 1  # processes for a full replay; partitions are dealt among them


@dataclass(slots=True)
class ReplayOutcome:
    """A replay with the projection rows it was diffed against (read before the events)."""

    replay: Replay
    cut: Cut
    account_rows: dict[str, AccountState]
    transaction_rows: dict[str, TransactionState]
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = "full"  # full | incremental
    mode_reason: str = "full replay"


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a replay retains millions of acyclic objects.

    Each collection would traverse everything retained so far: measured, a fifth of the
    replay's time on 1M events. Nothing the replay builds is cyclic, so nothing leaks.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def new_run_id(prefix: str = "cli") -> str:
    return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def replay_all(event_store: KafkaEventStore, projections: ProjectionStore, *, options: ReconcileOptions | None = None,
               progress: ProgressCallback | None = None, only_ids: set[str] | None = None,
               checkpoints: CheckpointStore | None = None, full: bool = False) -> ReplayOutcome:
    """Read the projections, then fold one cut of both topics in a single pass.

    With `checkpoints` (and not `full`), resume from the last checkpoint when it can be trusted
    (else replay in full and say why in `mode_reason`).
    """
    options = options or ReconcileOptions()
    started = time.perf_counter()
    account_rows = projections.read_accounts(sorted(only_ids) if only_ids is not None else None)
    transaction_rows = projections.read_transactions(sorted(only_ids) if only_ids is not None else None)
    read_projections = time.perf_counter()
    replay = Replay(event_store.topics, account_versions={k: r.version for k, r in account_rows.items()},
                    transaction_versions={k: r.version for k, r in transaction_rows.items()}, only_ids=only_ids)
    with collector_paused():
        resumed = (incremental.resume(event_store, checkpoints, replay) if checkpoints is not None and not full
                   else incremental.Resumed(None, "full replay" + (" (asked for)" if full else "")))
        older = incremental.snapshot_hydrated(replay) if resumed.start is not None else set()
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
                         "incremental" if resumed.start is not None else "full", resumed.reason)


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
    findings: list[Finding] = []
    if "account" in entity_types:
        findings += diff_accounts(replay, outcome.account_rows)
        findings += [c.finding() for (kind, _), c in replay.corrupt.items() if kind == "account"]
    if "transaction" in entity_types:
        findings += diff_transactions(replay, outcome.transaction_rows, options.stuck_after)
        findings += saga_findings(replay)
        findings += [c.finding() for (kind, _), c in replay.corrupt.items() if kind == "transaction"]
    identities = ledger_identities(replay, outcome.account_rows) if "ledger" in entity_types else []
    findings += ledger_findings(identities)
    diff_s = time.perf_counter() - began
    replay_s = outcome.timings.get("replay_s", 0.0)
    stats = {**outcome.timings, "diff_s": diff_s, "events_read": replay.events_read,
             "duplicates_ignored": replay.duplicates, "accounts": len(replay.accounts),
             "transactions": len(replay.transactions), "account_rows": len(outcome.account_rows),
             "transaction_rows": len(outcome.transaction_rows),
             "events_per_s": replay.events_read / replay_s if replay_s > 0 else 0.0,
             "replay_mode": outcome.mode, "replay_mode_reason": outcome.mode_reason,
             "cut_time": replay.cut_time.isoformat() if replay.cut_time else None}
    return ReconciliationReport(run_id=run_id, scope=scope, started_at=started_at, finished_at=datetime.now(UTC),
                                cut=outcome.cut, findings=sorted(findings, key=lambda f: f.key), ledger=identities,
                                stats=stats, entity_types=entity_types)


def reconcile_all(event_store: KafkaEventStore, projections: ProjectionStore, *, run_id: str | None = None,
                  options: ReconcileOptions | None = None, progress: ProgressCallback | None = None,
                  checkpoints: CheckpointStore | None = None, full: bool = False) -> ReconciliationReport:
    """Every account, transaction and ledger identity against one cut of the log.

    With `checkpoints`, the run resumes from the last checkpoint (unless `full`) and writes the next one.
    """
    started_at = datetime.now(UTC)
    run_id = run_id or new_run_id()
    outcome = replay_all(event_store, projections, options=options, progress=progress, checkpoints=checkpoints,
                         full=full)
    report = build_report(outcome, run_id=run_id, scope="all", started_at=started_at, options=options)
    if checkpoints is not None:
        save_checkpoint(event_store, checkpoints, outcome, run_id, report)
    return report


def save_checkpoint(event_store: KafkaEventStore, checkpoints: CheckpointStore, outcome: ReplayOutcome, run_id: str,
                    report: ReconciliationReport) -> None:
    """Checkpoint the replay just done (never for a bounded or filtered one)."""
    if outcome.replay.only_ids is not None:
        return
    began = time.perf_counter()
    with collector_paused():
        rows = incremental.save_checkpoint(event_store, checkpoints, outcome.replay, outcome.cut, run_id,
                                           full=outcome.mode == "full")
    report.stats["checkpoint_rows_written"] = rows
    report.stats["checkpoint_s"] = time.perf_counter() - began
