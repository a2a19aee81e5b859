"""The services' logic on the in-memory fakes of the ports (tests/support/fakes.py): no broker, no database.

The fakes keep the contracts of tests/contract/, which run them against Kafka and PostgreSQL too, so what holds
here holds of the services on the real adapters: `run_reconciliation` (replay, report, then the report, the
finding lifecycle and the checkpoint, in that order), the incremental and delta runs it chooses, a rebuild's plan
and its guarded writes, the shadow rebuild, the saga recovery's plan and the balances as of a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, Protocol

import msgspec
import pytest
from support.builders import HISTORY_START, EventFactory, fold, stuck_transfer_history, transfer_history
from support.fakes import (
    InMemoryCheckpointStore,
    InMemoryEventLog,
    InMemoryNotifier,
    InMemoryProjectionStore,
    InMemoryReconStore,
)

from billing_domain.core.checkpoint import topics_key
from billing_domain.core.events import AccountCredited, Event
from billing_domain.core.exceptions import ConcurrentOperationError, UnknownEntityError
from billing_domain.core.findings import Kind
from billing_domain.core.records import Topics
from billing_domain.ports import (
    AuditLookup,
    CheckpointStore,
    CheckpointView,
    CutRead,
    EventLog,
    LifecycleStore,
    LifecycleTransaction,
    Locks,
    LogScan,
    Notifier,
    ProjectionSnapshot,
    ProjectionStore,
    ReportStore,
    ReportsWithLifecycle,
    ShadowProjections,
    ShadowTables,
)
from billing_domain.services.point_in_time import balances_as_of
from billing_domain.services.projector_lag import LagThresholds, lag_verdict, measure_lag
from billing_domain.services.rebuild import RebuildSelection, rebuild
from billing_domain.services.reconcile import ReconcileOptions, replay_all
from billing_domain.services.run_reconciliation import (
    ReconciliationRequest,
    ReconciliationRun,
    RunStores,
    run_reconciliation,
)
from billing_domain.services.saga_recovery import execute_plan, load_plan, plan_recovery
from billing_domain.services.shadow_rebuild import shadow_rebuild

# The history's last event is at minute 3 (minute 30 for the stuck one); the runs' clock is a day later, so no
# row is inside the lag window and every pending transfer is stuck.
NOW = HISTORY_START + timedelta(days=1)
OPTIONS = ReconcileOptions(clock=lambda: NOW)
MISMATCH = ("account", "acc-b", Kind.BALANCE_MISMATCH.value)
UNBALANCED = ("ledger", "EUR:balances_match_events", Kind.ACCOUNTING_EQUATION.value)  # the same fault, summed up
FAULT = {MISMATCH, UNBALANCED}


@dataclass
class World:
    """Every port on its fake, the fakes' own controls at hand."""

    log: InMemoryEventLog
    projections: InMemoryProjectionStore
    recon: InMemoryReconStore
    checkpoints: InMemoryCheckpointStore
    events: list[Event]

    @property
    def stores(self) -> RunStores:
        return RunStores(self.log, self.projections, self.recon, self.checkpoints)

    def run(self, run_id: str, progress: Callable[[int], None] | None = None, **request: object) -> ReconciliationRun:
        return run_reconciliation(self.stores, ReconciliationRequest(run_id, "test", **request),  # type: ignore[arg-type]
                                  OPTIONS, progress=progress)

    def project(self, events: Iterable[Event]) -> None:
        folded = fold(events)
        self.projections.upsert("account", [a.state() for a in folded.accounts.values()])
        self.projections.upsert("transaction", [t.state() for t in folded.transactions.values()])

    def append(self, *events: Event) -> None:
        self.log.append(events)
        self.events += events
        self.project(self.events)

    def tamper(self, account_id: str, by: int) -> None:
        """A projector bug: the row's balance is off, at the right version."""
        row = self.projections.read_accounts([account_id])[account_id]
        self.projections.upsert("account", [msgspec.structs.replace(row, balance_minor=row.balance_minor + by)])

    def checkpoint_run(self) -> str | None:
        header = self.checkpoints.header(topics_key(self.log.topics.all()))
        return header.run_id if header else None


def world(history: list[Event]) -> World:
    w = World(InMemoryEventLog(Topics.with_prefix("fake."), partitions=3), InMemoryProjectionStore(),
              InMemoryReconStore(), InMemoryCheckpointStore(), list(history))
    w.log.append(history)
    w.project(history)
    return w


