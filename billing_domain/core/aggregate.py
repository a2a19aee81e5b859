"""What every aggregate shares: the stream rules of the contract.

Version n+1 follows n; a redelivered event (same `event_id` at a version already applied) is
ignored; a different event at a used version, or a gap, is `StreamCorruptionError` and the event
is not applied. Subclasses supply one small mutator per event type.

Memory is bounded by the events applied, never by the numbers in them: the ids of applied events
are kept as 8-byte digests in one byte string plus, only once a gap was folded across, the start of
each run of consecutive versions. A gap of 2**31 versions costs one list entry, not 2**31.

A stored id is only ever compared (is this event a redelivery of the one at its version?), so a
digest does: 8 bytes a version instead of a Python string of ~85. Only the last id is kept as text,
for the projection row's `last_event_id`. Two different ids share a digest with odds of 2**-64.
"""

from __future__ import annotations

import bisect
import hashlib
import operator
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Self

import msgspec

from billing_domain.core.events import Event, Payload
from billing_domain.core.exceptions import EventPosition, StreamCorruptionError

DIGEST_SIZE = 8  # bytes per applied version in `Aggregate.event_digests`


def event_digest(event_id: str) -> bytes:
    """The digest an aggregate keeps of an event id: stable across processes (a checkpoint stores it)."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=DIGEST_SIZE).digest()


class Aggregate:
    """A fold of one aggregate's events. `version` is the last applied `aggregate_version`."""

    __slots__ = ("_applying", "aggregate_id", "event_digests", "last_event_id", "partition", "runs", "updated_at",
                 "version", "violations")
    mutators: ClassVar[dict[type[Payload], Callable[[Aggregate, Event], None]]] = {}

    def __init__(self, aggregate_id: str) -> None:
        self.aggregate_id = aggregate_id
        self.version = 0
        # The digests of the applied events' ids (`event_digest`), in version order: they tell a
        # redelivery (same id) from a conflicting event (another id at a used version). While `runs` is
        # None the stream has no hole and digest number v - 1 is version v's; else `runs` holds [first
        # version, its digest's number] for each run of consecutive versions (see `event_digest_at`).
        self.event_digests = bytearray()
        self.last_event_id: str | None = None  # as text: the projection row's `last_event_id`
        self.runs: list[list[int]] | None = None
        # The partition the stream started on (the replay's rule: one aggregate, one partition).
        self.partition: int | None = None
        self.updated_at: datetime | None = None
        # Nearly every aggregate breaks no rule: the empty tuple is shared, where an empty list each was
        # 56 bytes an aggregate (150 MiB at a million accounts with their transfers).
        self.violations: Sequence[str] = ()
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
    def applied_count(self) -> int:
        """How many versions have a digest kept (the events applied, or the hydrated start)."""
        return len(self.event_digests) // DIGEST_SIZE

    def event_digest_at(self, version: int) -> bytes | None:
        """The digest of the id of the event applied at `version`; None for a version never applied (in a
        gap, before a hydrated start, above the head, or not a version at all)."""
        count, runs = self.applied_count, self.runs
        if runs is None:
            return self._digest(version - 1) if 0 < version <= count else None
        run = bisect.bisect_right(runs, version, key=operator.itemgetter(0)) - 1
        if run < 0:
            return None
        index = runs[run][1] + version - runs[run][0]
        end = runs[run + 1][1] if run + 1 < len(runs) else count
        return self._digest(index) if index < end else None

    def holds_event_at(self, version: int, event_id: str) -> bool:
        """Was this very event (by id) applied at `version`: is another copy of it a redelivery?"""
        return self.event_digest_at(version) == event_digest(event_id)

    def _digest(self, index: int) -> bytes:
        return bytes(self.event_digests[index * DIGEST_SIZE:(index + 1) * DIGEST_SIZE])

    def start_at(self, version: int, last_event_id: str | None) -> None:
        """Stand at `version` knowing only its event id (a projection row), ready for version + 1."""
        self.version = version
        # No id (a row without one) stands as "", whose digest no event's (non-empty) id has.
        self.last_event_id = (last_event_id or "") if version > 0 else None
        self.event_digests = bytearray(event_digest(self.last_event_id) if self.last_event_id is not None else b"")
        self.runs = [[version, 0]] if version > 1 else None

    def apply(self, event: Event, position: EventPosition | None = None) -> bool:
        """Apply one event. Returns False for a redelivery, which changes nothing."""
        expected = self.version + 1
        got = event.aggregate_version
        if got != expected:
            if got < expected and self.holds_event_at(got, event.event_id):
                return False
            raise StreamCorruptionError(self.aggregate_id, self._off_sequence(got), expected_version=expected,
                                        got_version=got, event_id=event.event_id, position=position,
                                        field="aggregate_version")
        self._applying = got
        self._mutate(event)
        self._record(event)
        return True

    def _record(self, event: Event) -> None:
        """The event is applied: it is the head now."""
        self.version = event.aggregate_version
        self.event_digests += event_digest(event.event_id)
        self.last_event_id = event.event_id
        self.updated_at = event.occurred_at

    def _off_sequence(self, got: int) -> str:
        if got > self.version:
            return "version gap"
        if got < 1:
            return f"aggregate_version {got} is not a version (versions start at 1)"
        if self.event_digest_at(got) is None:
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
        broken = self.violations if isinstance(self.violations, list) else list(self.violations)
        broken.append(f"v{self._applying}: {rule}")
        self.violations = broken

    def apply_across_gap(self, event: Event) -> None:
        """Apply an event that follows a version gap (already reported) so the fold can go on."""
        self._applying = event.aggregate_version
        self._mutate(event)
        if event.aggregate_version > self.version + 1:  # a new run starts: remember where, not the hole
            if self.runs is None:
                self.runs = [[1, 0]]
            self.runs.append([event.aggregate_version, self.applied_count])
        self._record(event)


def state_json(state: msgspec.Struct) -> dict[str, Any]:
    """A projection row's state (`AccountState`, `TransactionState`) as JSON values: datetimes in ISO 8601."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in msgspec.structs.asdict(state).items()}
