"""A small hand-built history for the admin API tests, with two known faults in the account projections.

Three EUR accounts, a deposit, a completed transfer (tx-1) and a transfer pending 26 minutes at the
cut (tx-2: stuck). Faults: acc-a's balance +7 (balance_mismatch), acc-c's row deleted (missing_projection).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from billing_domain.accounts import AccountAggregate
from billing_domain.adapters.postgres import ProjectionStore
from billing_domain.events import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    Payload,
    TransactionCompleted,
    TransactionInitiated,
)
from billing_domain.transactions import TransactionAggregate

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _event(aggregate_id: str, version: int, payload: Payload, minutes: int = 0, correlation: str | None = None
           ) -> Event:
    kind = "transaction" if type(payload).__name__.startswith("Transaction") else "account"
    return Event(str(uuid.uuid4()), type(payload).__name__, 1, kind, aggregate_id, version,
                 T0 + timedelta(minutes=minutes), correlation, payload)


def history() -> list[Event]:
    return [
        _event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
        _event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
        _event("acc-c", 1, AccountOpened("owner-c", "EUR", 0, 1_000_000)),
        _event("acc-a", 2, AccountCredited(10_000, None, "deposit"), 1),
        _event("tx-1", 1, TransactionInitiated("acc-a", "acc-b", 2_500, "EUR"), 2),
        _event("acc-a", 3, AccountDebited(2_500, "tx-1", "transfer_out"), 2, "tx-1"),
        _event("acc-b", 2, AccountCredited(2_500, "tx-1", "transfer_in"), 2, "tx-1"),
        _event("tx-1", 2, TransactionCompleted(), 3),
        _event("tx-2", 1, TransactionInitiated("acc-b", "acc-c", 100, "EUR"), 4),
        _event("acc-b", 3, AccountCredited(1_000, None, "deposit"), 30),  # the cut's time: tx-2 is stuck
    ]


def project_with_faults(events: list[Event], projections: ProjectionStore) -> None:
    """What a live projector would have written, then the two faults."""
    by_id: dict[str, list[Event]] = {}
    for e in events:
        by_id.setdefault(e.aggregate_id, []).append(e)
    with projections.engine.begin() as conn:
        projections.upsert_accounts(conn, [AccountAggregate.from_events(v).state()
                                           for k, v in by_id.items() if k.startswith("acc")])
        projections.upsert_transactions(conn, [TransactionAggregate.from_events(v).state()
                                               for k, v in by_id.items() if k.startswith("tx")])
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 "
                             "WHERE account_id = 'acc-a'")
        conn.exec_driver_sql("DELETE FROM billing.account_projection WHERE account_id = 'acc-c'")
