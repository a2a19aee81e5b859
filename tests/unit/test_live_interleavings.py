"""A healthy engine, read mid-flight, gives only `lagging`; the same gaps outside the lag window are faults.

An in-memory interleaving, not a fault in a server: hypothesis writes a random engine history (accounts,
deposits, withdrawals and whole sagas, their events in the engine's order), lets a projector apply each
event a moment after it occurred (always less than the lag window), and reads the way a run does: the
projections at R, the transaction topic a moment later, the account topic a moment after that. Whatever
the history, the delay and the moments, the report has only `lagging` findings and every identity holds.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from support.builders import T0, make_event

from billing_domain.config import Topics
from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.cut import Cut
from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    Payload,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
)
from billing_domain.core.exceptions import EventPosition
from billing_domain.core.findings import Kind, ReconciliationReport
from billing_domain.core.lag import LagJudge
from billing_domain.core.replay import Replay
from billing_domain.core.transactions import TransactionAggregate, TransactionState
from billing_domain.services.reconcile import ReconcileOptions, ReplayOutcome, build_report

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "billing-recon-hypothesis")
TOPICS = Topics.with_prefix("live.")
WINDOW = timedelta(seconds=60)
OPTIONS = ReconcileOptions(stuck_after=timedelta(days=1), lag_window=WINDOW)


@dataclass
class Engine:
    """Writes a clean history in the engine's order; `log` is (event, topic) in append order."""

    now: datetime = T0
    log: list[tuple[Event, str]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)

    def emit(self, aggregate_id: str, payload: Payload, gap_s: float, correlation_id: str | None = None) -> None:
        self.now += timedelta(seconds=gap_s)
        version = self.versions[aggregate_id] = self.versions.get(aggregate_id, 0) + 1
        event = make_event(payload, aggregate_id=aggregate_id, version=version, occurred_at=self.now,
                           correlation_id=correlation_id)
        topic = TOPICS.transactions if aggregate_id.startswith("tx-") else TOPICS.accounts
        self.log.append((event, topic))

    def open(self, account_id: str, gap_s: float) -> None:
        self.emit(account_id, AccountOpened("owner", "EUR", 0, 10_000_000), gap_s)
        self.balances[account_id] = 0

    def deposit(self, account_id: str, amount: int, gap_s: float) -> None:
        self.emit(account_id, AccountCredited(amount, None, "deposit"), gap_s)
        self.balances[account_id] += amount

    def transfer(self, number: int, source: str, destination: str, amount: int, ending: str, gap_s: float) -> None:
        tx = f"tx-{number}"
        self.emit(tx, TransactionInitiated(source, destination, amount, "EUR"), gap_s, tx)
        if ending == "failed" or self.balances[source] < amount:
            self.emit(tx, TransactionFailed("insufficient funds"), gap_s, tx)
            return
        if ending == "pending_unpaid":
            return
        self.emit(source, AccountDebited(amount, tx, "transfer_out"), gap_s, tx)
        self.balances[source] -= amount
        if ending == "pending":
            return
        if ending == "compensated":
            self.emit(source, AccountCredited(amount, tx, "refund"), gap_s, tx)
            self.balances[source] += amount
            self.emit(tx, TransactionCompensated(), gap_s, tx)
            return
        self.emit(destination, AccountCredited(amount, tx, "transfer_in"), gap_s, tx)
        self.balances[destination] += amount
        self.emit(tx, TransactionCompleted(), gap_s, tx)


ENDINGS = ("completed", "failed", "compensated", "pending", "pending_unpaid")
operations = st.lists(st.tuples(st.sampled_from(("deposit", "transfer", "transfer")), st.integers(0, 3),
                                st.integers(0, 3), st.integers(1, 500), st.sampled_from(ENDINGS),
                                st.floats(0.0, 4.0)), min_size=1, max_size=25)


def write_history(ops: list[tuple[str, int, int, int, str, float]]) -> Engine:
    engine = Engine()
    accounts = [f"acc-{i}" for i in range(4)]
    for account_id in accounts:
        engine.open(account_id, 0.5)
        engine.deposit(account_id, 5_000, 0.2)  # enough that most transfers go through
    for number, (kind, a, b, amount, ending, gap_s) in enumerate(ops):
        if kind == "deposit":
            engine.deposit(accounts[a], amount, gap_s)
        elif a != b:
            engine.transfer(number, accounts[a], accounts[b], amount, ending, gap_s)
    return engine


