"""Builders for the contract's events and small histories, so tests say what they mean and not how an
envelope looks. The one builder library of the suite: unit, contract, integration and reliability tests.

Every event is made by `make_event`: event and aggregate type follow from the payload class, as the
contract says, and the schema version is 1. On top of it, two ways to write a history:

- `AccountStream` and `SagaStream` hand out consecutive versions, fresh event ids and advancing
  timestamps (a minute per version after `T0`) for one aggregate, for tests about one stream's rules;
- `EventFactory` writes a history across aggregates with explicit versions: event ids from a prefix and
  a counter (a fresh random prefix by default, so no two factories hand out the same id), `occurred_at`
  as minutes after a base time (or an explicit time).

`transfer_history` and `stuck_transfer_history` are the histories several test modules reconcile;
`fold` and `project` give and write what a caught-up live projector would have written.
`envelope_dict` / `to_wire` give the JSON shape of an event, for tests that corrupt the wire format.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec

from billing_domain.core.accounts import AccountAggregate
from billing_domain.core.events import (
    AGGREGATE_TYPE_OF,
    AccountClosed,
    AccountCredited,
    AccountDebited,
    AccountLimitsChanged,
    AccountOpened,
    AccountReactivated,
    AccountSuspended,
    Event,
    Payload,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
)
from billing_domain.core.transactions import TransactionAggregate

if TYPE_CHECKING:  # only `project` writes, and the pure tests never import an adapter
    from billing_domain.adapters.postgres.projection_store import ProjectionStore

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
"""The start of `AccountStream` and `SagaStream` when none is given."""
HISTORY_START = datetime(2026, 3, 1, tzinfo=UTC)
"""The base time of an `EventFactory`, and so of `transfer_history` and `stuck_transfer_history`, when none is
given."""
_ids = itertools.count(1)


def new_event_id() -> str:
    """A unique, readable event id (a UUID-shaped string, as on the wire)."""
    return f"00000000-0000-4000-8000-{next(_ids):012d}"


def make_event(payload: Payload, *, aggregate_id: str, version: int, event_id: str | None = None,
               occurred_at: datetime | None = None, correlation_id: str | None = None) -> Event:
    """One event; event_type and aggregate_type follow from the payload class, as the contract says."""
    event_type = type(payload).__name__
    return Event(
        event_id=event_id or new_event_id(),
        event_type=event_type,
        schema_version=1,
        aggregate_type=cast(Literal["account", "transaction"], AGGREGATE_TYPE_OF[event_type]),
        aggregate_id=aggregate_id,
        aggregate_version=version,
        occurred_at=occurred_at or T0 + timedelta(seconds=version),
        correlation_id=correlation_id,
        payload=payload,
    )


# --- one aggregate's stream ------------------------------------------------------------------------
class _Stream:
    def __init__(self, aggregate_id: str, start: datetime = T0) -> None:
        self.aggregate_id = aggregate_id
        self.events: list[Event] = []
        self._start = start

    @property
    def next_version(self) -> int:
        return len(self.events) + 1

    def add(self, payload: Payload, *, correlation_id: str | None = None, version: int | None = None) -> Event:
        """Append the next event (or one at an explicit version, to build broken streams)."""
        v = self.next_version if version is None else version
        event = make_event(payload, aggregate_id=self.aggregate_id, version=v,
                           occurred_at=self._start + timedelta(minutes=v), correlation_id=correlation_id)
        self.events.append(event)
        return event


class AccountStream(_Stream):
    """Events of one account, in version order."""

    def __init__(self, account_id: str = "acc-1", start: datetime = T0) -> None:
        super().__init__(account_id, start)

    def opened(self, *, owner_id: str = "owner-1", currency: str = "EUR", min_balance_minor: int = 0,
               max_balance_minor: int = 1_000_000) -> Event:
        return self.add(AccountOpened(owner_id, currency, min_balance_minor, max_balance_minor))

    def credited(self, amount_minor: int, reason: str = "deposit", transaction_id: str | None = None) -> Event:
        return self.add(AccountCredited(amount_minor, transaction_id, reason),  # type: ignore[arg-type]
                        correlation_id=transaction_id)

    def debited(self, amount_minor: int, reason: str = "withdrawal", transaction_id: str | None = None) -> Event:
        return self.add(AccountDebited(amount_minor, transaction_id, reason),  # type: ignore[arg-type]
                        correlation_id=transaction_id)

    def limits_changed(self, min_balance_minor: int, max_balance_minor: int) -> Event:
        return self.add(AccountLimitsChanged(min_balance_minor, max_balance_minor))

    def suspended(self, reason: str = "kyc review") -> Event:
        return self.add(AccountSuspended(reason))

    def reactivated(self) -> Event:
        return self.add(AccountReactivated())

    def closed(self) -> Event:
        return self.add(AccountClosed())


class SagaStream(_Stream):
    """Events of one transfer saga, in version order; every step carries the transaction id."""

    def __init__(self, transaction_id: str = "tx-1", start: datetime = T0) -> None:
        super().__init__(transaction_id, start)

    def initiated(self, *, source: str = "acc-1", destination: str = "acc-2", amount_minor: int = 2_500,
                  currency: str = "EUR") -> Event:
        return self.add(TransactionInitiated(source, destination, amount_minor, currency),
                        correlation_id=self.aggregate_id)

    def completed(self) -> Event:
        return self.add(TransactionCompleted(), correlation_id=self.aggregate_id)

    def failed(self, reason: str = "insufficient funds") -> Event:
        return self.add(TransactionFailed(reason), correlation_id=self.aggregate_id)

    def compensated(self) -> Event:
        return self.add(TransactionCompensated(), correlation_id=self.aggregate_id)


# --- a history across aggregates -------------------------------------------------------------------
class EventFactory:
    """Builds the events of one hand-written history.

    `factory("acc-a", 2, AccountCredited(10_000, None, "deposit"), 1)` is version 2 of acc-a, one minute
    after the base time; pass `at=` for an explicit time instead.
    """

    def __init__(self, base_time: datetime = HISTORY_START, id_prefix: str | None = None) -> None:
        self.base_time = base_time
        self.id_prefix = f"evt-{uuid.uuid4().hex[:8]}" if id_prefix is None else id_prefix
        self._ids = itertools.count()

    def next_id(self) -> str:
        return f"{self.id_prefix}-{next(self._ids)}"

    def __call__(self, aggregate_id: str, version: int, payload: Payload, minutes: float = 0,
                 correlation: str | None = None, *, at: datetime | None = None) -> Event:
        if at is not None and minutes:
            raise TypeError("give either minutes (after the base time) or at, not both")
        occurred_at = self.base_time + timedelta(minutes=minutes) if at is None else at
        return make_event(payload, aggregate_id=aggregate_id, version=version, event_id=self.next_id(),
                          occurred_at=occurred_at, correlation_id=correlation)


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


# --- what a caught-up projector would have written -------------------------------------------------
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


# --- the wire --------------------------------------------------------------------------------------
def envelope_dict(event: Event) -> dict[str, Any]:
    """The event as the plain JSON object the engine puts on the wire."""
    return cast(dict[str, Any], json.loads(msgspec.json.encode(event)))


def to_wire(document: Any) -> bytes:
    """A JSON document as message-value bytes."""
    return json.dumps(document).encode("utf-8")
