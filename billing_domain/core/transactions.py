"""The transfer saga: a fold of its transaction events and the legal status moves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

import msgspec

from billing_domain.core.aggregate import Aggregate
from billing_domain.core.events import (
    Event,
    Payload,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
)
from billing_domain.core.exceptions import InvariantViolationError, StreamCorruptionError

PENDING, COMPLETED, FAILED, COMPENSATED = "pending", "completed", "failed", "compensated"
# The contract's only legal moves: pending -> completed | failed | compensated.
LEGAL_MOVES: dict[str, frozenset[str]] = {PENDING: frozenset({COMPLETED, FAILED, COMPENSATED})}


# A frozen msgspec Struct, not a frozen dataclass: one is built per projection row read and per state
# planned, and a frozen dataclass's __init__ (a setattr per field) took 0.75 us against 0.05 us.
class TransactionState(msgspec.Struct, frozen=True):
    """The columns of `billing.transaction_projection` that the events determine."""

    transaction_id: str
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str
    status: str
    failure_reason: str | None
    version: int
    initiated_at: datetime | None
    updated_at: datetime | None


class TransactionAggregate(Aggregate):
    """A transfer saga's own stream (the money moves live on the account streams)."""

    __slots__ = ("amount_minor", "currency", "destination_account_id", "failure_reason", "initiated_at",
                 "source_account_id", "status")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.source_account_id = ""
        self.destination_account_id = ""
        self.amount_minor = 0
        self.currency = ""
        self.status = ""
        self.failure_reason: str | None = None
        self.initiated_at: datetime | None = None

    def state(self) -> TransactionState:
        return TransactionState(self.aggregate_id, self.source_account_id, self.destination_account_id,
                                self.amount_minor, self.currency, self.status, self.failure_reason,
                                self.version, self.initiated_at, self.updated_at)

    def validate_invariants(self) -> None:
        """Raise `InvariantViolationError` if the saga ever made an illegal status move."""
        if self.violations:
            raise InvariantViolationError(self.aggregate_id, "illegal saga move", "; ".join(self.violations),
                                          self.version)

    def _mutate(self, event: Event) -> None:
        if self.version == 0 and not isinstance(event.payload, TransactionInitiated):
            raise StreamCorruptionError(self.aggregate_id, f"saga starts with {event.event_type}, not "
                                        "TransactionInitiated", expected_version=1,
                                        got_version=event.aggregate_version, event_id=event.event_id,
                                        field="event_type")
        super()._mutate(event)

    def _initiated(self, event: Event) -> None:
        payload = event.payload
        assert isinstance(payload, TransactionInitiated)
        if event.aggregate_version != 1:
            raise StreamCorruptionError(self.aggregate_id, "TransactionInitiated is not version 1",
                                        expected_version=1, got_version=event.aggregate_version,
                                        event_id=event.event_id, field="aggregate_version")
        self.source_account_id = payload.source_account_id
        self.destination_account_id = payload.destination_account_id
        self.amount_minor = payload.amount_minor
        self.currency = payload.currency
        self.status = PENDING
        self.initiated_at = event.occurred_at

    def _move_to(self, status: str) -> None:
        if status not in LEGAL_MOVES.get(self.status, frozenset()):
            self._violate(f"illegal move {self.status} -> {status}")
        self.status = status

    def _completed(self, event: Event) -> None:
        self._move_to(COMPLETED)

    def _failed(self, event: Event) -> None:
        payload = event.payload
        assert isinstance(payload, TransactionFailed)
        self._move_to(FAILED)
        self.failure_reason = payload.reason

    def _compensated(self, event: Event) -> None:
        self._move_to(COMPENSATED)

    mutators: ClassVar[dict[type[Payload], Callable[[Aggregate, Event], None]]] = {
        TransactionInitiated: _initiated,  # type: ignore[dict-item]
        TransactionCompleted: _completed,  # type: ignore[dict-item]
        TransactionFailed: _failed,  # type: ignore[dict-item]
        TransactionCompensated: _compensated,  # type: ignore[dict-item]
    }