@pytest.fixture
def faulty() -> World:
    """`transfer_history`, projected as a caught-up projector would, with acc-b's balance off by one."""
    w = world(transfer_history(EventFactory(id_prefix="evt")))
    w.tamper("acc-b", 1)
    return w


def protocol_members(protocol: type) -> set[str]:
    """The names a Protocol (and the Protocols it extends) asks for."""
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (object, Protocol, Generic) or not getattr(klass, "_is_protocol", False):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_") or n == "__iter__"}
        names |= set(getattr(klass, "__annotations__", {}))
    return names


def parameters(function: object) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]  # type: ignore[arg-type]


def test_each_fake_has_every_member_of_its_port_with_the_ports_parameters() -> None:
    # mypy checks these assignments when run on the tests; the loop below checks the same at run time, so a
    # port that gains a method or a parameter fails here too (`make test` type-checks the packages only)
    log = InMemoryEventLog()
    projections = InMemoryProjectionStore()
    recon = InMemoryReconStore()
    checkpoints = InMemoryCheckpointStore()
    with projections.snapshot() as snap, checkpoints.reading() as view, recon.lifecycle_transaction() as tx:
        pairs: list[tuple[type, object]] = [
            (EventLog, log), (CutRead, log.read_cut()), (LogScan, log.scan({})), (ProjectionStore, projections),
            (ShadowProjections, projections), (ShadowTables, projections.shadow), (ProjectionSnapshot, snap),
            (Locks, projections.locks), (ReportStore, recon), (ReportsWithLifecycle, recon), (AuditLookup, recon),
            (LifecycleStore, recon), (LifecycleTransaction, tx), (CheckpointStore, checkpoints),
            (CheckpointView, view), (Notifier, InMemoryNotifier())]
        typed: tuple[EventLog, CutRead, LogScan, ShadowProjections, ProjectionSnapshot, ShadowTables, Locks,
                     ReportsWithLifecycle, AuditLookup, LifecycleTransaction, CheckpointStore, CheckpointView,
                     Notifier] = (log, log.read_cut(), log.scan({}), projections, snap, projections.shadow,
                                  projections.locks, recon, recon, tx, checkpoints, view, InMemoryNotifier())
        assert len(typed) == 13
        for port, fake in pairs:
            for name in sorted(protocol_members(port)):
                assert hasattr(fake, name), f"{type(fake).__name__} lacks {port.__name__}.{name}"
                asked = inspect.getattr_static(port, name, None)
                if inspect.isfunction(asked):
                    given = getattr(type(fake), name)
                    assert parameters(given) == parameters(asked), f"{type(fake).__name__}.{name}"


# --- run_reconciliation: replay, report, record ------------------------------------------------------------
def test_a_run_stores_its_report_then_the_lifecycle_then_the_checkpoint(faulty: World) -> None:
    run = faulty.run("run-1")
    assert {f.key for f in run.report.findings} == FAULT
    assert run.outcome is not None and run.outcome.mode == "full"
    assert faulty.recon.findings("run-1") == run.report.findings
    assert faulty.recon.latest_run_id() == "run-1" and faulty.recon.runs["run-1"].source == "test"
    assert run.lifecycle is not None and run.lifecycle.applied
    assert run.lifecycle.statuses == dict.fromkeys(FAULT, "new")
    header = faulty.checkpoints.header(topics_key(faulty.log.topics.all()))
    assert header is not None and header.run_id == "run-1" and header.has_delta_memo
    assert header.cut.end == {tp: e.end for tp, e in faulty.log.exact_ends(faulty.log.all_partitions()).items()}
    with faulty.checkpoints.reading() as view:
        kinds = {(r.entity_type, r.entity_id) for r in view.entities(header.topics, ["account", "transaction"])}
    assert kinds == {("account", "acc-a"), ("account", "acc-b"), ("transaction", "tx-1")}
    assert run.report.stats["checkpoint_saved"] is True


