"""What every aggregate shares: the stream rules of the contract.

Version n+1 follows n; a redelivered event (same `event_id` at a version already applied) is
ignored; a different event at a used version, or a gap, is `StreamCorruptionError` and the event
is not applied. Subclasses supply one small mutator per event type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar, Self

import msgspec

from billing_domain.events import Event, Payload
from billing_domain.exceptions import EventPosition, StreamCorruptionError


class Aggregate:
    """A fold of one aggregate's events. `version` is the last applied `aggregate_version`."""

    __slots__ = ("_applying", "aggregate_id", "event_ids", "updated_at", "version", "violations")
    mutators: ClassVar[dict[type[Payload], Callable[[Aggregate, Event], None]]] = {}

    def __init__(self, aggregate_id: str) -> None:
        self.aggregate_id = aggregate_id
        self.version = 0
        # event_ids[v - 1] is the id of the event applied at version v: it tells a redelivery
        # (same id) from a conflicting event (another id at a used version).
        self.event_ids: list[str] = []
        self.updated_at: datetime | None = None
        self.violations: list[str] = []
        self._applying = 0  # aggregate_version of the event being applied, for violation labels

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Self:
        """Fold events into a new aggregate; the id comes from the first event."""
        aggregate: Self | None = None
        for event in events:
            if aggregate is None:
                aggregate = cls(event.aggregate_id)
            aggregate.apply(event)
        if aggregate is None:
            raise ValueError(f"{cls.__name__}.from_events needs at least one event")
        return aggregate

    @property
    def last_event_id(self) -> str | None:
        return self.event_ids[-1] if self.event_ids else None

    def apply(self, event: Event, position: EventPosition | None = None) -> bool:
        """Apply one event. Returns False for a redelivery, which changes nothing."""
        expected = self.version + 1
        got = event.aggregate_version
        if got != expected:
            if got < expected and self.event_ids[got - 1] == event.event_id:
                return False
            reason = "version gap" if got > expected else "a different event with a used version"
            raise StreamCorruptionError(self.aggregate_id, reason, expected_version=expected,
                                        got_version=got, event_id=event.event_id, position=position)
        self._applying = got
        self._mutate(event)
        self.version = got
        self.event_ids.append(event.event_id)
        self.updated_at = event.occurred_at
        return True

    def _mutate(self, event: Event) -> None:
        mutator = self.mutators.get(type(event.payload))
        if mutator is None:
            raise StreamCorruptionError(self.aggregate_id, f"{event.event_type} does not belong to a "
                                        f"{type(self).__name__}", expected_version=self.version + 1,
                                        got_version=event.aggregate_version, event_id=event.event_id)
        mutator(self, event)

    def _violate(self, rule: str) -> None:
        """Record a broken business rule; the fold goes on so the replay sees the whole stream."""
        self.violations.append(f"v{self._applying}: {rule}")

    def apply_across_gap(self, event: Event) -> None:
        """Apply an event that follows a version gap (already reported) so the fold can go on."""
        self._applying = event.aggregate_version
        self._mutate(event)
        self.version = event.aggregate_version
        self.event_ids.extend([""] * (event.aggregate_version - len(self.event_ids) - 1))
        self.event_ids.append(event.event_id)
        self.updated_at = event.occurred_at


def state_json(state: msgspec.Struct) -> dict[str, Any]:
    """A projection row's state (`AccountState`, `TransactionState`) as JSON values: datetimes in ISO 8601."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in msgspec.structs.asdict(state).items()}
