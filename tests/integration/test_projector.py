"""The live projector against the real broker and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.accounts import AccountAggregate
from billing_domain.core.events import (
    AccountCredited,
    AccountOpened,
    Event,
    Payload,
    TransactionInitiated,
    decode_event,
)
from billing_domain.core.transactions import TransactionAggregate
from billing_sandbox.projector import LiveProjector
from billing_sandbox.simulate.history import HistoryGenerator, SimulationConfig

START = datetime(2026, 1, 1, tzinfo=UTC)


def _event(aggregate_id: str, version: int, payload: Payload) -> Event:
    kind = "transaction" if isinstance(payload, TransactionInitiated) else "account"
    return Event(f"{aggregate_id}-v{version}", type(payload).__name__, 1, kind, aggregate_id, version,
                 START + timedelta(seconds=version), None, payload)


def _opened(account_id: str) -> Event:
    return _event(account_id, 1, AccountOpened("owner", "EUR", 0, 10_000_000))


def _deposit(account_id: str, version: int, amount: int = 100) -> Event:
    return _event(account_id, version, AccountCredited(amount, None, "deposit"))


@pytest.fixture
def projectors(event_store: KafkaEventStore, engine: Engine,
               projection_store: ProjectionStore) -> Iterator[list[LiveProjector]]:
    """Projectors started by a test, closed after it (a closed member leaves its group at once)."""
    started: list[LiveProjector] = []
    yield started
    for projector in started:
        projector.close()


def _start(projectors: list[LiveProjector], event_store: KafkaEventStore, engine: Engine,
           group_id: str = "projector-test") -> LiveProjector:
    projector = LiveProjector(event_store, engine, group_id=group_id)
    projectors.append(projector)
    return projector


def _folded(event_store: KafkaEventStore) -> tuple[dict[str, AccountAggregate], dict[str, TransactionAggregate]]:
    events = [decode_event(m.value(), m.key()) for batch in event_store.read_cut() for m in batch]
    accounts: dict[str, AccountAggregate] = {}
    transactions: dict[str, TransactionAggregate] = {}
    for event in events:
        if event.aggregate_type == "account":
            accounts.setdefault(event.aggregate_id, AccountAggregate(event.aggregate_id)).apply(event)
        else:
            transactions.setdefault(event.aggregate_id, TransactionAggregate(event.aggregate_id)).apply(event)
    return accounts, transactions


def test_projector_applies_a_history_to_exactly_the_folded_state(
        event_store: KafkaEventStore, engine: Engine, projection_store: ProjectionStore,
        projectors: list[LiveProjector]) -> None:
    generator = HistoryGenerator(SimulationConfig(seed=3, accounts=60, days=1))
    appended = event_store.append(generator.events())

    applied = _start(projectors, event_store, engine).run_until_caught_up()

    accounts, transactions = _folded(event_store)
    assert applied == appended
    assert projection_store.read_accounts() == {k: a.state() for k, a in accounts.items()}
    assert projection_store.read_transactions() == {k: t.state() for k, t in transactions.items()}


def test_redelivered_events_are_applied_once(event_store: KafkaEventStore, engine: Engine,
                                             projection_store: ProjectionStore,
                                             projectors: list[LiveProjector]) -> None:
    events = [_opened("acc-1"), _deposit("acc-1", 2, 100), _deposit("acc-1", 3, 50)]
    event_store.append([events[0], events[1], events[1], events[2], events[2]])

    applied = _start(projectors, event_store, engine).run_until_caught_up()

    row = projection_store.read_accounts()["acc-1"]
    assert applied == 3
    assert (row.balance_minor, row.version, row.last_event_id) == (150, 3, "acc-1-v3")


def test_a_version_gap_is_not_applied(event_store: KafkaEventStore, engine: Engine,
                                      projection_store: ProjectionStore, projectors: list[LiveProjector]) -> None:
    event_store.append([_opened("acc-1"), _deposit("acc-1", 2), _deposit("acc-1", 4, 7)])
    event_store.append([_deposit("acc-2", 2)])  # no row and not version 1: a gap too

    applied = _start(projectors, event_store, engine).run_until_caught_up()

    rows = projection_store.read_accounts()
    assert applied == 2
    assert list(rows) == ["acc-1"]
    assert (rows["acc-1"].version, rows["acc-1"].balance_minor) == (2, 100)


def test_caught_up_projectors_apply_only_new_events_and_resume_from_committed_offsets(
        event_store: KafkaEventStore, engine: Engine, projection_store: ProjectionStore,
        projectors: list[LiveProjector]) -> None:
    event_store.append([_opened("acc-1"), _deposit("acc-1", 2)])
    projector = _start(projectors, event_store, engine)
    assert projector.run_until_caught_up() == 2
    assert projector.run_until_caught_up() == 0

    event_store.append([_deposit("acc-1", 3)])
    assert projector.run_until_caught_up() == 1
    projector.close()
    projectors.remove(projector)

    restarted = _start(projectors, event_store, engine)
    assert restarted.run_until_caught_up() == 0
    assert projection_store.read_accounts()["acc-1"].version == 3


def test_offsets_are_committed_only_after_the_database_commit(
        event_store: KafkaEventStore, engine: Engine, projection_store: ProjectionStore,
        projectors: list[LiveProjector]) -> None:
    event_store.append([_opened("acc-1"), _deposit("acc-1", 2), _opened("acc-2")])
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE billing.account_projection RENAME TO account_projection_away"))
    failing = _start(projectors, event_store, engine)
    with pytest.raises(sa.exc.ProgrammingError):
        failing.run_until_caught_up()
    failing.close()
    projectors.remove(failing)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE billing.account_projection_away RENAME TO account_projection"))

    assert _start(projectors, event_store, engine).run_until_caught_up() == 3
    assert {k: r.version for k, r in projection_store.read_accounts().items()} == {"acc-1": 2, "acc-2": 1}


def test_undecodable_messages_are_skipped_and_the_rest_applied(
        event_store: KafkaEventStore, engine: Engine, projection_store: ProjectionStore,
        projectors: list[LiveProjector]) -> None:
    event_store.append([_opened("acc-1")])
    event_store.append_raw([RawRecord(event_store.topics.accounts, b"acc-1", b"\xffgarbage")])
    event_store.append([_deposit("acc-1", 2)])

    assert _start(projectors, event_store, engine).run_until_caught_up() == 2
    assert projection_store.read_accounts()["acc-1"].balance_minor == 100


def test_run_in_a_background_thread_follows_live_appends(
        event_store: KafkaEventStore, engine: Engine, projection_store: ProjectionStore,
        projectors: list[LiveProjector]) -> None:
    projector = _start(projectors, event_store, engine)
    stop = threading.Event()
    thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        saga = TransactionInitiated("acc-1", "acc-2", 500, "EUR")
        event_store.append([_opened("acc-1"), _deposit("acc-1", 2), _event("tx-1", 1, saga)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "tx-1" not in projection_store.read_transactions():
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(10)
    assert projection_store.read_transactions()["tx-1"].status == "pending"
    assert projection_store.read_accounts()["acc-1"].balance_minor == 100