def test_the_next_run_reads_only_the_tail_and_the_finding_stays_open(faulty: World) -> None:
    first = faulty.run("run-1")
    faulty.append(EventFactory(HISTORY_START, "late")("acc-a", 4, AccountCredited(500, None, "deposit"), 10))
    faulty.tamper("acc-b", 1)  # the rewrite of every row above left acc-b off by one again
    read: list[int] = []
    second = faulty.run("run-2", progress=read.append)
    assert sum(read) == 1  # the one new record, not the log again
    assert second.outcome is not None and second.outcome.mode == "incremental"
    assert first.outcome is not None and second.outcome.cut.start == first.outcome.cut.end
    assert second.outcome.cut.message_count == 1
    assert {f.key for f in second.report.findings} == FAULT
    assert second.lifecycle is not None and second.lifecycle.statuses == dict.fromkeys(FAULT, "open")
    assert faulty.checkpoint_run() == "run-2"


def test_a_delta_run_carries_the_unchanged_findings_over(faulty: World) -> None:
    first = faulty.run("run-1")
    second = faulty.run("run-2", delta=True)
    assert second.outcome is not None
    assert second.outcome.mode == "delta", second.outcome.mode_reason
    assert "0 of 3 entities diffed again" in second.outcome.mode_reason
    assert second.report.findings == first.report.findings
    assert faulty.recon.findings("run-2") == first.report.findings


def test_a_repaired_row_is_diffed_again_by_the_delta_run_and_its_finding_resolves(faulty: World) -> None:
    faulty.run("run-1")
    faulty.tamper("acc-b", -1)
    second = faulty.run("run-2", delta=True)
    assert second.outcome is not None and second.outcome.mode == "delta"
    assert second.report.findings == []
    assert second.lifecycle is not None and second.lifecycle.statuses == dict.fromkeys(FAULT, "resolved")


def test_after_a_restore_of_the_projections_the_delta_run_diffs_every_entity(faulty: World) -> None:
    faulty.run("run-1")
    faulty.projections.restart()
    second = faulty.run("run-2", delta=True)
    assert second.outcome is not None and second.outcome.mode != "delta"
    assert "not the one the last run read" in second.outcome.mode_reason
    assert {f.key for f in second.report.findings} == FAULT


def test_a_query_stores_nothing(faulty: World) -> None:
    run = faulty.run("q-1", record=False)
    assert {f.key for f in run.report.findings} == FAULT and run.lifecycle is None
    assert not faulty.recon.run_exists("q-1") and faulty.checkpoint_run() is None
    assert faulty.recon.run_lifecycle("q-1") is None


def test_a_run_without_checkpoint_still_updates_the_lifecycle(faulty: World) -> None:
    # the partitioned job folds its partitions itself and never checkpoints, but its report feeds the lifecycle
    run = faulty.run("part-1", checkpoint=False)
    assert faulty.recon.run_exists("part-1") and faulty.checkpoint_run() is None
    assert run.lifecycle is not None and run.lifecycle.statuses == dict.fromkeys(FAULT, "new")


def test_one_entity_is_reconciled_alone_and_an_unknown_one_stores_nothing(faulty: World) -> None:
    run = faulty.run("one-1", scope="account:acc-b", entity=("account", "acc-b"))
    assert [f.key for f in run.report.findings] == [MISMATCH]  # no ledger for one entity
    assert run.lifecycle is None  # a partial scope never moves the lifecycle
    assert faulty.checkpoint_run() is None
    with pytest.raises(UnknownEntityError):
        faulty.run("one-2", scope="account:nobody", entity=("account", "nobody"))
    assert not faulty.recon.run_exists("one-2")


def test_a_stuck_transfer_and_a_corrupt_stream_are_findings() -> None:
    w = world(stuck_transfer_history(EventFactory(id_prefix="evt")))
    w.log.append_raw([RawRecord(w.log.topics.accounts, b"acc-z", b"{not json")])
    run = w.run("run-1")
    kinds = {(f.entity_id, f.kind) for f in run.report.findings}
    assert ("tx-2", Kind.STUCK) in kinds and ("acc-z", Kind.STREAM_CORRUPT) in kinds


def test_a_run_that_resumed_an_older_checkpoint_does_not_save_over_a_newer_one(faulty: World) -> None:
    faulty.run("run-1")
    resumed = replay_all(faulty.log, faulty.projections, options=OPTIONS, checkpoints=faulty.checkpoints)
    assert resumed.resumed_from == "run-1"
    faulty.run("run-3", full=True)  # another run checkpoints meanwhile
    late = run_reconciliation(faulty.stores, ReconciliationRequest("run-2", "test"), OPTIONS, replayed=resumed)
    assert late.report.stats["checkpoint_saved"] is False
    assert faulty.checkpoint_run() == "run-3"
    assert faulty.recon.run_exists("run-2")  # its report is stored all the same


