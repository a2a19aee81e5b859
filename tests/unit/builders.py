"""Builders for the contract's events, so tests say what they mean and not how an envelope looks.

`AccountStream` and `SagaStream` hand out consecutive versions, fresh event ids and advancing
timestamps for one aggregate; `make_event` builds a single event with full control of the envelope.
`envelope_dict` / `to_wire` give the JSON shape of an event, for tests that corrupt the wire format.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

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

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
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
        aggregate_type=AGGREGATE_TYPE_OF[event_type],  # type: ignore[arg-type]
        aggregate_id=aggregate_id,
        aggregate_version=version,
        occurred_at=occurred_at or T0 + timedelta(seconds=version),
        correlation_id=correlation_id,
        payload=payload,
    )


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


def envelope_dict(event: Event) -> dict[str, Any]:
    """The event as the plain JSON object the engine puts on the wire."""
    return json.loads(msgspec.json.encode(event))


def to_wire(document: Any) -> bytes:
    """A JSON document as message-value bytes."""
    return json.dumps(document).encode("utf-8")