def rows_applied_by(log: list[tuple[Event, str]], applied_at: list[datetime], read_at: datetime
                    ) -> tuple[dict[str, AccountState], dict[str, TransactionState]]:
    """What the projector had written when the projections were read: every event applied by then."""
    accounts: dict[str, AccountAggregate] = {}
    transactions: dict[str, TransactionAggregate] = {}
    for (event, _), applied in zip(log, applied_at, strict=True):
        if applied > read_at:
            continue
        target: dict = accounts if event.aggregate_type == "account" else transactions  # type: ignore[type-arg]
        kind = AccountAggregate if event.aggregate_type == "account" else TransactionAggregate
        target.setdefault(event.aggregate_id, kind(event.aggregate_id)).apply(event)
    return ({k: a.state() for k, a in accounts.items()}, {k: t.state() for k, t in transactions.items()})


def reconcile_mid_flight(engine: Engine, delay: timedelta, read_at: datetime, topic_gaps: tuple[float, float],
                         judge: LagJudge | None = None) -> ReconciliationReport:
    """Rows at `read_at`; then the transaction topic, then the account topic, each read a moment later."""
    applied_at = [event.occurred_at + delay for event, _ in engine.log]
    account_rows, transaction_rows = rows_applied_by(engine.log, applied_at, read_at)
    read_until = {TOPICS.transactions: read_at + timedelta(seconds=topic_gaps[0]),
                  TOPICS.accounts: read_at + timedelta(seconds=sum(topic_gaps))}
    replay = Replay(TOPICS, account_versions={k: r.version for k, r in account_rows.items()},
                    transaction_versions={k: r.version for k, r in transaction_rows.items()})
    for topic in (TOPICS.transactions, TOPICS.accounts):
        on_topic = [event for event, t in engine.log if t == topic]
        replay.feed_events((event, EventPosition(topic, 0, offset)) for offset, event in enumerate(on_topic)
                           if event.occurred_at <= read_until[topic])
    outcome = ReplayOutcome(replay, Cut(), account_rows, transaction_rows,
                            judge=judge or LagJudge(read_at, WINDOW))
    return build_report(outcome, run_id="mid-flight", scope="all", started_at=read_at, options=OPTIONS)


@settings(max_examples=300, deadline=None, database=None)
@given(ops=operations, delay_fraction=st.floats(0.0, 0.999), read_fraction=st.floats(0.0, 1.2),
       topic_gaps=st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 5.0)))
def test_a_healthy_engine_read_mid_flight_gives_only_lagging(
        ops: list[tuple[str, int, int, int, str, float]], delay_fraction: float, read_fraction: float,
        topic_gaps: tuple[float, float]) -> None:
    engine = write_history(ops)
    span = engine.now - T0
    read_at = T0 + span * read_fraction
    report = reconcile_mid_flight(engine, WINDOW * delay_fraction, read_at, topic_gaps)
    assert [f for f in report.findings if f.kind != Kind.LAGGING] == []
    assert all(identity.holds for identity in report.ledger), report.ledger


def _one_transfer(ending: str = "completed") -> Engine:
    engine = Engine()
    engine.open("acc-0", 1)
    engine.open("acc-1", 1)
    engine.deposit("acc-0", 1_000, 1)
    engine.transfer(7, "acc-0", "acc-1", 400, ending, 1)
    return engine


def _kinds(report: ReconciliationReport) -> set[tuple[str, str]]:
    return {(f.entity_id, f.kind.value) for f in report.findings}


def test_a_transfer_not_projected_inside_the_window_is_lagging_and_outside_it_missing() -> None:
    engine = _one_transfer()
    started = engine.log[3][0].occurred_at  # TransactionInitiated
    never = timedelta(days=365)  # the projector never applies anything after the history's start
    inside = reconcile_mid_flight(engine, never, started + WINDOW - timedelta(seconds=1), (0, 0))
    assert ("tx-7", "lagging") in _kinds(inside) and ("tx-7", "missing_projection") not in _kinds(inside)
    [lagging] = [f for f in inside.findings if f.entity_id == "tx-7"]
    assert "not projected yet" in lagging.detail and "59.0 s before the read" in lagging.detail
    outside = reconcile_mid_flight(engine, never, started + WINDOW + timedelta(seconds=1), (0, 0))
    assert ("tx-7", "missing_projection") in _kinds(outside)
    assert ("acc-0", "missing_projection") in _kinds(outside)  # opened well before: a real fault


