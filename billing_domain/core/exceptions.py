"""One exception hierarchy for the whole domain: every error we raise is a `BillingError`."""

from __future__ import annotations

from dataclasses import dataclass


class BillingError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(BillingError):
    """Settings, run config or command-line input that cannot be used; names the field to fix."""


class OptimisticLockError(BillingError):
    """A row changed between the moment we read it and the guarded write (compare-and-set lost)."""


class InvariantViolationError(BillingError):
    """An aggregate's state breaks a business rule of the contract."""

    def __init__(self, aggregate_id: str, invariant: str, detail: str, version: int) -> None:
        super().__init__(f"{aggregate_id} v{version}: {invariant}: {detail}")
        self.aggregate_id = aggregate_id
        self.invariant = invariant
        self.detail = detail
        self.version = version


class ProjectionOutOfSyncError(BillingError):
    """A projection row does not match the state its events describe."""


@dataclass(frozen=True, slots=True)
class EventPosition:
    """Where a message sits in the event store: enough for an operator to fetch it again."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class EventDecodeError(BillingError):
    """A message that is not a valid event of the contract (a poison event)."""

    def __init__(
        self, reason: str, *, position: EventPosition | None, event_id: str | None, field: str | None,
        key: str | None = None,
    ) -> None:
        where = str(position) if position else "<no position>"
        super().__init__(f"{where} event_id={event_id or '?'} field={field or '?'}: {reason}")
        self.reason = reason
        self.position = position
        self.event_id = event_id
        self.field = field
        self.key = key


class StreamCorruptionError(BillingError):
    """An aggregate's stream breaks the stream rules: a version gap or two events with one version."""

    def __init__(self, aggregate_id: str, reason: str, *, expected_version: int, got_version: int,
                 event_id: str, position: EventPosition | None = None, field: str | None = None) -> None:
        where = f" at {position}" if position else ""
        super().__init__(f"{aggregate_id}: {reason} (expected v{expected_version}, got v{got_version}, "
                         f"event_id={event_id}){where}")
        self.aggregate_id = aggregate_id
        self.reason = reason
        self.expected_version = expected_version
        self.got_version = got_version
        self.event_id = event_id
        self.position = position
        self.field = field  # the envelope field that breaks the rule, for the finding


class EventStoreError(BillingError):
    """The event store could not do what was asked (delivery failed, topic missing, ...)."""


class EventStoreUnavailableError(EventStoreError):
    """The broker could not be reached; transient, retried by the retry policy."""


class CheckpointUnreadableError(BillingError):
    """A checkpoint blob that does not decode (damaged or edited by hand): never trusted; the run replays
    from the start of the log instead and says why."""


class RebuildRefusedError(BillingError):
    """A rebuild that must not run (corrupt stream, invariant break, concurrent rebuild...)."""


class ConcurrentOperationError(BillingError):
    """Another rebuild or recovery holds the lock on the same entities."""


class UnknownEntityError(BillingError):
    """An entity asked for by id has no events and no projection row (nothing to reconcile)."""

    def __init__(self, entity_type: str, entity_id: str) -> None:
        super().__init__(f"no {entity_type} {entity_id!r}: it has neither events nor a projection row")
        self.entity_type = entity_type
        self.entity_id = entity_id
