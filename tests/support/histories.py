"""Small hand-written histories of the billing engine, for the integration tests.

`EventFactory` builds the envelopes: event ids from a prefix and a counter (a fresh random prefix by
default, so no two factories hand out the same id), `occurred_at` as minutes after a base time (or an
explicit time), and event and aggregate type following from the payload class as the contract says.
`transfer_history` and `stuck_transfer_history` are the histories several test modules reconcile;
`fold` and `project` give and write what a caught-up live projector would have written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Literal, cast

from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.accounts import AccountAggregate
from billing_domain.core.events import (
    AGGREGATE_TYPE_OF,
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    Payload,
    TransactionCompleted,
    TransactionInitiated,
)
from billing_domain.core.transactions import TransactionAggregate

HISTORY_START = datetime(2026, 3, 1, tzinfo=UTC)
"""The base time of `transfer_history` and `stuck_transfer_history` when no factory is given."""


class EventFactory:
    """Builds the events of one hand-written history.

    `factory("acc-a", 2, AccountCredited(10_000, None, "deposit"), 1)` is version 2 of acc-a, one minute
    after the base time; pass `at=` for an explicit time instead.
    """

    def __init__(self, base_time: datetime = HISTORY_START, id_prefix: str | None = None) -> None:
        self.base_time = base_time
        self.id_prefix = f"evt-{uuid.uuid4().hex[:8]}" if id_prefix is None else id_prefix
        self._ids = count()

    def next_id(self) -> str:
        return f"{self.id_prefix}-{next(self._ids)}"

    def __call__(self, aggregate_id: str, version: int, payload: Payload, minutes: float = 0,
                 correlation: str | None = None, *, at: datetime | None = None) -> Event:
        if at is not None and minutes:
            raise TypeError("give either minutes (after the base time) or at, not both")
        event_type = type(payload).__name__
        aggregate_type = cast(Literal["account", "transaction"], AGGREGATE_TYPE_OF[event_type])
        occurred_at = self.base_time + timedelta(minutes=minutes) if at is None else at
        return Event(self.next_id(), event_type, 1, aggregate_type, aggregate_id, version, occurred_at, correlation,
                     payload)


def transfer_history(event: EventFactory | None = None) -> list[Event]:
    """Two EUR accounts (acc-a, acc-b), a deposit of 10_000 to acc-a at minute 1 and a transfer tx-1 of 2_500
    from acc-a to acc-b: initiated, debited and credited at minute 2, completed at minute 3."""
    event = event or EventFactory()
    return [
        event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
        event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
        event("acc-a", 2, AccountCredited(10_000, None, "deposit"), 1),
        event("tx-1", 1, TransactionInitiated("acc-a", "acc-b", 2_500, "EUR"), 2),
        event("acc-a", 3, AccountDebited(2_500, "tx-1", "transfer_out"), 2, "tx-1"),
        event("acc-b", 2, AccountCredited(2_500, "tx-1", "transfer_in"), 2, "tx-1"),
        event("tx-1", 2, TransactionCompleted(), 3),
    ]


def stuck_transfer_history(event: EventFactory | None = None) -> list[Event]:
    """`transfer_history` with a third EUR account (acc-c, opened third), then a transfer tx-2 of 100 from acc-b
    to acc-c initiated at minute 4 and a deposit of 1_000 to acc-b at minute 30, the cut's time: tx-2 is
    pending 26 minutes at the cut (stuck)."""
    event = event or EventFactory()
    opened_a, opened_b, *transfer = transfer_history(event)
    return [
        opened_a,
        opened_b,
        event("acc-c", 1, AccountOpened("owner-c", "EUR", 0, 1_000_000)),
        *transfer,
        event("tx-2", 1, TransactionInitiated("acc-b", "acc-c", 100, "EUR"), 4),
        event("acc-b", 3, AccountCredited(1_000, None, "deposit"), 30),
    ]


@dataclass(frozen=True)
class Folded:
    """Every aggregate of some events, folded, by id (in the order each first appears)."""

    accounts: dict[str, AccountAggregate]
    transactions: dict[str, TransactionAggregate]


def fold(events: Iterable[Event]) -> Folded:
    """Fold each aggregate's events, in the order given."""
    accounts: dict[str, list[Event]] = {}
    transactions: dict[str, list[Event]] = {}
    for e in events:
        (accounts if e.aggregate_type == "account" else transactions).setdefault(e.aggregate_id, []).append(e)
    return Folded({k: AccountAggregate.from_events(v) for k, v in accounts.items()},
                  {k: TransactionAggregate.from_events(v) for k, v in transactions.items()})


def project(events: Iterable[Event], projections: ProjectionStore) -> None:
    """Write the folded state of every aggregate of `events`, in one transaction, as a live projector would."""
    folded = fold(events)
    with projections.engine.begin() as conn:
        projections.upsert_accounts(conn, [a.state() for a in folded.accounts.values()])
        projections.upsert_transactions(conn, [t.state() for t in folded.transactions.values()])