def test_legs_read_after_a_pending_status_are_lagging_inside_the_window_and_a_mismatch_outside() -> None:
    engine = _one_transfer()
    completed = engine.log[-1][0].occurred_at
    # Read the transaction topic just before TransactionCompleted, the account topic after the transfer_in.
    read_at = completed - timedelta(seconds=0.5)
    inside = reconcile_mid_flight(engine, timedelta(0), read_at, (0.0, 2.0))
    assert ("tx-7", "saga_mismatch") not in _kinds(inside)
    assert ("tx-7", "lagging") in _kinds(inside)
    assert all(identity.holds for identity in inside.ledger)
    # The same view judged a window later: the transfer_in is old news, the pending status a real mismatch.
    late = LagJudge(read_at + WINDOW + timedelta(seconds=5), WINDOW)
    outside = reconcile_mid_flight(engine, timedelta(0), read_at, (0.0, 2.0), judge=late)
    assert ("tx-7", "saga_mismatch") in _kinds(outside)


def test_a_projector_group_that_committed_past_an_event_makes_its_absence_a_fault_however_recent() -> None:
    engine = _one_transfer()
    read_at = engine.now + timedelta(seconds=1)
    account_events = [event for event, topic in engine.log if topic == TOPICS.accounts]
    # The projector applied nothing of acc-0's deposit (offset 2), but committed past every account event.
    committed = {(TOPICS.accounts, 0): len(account_events), (TOPICS.transactions, 0): 0}
    judge = LagJudge(read_at, WINDOW, "billing-projector", committed)
    lost = [e for e, _ in engine.log if e.aggregate_id == "acc-0" and e.aggregate_version >= 2]
    engine_lost = Engine(log=[(e, t) for e, t in engine.log if e not in lost])
    report = _with_rows_of(engine_lost, engine, read_at, judge)
    acc0 = [f for f in report.findings if f.entity_id == "acc-0"]
    assert [f.kind for f in acc0] == [Kind.FIELD_MISMATCH] and "billing-projector committed" in acc0[0].detail
    # Its transactions are above the committed offsets: not applied yet, merely lagging.
    assert {f.kind for f in report.findings if f.entity_id == "tx-7"} == {Kind.LAGGING}


def _with_rows_of(projected: Engine, logged: Engine, read_at: datetime, judge: LagJudge) -> ReconciliationReport:
    """The rows of `projected`'s events (all applied) against the whole log of `logged`."""
    account_rows, _ = rows_applied_by(projected.log, [e.occurred_at for e, _ in projected.log], read_at)
    replay = Replay(TOPICS, account_versions={k: r.version for k, r in account_rows.items()},
                    transaction_versions={})
    for topic in (TOPICS.transactions, TOPICS.accounts):
        on_topic = [event for event, t in logged.log if t == topic]
        replay.feed_events((event, EventPosition(topic, 0, offset)) for offset, event in enumerate(on_topic))
    outcome = ReplayOutcome(replay, Cut(), account_rows, {}, judge=judge)
    return build_report(outcome, run_id="group", scope="all", started_at=read_at, options=OPTIONS)


def test_a_transfer_pending_on_a_quiet_log_is_stuck_once_the_clock_passes_the_threshold() -> None:
    engine = _one_transfer("pending")
    initiated = engine.log[3][0].occurred_at
    options = ReconcileOptions(stuck_after=timedelta(minutes=5), lag_window=WINDOW)
    for minutes, stuck in ((4, False), (6, True), (60, True)):
        read_at = initiated + timedelta(minutes=minutes)
        applied = [e.occurred_at for e, _ in engine.log]
        account_rows, transaction_rows = rows_applied_by(engine.log, applied, read_at)
        replay = Replay(TOPICS, account_versions={k: r.version for k, r in account_rows.items()},
                        transaction_versions={k: r.version for k, r in transaction_rows.items()})
        for topic in (TOPICS.transactions, TOPICS.accounts):
            replay.feed_events((e, EventPosition(topic, 0, i)) for i, e in enumerate(
                [e for e, t in engine.log if t == topic]))
        outcome = ReplayOutcome(replay, Cut(), account_rows, transaction_rows, judge=LagJudge(read_at, WINDOW))
        report = build_report(outcome, run_id="quiet", scope="all", started_at=read_at, options=options)
        found = [f for f in report.findings if f.kind == Kind.STUCK]
        assert bool(found) is stuck, (minutes, report.findings)
        if stuck:
            assert f"pending for {minutes - 0:.1f} min" in found[0].detail  # measured on the run's clock
            assert found[0].actual is not None and found[0].actual["cut_time"] == replay.cut_time.isoformat()