# --- rebuilds ----------------------------------------------------------------------------------------------
def test_a_rebuild_repairs_what_the_latest_report_flagged_and_audits_it(faulty: World) -> None:
    faulty.run("run-1")
    result = rebuild(faulty.log, faulty.projections, faulty.recon, entity_type="account",
                     selection=RebuildSelection(), dry_run=False, reason="fix acc-b", actor="ada")
    assert [(c.entity_id, c.action) for c in result.changes] == [("acc-b", "update")]
    assert result.written == 1 and result.outcome == {"acc-b": "fixed"}
    assert faulty.projections.read_accounts(["acc-b"])["acc-b"] == fold(faulty.events).accounts["acc-b"].state()
    [operation] = faulty.recon.audit_operations()
    assert (operation["operation"], operation["outcome"], operation["actor"]) == ("rebuild_accounts", "applied", "ada")
    assert operation["completion_id"] == result.completion_id


def test_a_dry_run_plans_every_kind_of_change_and_writes_nothing(faulty: World) -> None:
    before = faulty.projections.read_accounts()
    ahead = msgspec.structs.replace(before["acc-a"], version=9)
    faulty.projections.upsert("account", [ahead])
    orphan = msgspec.structs.replace(before["acc-a"], account_id="acc-orphan")
    faulty.projections.upsert("account", [orphan])
    result = rebuild(faulty.log, faulty.projections, faulty.recon, entity_type="account",
                     selection=RebuildSelection(all=True), dry_run=True, reason="look", actor="ada")
    assert {c.entity_id: c.action for c in result.changes} == {
        "acc-a": "reset_ahead", "acc-b": "update", "acc-orphan": "kept_orphan"}
    assert faulty.projections.read_accounts()["acc-a"] == ahead  # nothing written
    assert faulty.recon.audit_records(1)[0]["outcome"] == "dry_run"


def test_a_row_ahead_is_reset_and_an_orphan_deleted_when_asked(faulty: World) -> None:
    row = faulty.projections.read_accounts(["acc-a"])["acc-a"]
    faulty.projections.upsert("account", [msgspec.structs.replace(row, version=9),
                                          msgspec.structs.replace(row, account_id="acc-orphan")])
    result = rebuild(faulty.log, faulty.projections, faulty.recon, entity_type="account",
                     selection=RebuildSelection(all=True), dry_run=False, reason="fix", actor="ada",
                     delete_orphans=True)
    assert result.written == 3  # acc-a reset, acc-b updated, acc-orphan deleted
    rows = faulty.projections.read_accounts()
    assert set(rows) == {"acc-a", "acc-b"} and rows["acc-a"].version == row.version


def test_a_rebuild_is_refused_while_another_holds_its_lock_and_the_refusal_is_audited(faulty: World) -> None:
    with faulty.projections.locks.rebuild("account"), pytest.raises(ConcurrentOperationError):
        rebuild(faulty.log, faulty.projections, faulty.recon, entity_type="account",
                selection=RebuildSelection(ids=("acc-b",)), dry_run=False, reason="fix", actor="ada")
    assert faulty.recon.audit_records(1)[0]["outcome"] == "refused"
    assert faulty.projections.read_accounts(["acc-b"])["acc-b"].balance_minor == 2_501  # untouched


def test_a_shadow_rebuild_swaps_in_the_repaired_rows(faulty: World) -> None:
    result = shadow_rebuild(faulty.log, faulty.projections, faulty.recon, reason="rebuild all", actor="ada",
                            approve=True)
    assert result.counts["account"] == {"repair": 1, "unchanged": 1}
    assert result.written == {"account": 1, "transaction": 0} and result.remaining == []
    assert faulty.projections.read_accounts(["acc-b"])["acc-b"].balance_minor == 2_500
    assert [o["outcome"] for o in faulty.recon.audit_operations()] == ["applied"]


# --- the live projector's lag ---------------------------------------------------------------------------------
def caught_up_but(w: World, account_id: str) -> dict[tuple[str, int], int]:
    """Offsets of a projector group that has read everything but `account_id`'s events (on its partition)."""
    ends = {tp: e.end for tp, e in w.log.exact_ends(w.log.all_partitions()).items()}
    [(tp, first)] = [((t, p), min(r.offset() for r in w.log.records((t, p)) if r.key() == account_id.encode()))
                     for t, p in ends if any(r.key() == account_id.encode() for r in w.log.records((t, p)))]
    return ends | {tp: first}


