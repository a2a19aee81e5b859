"""Delta reconciliation gives the report a full replay gives, after any mix of changes to the log and the rows.

Each round changes a faulted simulated history the ways production does (new events, some projected and
some not, a redelivery, a poison event, a jump in time that makes pending transfers stuck, manual edits,
deletions, an orphan row, a repaired row), then reconciles twice: the daily way (which must take the delta
path) and a full replay from the start. Findings and ledger identities must be identical.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.builders import EventFactory
from support.clock import TestClock

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_changes import ReadMark, projection_snapshot, read_mark
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.checkpoint import topics_key
from billing_domain.core.events import AccountCredited, AccountDebited
from billing_domain.core.findings import ReconciliationReport
from billing_domain.core.transactions import PENDING
from billing_domain.services.reconcile import ReconcileOptions, build_report, reconcile_all, replay_all, save_checkpoint
from billing_sandbox.simulate import SimulationConfig, simulate

# The run's clock, moved by the tests to the newest event they wrote: `stuck` is judged by it, and a full
# replay and a delta run must be judged at the same moment to give the same report.
CLOCK = TestClock(datetime(2026, 1, 1, tzinfo=UTC))
OPTIONS = ReconcileOptions(clock=CLOCK)


@pytest.fixture
def recon(projection_store: ProjectionStore) -> ReconStore:
    store = ReconStore(projection_store.engine)
    store.migrate()
    return store


def _daily(event_store: KafkaEventStore, projections: ProjectionStore, recon: ReconStore) -> ReconciliationReport:
    """What the daily job does: reconcile from the checkpoint, store the report."""
    report = reconcile_all(event_store, projections, checkpoints=CheckpointStore(recon.engine), options=OPTIONS,
                           reports=recon)
    recon.save_report(report, source="test")
    return report


def _from_scratch(event_store: KafkaEventStore, projections: ProjectionStore) -> ReconciliationReport:
    outcome = replay_all(event_store, projections, full=True, options=OPTIONS)
    return build_report(outcome, run_id="full", scope="all", started_at=datetime.now(UTC), options=OPTIONS)


def _assert_same(delta: ReconciliationReport, full: ReconciliationReport) -> None:
    assert delta.stats["replay_mode"] == "delta", delta.stats["replay_mode_reason"]
    assert [f.to_json() for f in delta.findings] == [f.to_json() for f in full.findings]
    assert [asdict(i) for i in delta.ledger] == [asdict(i) for i in full.ledger]
    for name in ("accounts", "transactions", "account_rows", "transaction_rows"):
        assert delta.stats[name] == full.stats[name], name


def _change_everything(rng: random.Random, event_store: KafkaEventStore, projections: ProjectionStore,
                       round_no: int, broken_before: str | None) -> str:
    """Change the log and the rows; put right the row `broken_before` broke; return the row this round broke."""
    replay = replay_all(event_store, projections, full=True).replay  # the test's own view of the heads
    assert replay.cut_time is not None
    healthy = sorted(a for a, acc in replay.accounts.items()
                     if acc.status == "active" and acc.version > 0 and not acc.violations
                     and not replay.is_corrupt("account", a))
    event = EventFactory(replay.cut_time, id_prefix=f"delta{round_no}")
    chosen = rng.sample(healthy, 12)
    events = []
    for i, account_id in enumerate(chosen):
        account = replay.accounts[account_id]
        payload = (AccountCredited(rng.randint(1, 900), None, "deposit") if i % 3 else
                   AccountDebited(min(account.balance_minor, 5), None, "fee"))
        events.append(event(account_id, account.version + 1, payload, minutes=1 + i))
        account.apply(events[-1])
    # Far later: every transfer still pending is now stuck.
    late = chosen[0]
    events.append(event(late, replay.accounts[late].version + 1, AccountCredited(1, None, "deposit"),
                        at=replay.cut_time + timedelta(days=2)))
    replay.accounts[late].apply(events[-1])
    event_store.append([*events, events[1]])  # ...and one delivered twice
    event_store.append_raw([RawRecord(event_store.topics.accounts, chosen[-1].encode(), b"{not json")])
    with projections.engine.begin() as conn:
        projections.upsert_accounts(conn, [replay.accounts[a].state() for a in chosen[:-3]])  # the rest lag

    untouched = [a for a in healthy if a not in chosen and a != broken_before]
    # (the rows picked below may repeat across rounds: a row edited twice, or deleted then edited, is fine)
    edited, deleted, copied = untouched[0], untouched[10], untouched[20]
    transactions = sorted(t for t, saga in replay.transactions.items() if saga.status != PENDING)
    with projections.engine.begin() as conn:
        run = conn.exec_driver_sql
        run("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 WHERE account_id = %(a)s",
            {"a": edited})
        run("DELETE FROM billing.account_projection WHERE account_id = %(a)s", {"a": deleted})
        run("INSERT INTO billing.account_projection SELECT %(n)s, owner_id, currency, balance_minor, min_balance_minor,"
            " max_balance_minor, status, version, last_event_id, updated_at FROM billing.account_projection "
            "WHERE account_id = %(a)s", {"n": f"orphan-{round_no}", "a": copied})
        if round_no == 0:  # a row in another currency than its account's, left so for the later rounds
            run("UPDATE billing.account_projection SET currency = 'XTS' WHERE account_id = %(a)s",
                {"a": untouched[30]})
        run("UPDATE billing.transaction_projection SET status = 'failed' WHERE transaction_id = %(t)s",
            {"t": transactions[round_no]})
        run("DELETE FROM billing.transaction_projection WHERE transaction_id = %(t)s",
            {"t": transactions[-1 - round_no]})
    if broken_before is not None:  # put right by hand: its finding must go
        with projections.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor - 7 "
                                 "WHERE account_id = %(a)s", {"a": broken_before})
    return edited


@pytest.mark.parametrize("seed", [3, 11])
def test_a_delta_run_reports_exactly_what_a_full_replay_reports(
        seed: int, event_store: KafkaEventStore, projection_store: ProjectionStore, recon: ReconStore) -> None:
    simulate(event_store, projection_store, SimulationConfig(seed=seed, accounts=80, days=1))
    CLOCK.set_to_newest_event(event_store, projection_store)
    first = _daily(event_store, projection_store, recon)
    assert first.stats["replay_mode"] == "full"
    rng = random.Random(seed)
    broken: str | None = None
    for round_no in range(3):
        broken = _change_everything(rng, event_store, projection_store, round_no, broken)
        CLOCK.set_to_newest_event(event_store, projection_store)
        _assert_same(_daily(event_store, projection_store, recon), _from_scratch(event_store, projection_store))


def test_with_nothing_changed_a_delta_run_carries_the_whole_report(
        event_store: KafkaEventStore, projection_store: ProjectionStore, recon: ReconStore) -> None:
    simulate(event_store, projection_store, SimulationConfig(seed=5, accounts=60, days=1))
    CLOCK.set_to_newest_event(event_store, projection_store)
    first = _daily(event_store, projection_store, recon)
    again = _daily(event_store, projection_store, recon)
    _assert_same(again, first)
    # Judged again at each run's read, never carried: stuck (pending transfers) and lagging.
    rejudged = sum(1 for f in first.findings if f.kind.value in ("stuck", "lagging"))
    assert rejudged > 0
    assert again.stats["findings_carried"] >= len([f for f in first.findings if f.entity_type != "ledger"]) - rejudged
    assert again.stats["entities_diffed"] < again.stats["accounts"] // 4


def test_without_the_previous_report_every_entity_is_diffed_and_says_why(
        event_store: KafkaEventStore, projection_store: ProjectionStore, recon: ReconStore) -> None:
    simulate(event_store, projection_store, SimulationConfig(seed=5, accounts=40, days=1))
    CLOCK.set_to_newest_event(event_store, projection_store)
    reconcile_all(event_store, projection_store, checkpoints=CheckpointStore(recon.engine),
                  options=OPTIONS)  # report not stored
    again = _daily(event_store, projection_store, recon)
    assert again.stats["replay_mode"] == "incremental"
    assert "is not stored" in again.stats["replay_mode_reason"]
    _assert_same(_daily(event_store, projection_store, recon), _from_scratch(event_store, projection_store))


def test_rows_written_after_a_read_are_the_changed_ones(projection_store: ProjectionStore) -> None:
    rows = [_row(f"acc-{i}") for i in range(20)]
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql(_INSERT, rows)
    before = read_mark(projection_store.engine)
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = 1 WHERE account_id = 'acc-3'")
        conn.exec_driver_sql(_INSERT, [_row("acc-new")])
    with projection_snapshot(projection_store.engine) as snapshot:
        assert snapshot.changed_ids("account", before.xmin) == {"acc-3", "acc-new"}
        assert snapshot.ids("account") == {f"acc-{i}" for i in range(20)} | {"acc-new"}
        assert snapshot.why_not_comparable(before) is None
        elsewhere = snapshot.why_not_comparable(ReadMark(before.xmin, "16384@another server start"))
        assert elsewhere is not None and "not the one the last run read" in elsewhere
        assert snapshot.balance_sums() == {"EUR": (1 + 100 * 19 + 100, 21)}


_INSERT = ("INSERT INTO billing.account_projection VALUES (%(account_id)s, 'o', 'EUR', 100, 0, 1000, 'active', 1, "
           "NULL, now())")


def _row(account_id: str) -> dict[str, Any]:
    return {"account_id": account_id}


def test_a_run_that_resumed_does_not_save_over_a_checkpoint_written_meanwhile(
        event_store: KafkaEventStore, projection_store: ProjectionStore, recon: ReconStore) -> None:
    simulate(event_store, projection_store, SimulationConfig(seed=9, accounts=30, days=1))
    checkpoints = CheckpointStore(recon.engine)
    _daily(event_store, projection_store, recon)
    slow = replay_all(event_store, projection_store, checkpoints=checkpoints, delta=True,
                      reports=recon)  # run A resumes...
    assert slow.mode == "delta"
    with checkpoints.reading() as view:
        seen = view.header(topics_key(event_store.topics.all()))
        fast = _daily(event_store, projection_store, recon)  # ...run B saves meanwhile...
        assert view.header(seen.topics).run_id == seen.run_id  # (a view keeps the checkpoint it began with)
    late = build_report(slow, run_id="slow", scope="all", started_at=datetime.now(UTC))
    save_checkpoint(event_store, checkpoints, slow, "slow", late)  # ...and A's save must not land over B's
    assert late.stats["checkpoint_saved"] is False
    header = checkpoints.header(seen.topics)
    assert header is not None and header.run_id == fast.run_id
