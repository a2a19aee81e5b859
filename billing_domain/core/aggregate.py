"""What every aggregate shares: the stream rules of the contract.

Version n+1 follows n; a redelivered event (same `event_id` at a version already applied) is
ignored; a different event at a used version, or a gap, is `StreamCorruptionError` and the event
is not applied. Subclasses supply one small mutator per event type.

Memory is bounded by the events applied, never by the numbers in them: the ids of applied events
are kept in one list plus, only once a gap was folded across, the start of each run of consecutive
versions. A gap of 2**31 versions costs one list entry, not 2**31.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar, Self

import msgspec

from billing_domain.core.events import Event, Payload
from billing_domain.core.exceptions import EventPosition, StreamCorruptionError


class Aggregate:
    """A fold of one aggregate's events. `version` is the last applied `aggregate_version`."""

    __slots__ = ("_applying", "aggregate_id", "event_ids", "partition", "runs", "updated_at", "version",
                 "violations")
    mutators: ClassVar[dict[type[Payload], Callable[[Aggregate, Event], None]]] = {}

    def __init__(self, aggregate_id: str) -> None:
        self.aggregate_id = aggregate_id
        self.version = 0
        # The ids of the applied events, in version order: they tell a redelivery (same id) from a
        # conflicting event (another id at a used version). While `runs` is None the stream has no
        # hole and event_ids[v - 1] is version v's id; else `runs` holds [first version, its index in
        # event_ids] for each run of consecutive versions (see `event_id_at`).
        self.event_ids: list[str] = []
        self.runs: list[list[int]] | None = None
        # The partition the stream started on (the replay's rule: one aggregate, one partition).
        self.partition: int | None = None
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

    def event_id_at(self, version: int) -> str | None:
        """The id of the event applied at `version`; None for a version never applied (in a gap,
        before a hydrated start, above the head, or not a version at all)."""
        ids, runs = self.event_ids, self.runs
        if runs is None:
            return ids[version - 1] if 0 < version <= len(ids) else None
        run = bisect.bisect_right(runs, version, key=operator.itemgetter(0)) - 1
        if run < 0:
            return None
        index = runs[run][1] + version - runs[run][0]
        end = runs[run + 1][1] if run + 1 < len(runs) else len(ids)
        return ids[index] if index < end else None

    def start_at(self, version: int, last_event_id: str | None) -> None:
        """Stand at `version` knowing only its event id (a projection row), ready for version + 1."""
        self.version = version
        self.event_ids = [last_event_id or ""] if version > 0 else []
        self.runs = [[version, 0]] if version > 1 else None

    def apply(self, event: Event, position: EventPosition | None = None) -> bool:
        """Apply one event. Returns False for a redelivery, which changes nothing."""
        expected = self.version + 1
        got = event.aggregate_version
        if got != expected:
            if got < expected and self.event_id_at(got) == event.event_id:
                return False
            raise StreamCorruptionError(self.aggregate_id, self._off_sequence(got), expected_version=expected,
                                        got_version=got, event_id=event.event_id, position=position,
                                        field="aggregate_version")
        self._applying = got
        self._mutate(event)
        self.version = got
        self.event_ids.append(event.event_id)
        self.updated_at = event.occurred_at
        return True

    def _off_sequence(self, got: int) -> str:
        if got > self.version:
            return "version gap"
        if got < 1:
            return f"aggregate_version {got} is not a version (versions start at 1)"
        if self.event_id_at(got) is None:
            return "an event at a version skipped by an earlier gap"
        return "a different event with a used version"

    def _mutate(self, event: Event) -> None:
        mutator = self.mutators.get(type(event.payload))
        if mutator is None:
            raise StreamCorruptionError(self.aggregate_id, f"{event.event_type} does not belong to a "
                                        f"{type(self).__name__}", expected_version=self.version + 1,
                                        got_version=event.aggregate_version, event_id=event.event_id,
                                        field="event_type")
        mutator(self, event)

    def _violate(self, rule: str) -> None:
        """Record a broken business rule; the fold goes on so the replay sees the whole stream."""
        self.violations.append(f"v{self._applying}: {rule}")

    def apply_across_gap(self, event: Event) -> None:
        """Apply an event that follows a version gap (already reported) so the fold can go on."""
        self._applying = event.aggregate_version
        self._mutate(event)
        if event.aggregate_version > self.version + 1:  # a new run starts: remember where, not the hole
            if self.runs is None:
                self.runs = [[1, 0]]
            self.runs.append([event.aggregate_version, len(self.event_ids)])
        self.version = event.aggregate_version
        self.event_ids.append(event.event_id)
        self.updated_at = event.occurred_at


def state_json(state: msgspec.Struct) -> dict[str, Any]:
    """A projection row's state (`AccountState`, `TransactionState`) as JSON values: datetimes in ISO 8601."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in msgspec.structs.asdict(state).items()}