def test_a_missing_row_is_lagging_while_the_projector_has_not_read_its_events(faulty: World) -> None:
    faulty.projections.delete("account", ["acc-b"])
    faulty.log.commit("projector", caught_up_but(faulty, "acc-b"))
    options = ReconcileOptions(clock=lambda: NOW, projector_group="projector")
    behind = run_reconciliation(faulty.stores, ReconciliationRequest("q-1", "test", record=False), options)
    assert {f.kind for f in behind.report.findings if f.entity_id == "acc-b"} == {Kind.LAGGING}
    faulty.log.commit("projector", {tp: e.end for tp, e in faulty.log.exact_ends(faulty.log.all_partitions()).items()})
    read = run_reconciliation(faulty.stores, ReconciliationRequest("q-2", "test", record=False), options)
    assert {f.kind for f in read.report.findings if f.entity_id == "acc-b"} == {Kind.MISSING_PROJECTION}


def test_the_lag_counts_what_the_group_has_not_read_and_how_long_the_oldest_waited(faulty: World) -> None:
    offsets = caught_up_but(faulty, "acc-b")
    faulty.log.commit("projector", offsets)
    lag = measure_lag(faulty.log, "projector", now=NOW)
    ends = {tp: e.end for tp, e in faulty.log.exact_ends(faulty.log.all_partitions()).items()}
    [(tp, first)] = [(tp, o) for tp, o in offsets.items() if o < ends[tp]]
    assert lag.total == ends[tp] - first  # acc-b's events and whatever follows them on their partition
    opened = next(e for e in faulty.events if e.aggregate_id == "acc-b")
    assert lag.oldest_unapplied_at == opened.occurred_at and lag.oldest_unapplied_age == NOW - opened.occurred_at
    assert not lag_verdict(lag, LagThresholds(max_events=1, max_age=timedelta(days=2))).passed
    assert not lag_verdict(lag, LagThresholds(max_events=10, max_age=timedelta(hours=1))).passed
    assert lag_verdict(lag, LagThresholds(max_events=10, max_age=timedelta(days=2))).passed
    never = measure_lag(faulty.log, "a-group-that-never-committed", now=NOW)
    assert never.total == len(faulty.events)  # it would start at each partition's oldest record


# --- saga recovery and point in time -------------------------------------------------------------------------
def test_a_stuck_transfer_without_money_moved_is_failed_by_the_recovery() -> None:
    w = world(stuck_transfer_history(EventFactory(id_prefix="evt")))
    plan = plan_recovery(w.log, w.projections, w.recon, reason="stuck since yesterday", actor="ada",
                         clock=lambda: NOW)
    assert [(a.transaction_id, a.action) for a in plan.actions] == [("tx-2", "fail")]
    reviewed = load_plan(w.recon, plan.audit_id or 0)  # executed as it was reviewed: read back from the audit
    result = execute_plan(w.log, w.projections, w.recon, reviewed, reason="stuck since yesterday", actor="ada")
    assert result.appended == 1 and result.outcome == {"tx-2": "appended"}
    after = plan_recovery(w.log, w.projections, w.recon, reason="again", actor="ada", clock=lambda: NOW)
    assert after.actions == []  # failed now: no longer stuck


def test_balances_as_of_a_time_fold_only_what_occurred_by_then() -> None:
    stamp = {"ms": 0}
    log = InMemoryEventLog(Topics.with_prefix("fake."), clock_ms=lambda: stamp["ms"])
    for event in transfer_history(EventFactory(id_prefix="evt")):  # each record stamped when its event occurred
        stamp["ms"] = int(event.occurred_at.timestamp() * 1000)
        log.append([event])
    balances = balances_as_of(log, HISTORY_START + timedelta(minutes=1, seconds=30), clock_skew=timedelta(0))
    assert {b.account_id: b.balance_minor for b in balances.accounts} == {"acc-a": 10_000, "acc-b": 0}
    later = balances_as_of(log, HISTORY_START + timedelta(minutes=5), clock_skew=timedelta(0))
    assert {b.account_id: b.balance_minor for b in later.accounts} == {"acc-a": 7_500, "acc-b": 2_500}


@dataclass(frozen=True)
class RawRecord:
    """Bytes appended as they are (a poison record), as the Kafka adapter's `RawRecord`."""

    topic: str
    key: bytes | None
    value: bytes | None
