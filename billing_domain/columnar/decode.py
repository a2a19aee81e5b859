"""The batch decoder: a list of log records into columns, accepting exactly what `decode_event` accepts.

Every value goes through the strict msgspec decoder itself (`core.events.decode_event`): a second,
vectorised JSON parser would be a second definition of the contract to keep in step with the first, and
what it could not vouch for would have to come back here anyway. What this module adds is the columnar
shape: one pass over the batch gathers the fields the fold needs into flat lists (`FoldColumns`), and
`DecodedBatch.frame()` gives every field of the envelope and its payload as a typed Polars frame.

Money stays integer: the strict decoder already refuses an amount or a limit outside PostgreSQL's
bigint (a poison event naming the field), so every amount fits Int64, and the frame is built with
`strict=True` so that a value that did not fit would raise instead of wrapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import polars as pl

from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountLimitsChanged,
    AccountOpened,
    AccountSuspended,
    Event,
    TransactionFailed,
    TransactionInitiated,
    decode_event,
)
from billing_domain.core.exceptions import EventDecodeError
from billing_domain.core.records import LogRecord, Topics
from billing_domain.core.replay import poison_entity_id

# The event types as small integers: the fold compares codes, not strings.
EVENT_TYPES: Final = ("AccountOpened", "AccountCredited", "AccountDebited", "AccountLimitsChanged",
                      "AccountSuspended", "AccountReactivated", "AccountClosed", "TransactionInitiated",
                      "TransactionCompleted", "TransactionFailed", "TransactionCompensated")
KIND: Final = {name: code for code, name in enumerate(EVENT_TYPES)}
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND: Final = timedelta(microseconds=1)
REASONS: Final = ("deposit", "transfer_in", "refund", "adjustment", "withdrawal", "transfer_out", "fee")
REASON: Final = {name: code for code, name in enumerate(REASONS)}
NO_REASON: Final = -1
NO_AMOUNT: Final = 0  # the amount column of an event that moves no money

# (entity type, entity id): what a record belongs to, as the reference replay would file it.
EntityKey = tuple[str, str]


@dataclass(slots=True)
class FoldColumns:
    """The per-event columns the fold reads, for the records that decoded, in log order."""

    index: list[int] = field(default_factory=list)  # the record's place in the batch
    entity: list[int] = field(default_factory=list)  # a code per (aggregate_type, aggregate_id)
    kind: list[int] = field(default_factory=list)  # `KIND` of the event type
    version: list[int] = field(default_factory=list)
    partition: list[int] = field(default_factory=list)
    in_place: list[bool] = field(default_factory=list)  # keyed, and on its aggregate type's topic
    amount: list[int] = field(default_factory=list)  # amount_minor of a money event or a transfer, else 0
    min_balance: list[int | None] = field(default_factory=list)  # of AccountOpened and AccountLimitsChanged
    max_balance: list[int | None] = field(default_factory=list)
    occurred_us: list[int] = field(default_factory=list)  # occurred_at, microseconds since the epoch (UTC)
    reason: list[int] = field(default_factory=list)  # `REASON` of a money event's reason, else NO_REASON


@dataclass(slots=True)
class DecodedBatch:
    """A batch decoded: the events (None where refused), the refusals, and the fold's columns."""

    records: Sequence[LogRecord]
    events: list[Event | None]
    refused: dict[int, EventDecodeError]  # record index -> the strict decoder's error
    columns: FoldColumns
    entity_keys: list[EntityKey]  # entity code -> (entity type, entity id)
    poisoned: set[int]  # entity codes with a refused record

    def frame(self) -> pl.DataFrame:
        """Every decoded event as one row of typed columns: the envelope, the record's place, the payload."""
        rows = [(i, e) for i, e in enumerate(self.events) if e is not None]
        return pl.DataFrame(_frame_columns(self.records, rows), schema=FRAME_SCHEMA, strict=True)


FRAME_SCHEMA: Final[dict[str, pl.DataType | type[pl.DataType]]] = {
    "topic": pl.String, "partition": pl.Int32, "offset": pl.Int64, "key": pl.Binary, "event_id": pl.String,
    "event_type": pl.String, "schema_version": pl.Int64, "aggregate_type": pl.String, "aggregate_id": pl.String,
    "version": pl.Int64, "occurred_at": pl.Datetime("us", "UTC"), "correlation_id": pl.String,
    "amount_minor": pl.Int64, "currency": pl.String, "owner_id": pl.String, "min_balance_minor": pl.Int64,
    "max_balance_minor": pl.Int64, "transaction_id": pl.String, "reason": pl.String,
    "source_account_id": pl.String, "destination_account_id": pl.String,
}
PAYLOAD_COLUMNS: Final = ("amount_minor", "currency", "owner_id", "min_balance_minor", "max_balance_minor",
                          "transaction_id", "reason", "source_account_id", "destination_account_id")


def decode_batch(records: Sequence[LogRecord], topics: Topics) -> DecodedBatch:
    """Decode every record with the strict decoder; gather the fold's columns in the same pass."""
    events: list[Event | None] = []
    refused: dict[int, EventDecodeError] = {}
    columns = FoldColumns()
    codes: dict[EntityKey, int] = {}
    poisoned: set[int] = set()
    for index, record in enumerate(records):
        key = record.key()
        try:
            event = decode_event(record.value(), key)
        except EventDecodeError as exc:
            events.append(None)
            refused[index] = exc
            poisoned.add(codes.setdefault(_poison_entity(record, exc, topics), len(codes)))
            continue
        events.append(event)
        entity = codes.setdefault((event.aggregate_type, event.aggregate_id), len(codes))
        # The reference applies only keyed events on their type's topic; a record with no partition never
        # settles a stream's home partition there, so it is left to the reference too.
        in_place = key is not None and record.partition() is not None and _on_its_topic(record, event, topics)
        _gather(columns, index, entity, event, record, in_place)
    return DecodedBatch(records, events, refused, columns, list(codes), poisoned)


def _poison_entity(record: LogRecord, exc: EventDecodeError, topics: Topics) -> EntityKey:
    """The entity the reference replay files a poison record under (`Replay._poison`)."""
    entity_type = "account" if record.topic() == topics.accounts else "transaction"
    return (entity_type, poison_entity_id(exc, record))


def _on_its_topic(record: LogRecord, event: Event, topics: Topics) -> bool:
    expected = topics.accounts if event.aggregate_type == "account" else topics.transactions
    return record.topic() == expected


def _gather(columns: FoldColumns, index: int, entity: int, event: Event, record: LogRecord, in_place: bool) -> None:
    payload = event.payload
    columns.index.append(index)
    columns.entity.append(entity)
    columns.kind.append(KIND[event.event_type])
    columns.version.append(event.aggregate_version)
    columns.partition.append(record.partition() or 0)
    columns.in_place.append(in_place)
    kind = type(payload)
    if kind is AccountCredited or kind is AccountDebited:
        columns.amount.append(payload.amount_minor)  # type: ignore[attr-defined]
        columns.reason.append(REASON[payload.reason])  # type: ignore[attr-defined]
    else:
        columns.amount.append(payload.amount_minor if kind is TransactionInitiated else NO_AMOUNT)  # type: ignore[attr-defined]
        columns.reason.append(NO_REASON)
    if kind is AccountOpened or kind is AccountLimitsChanged:
        columns.min_balance.append(payload.min_balance_minor)  # type: ignore[attr-defined]
        columns.max_balance.append(payload.max_balance_minor)  # type: ignore[attr-defined]
    else:
        columns.min_balance.append(None)
        columns.max_balance.append(None)
    columns.occurred_us.append((event.occurred_at - EPOCH) // ONE_MICROSECOND)


def payload_values(event: Event) -> dict[str, object]:
    """The payload's fields under the frame's column names (None where the type has no such field)."""
    payload = event.payload
    values: dict[str, object] = dict.fromkeys(PAYLOAD_COLUMNS)
    if isinstance(payload, AccountOpened):
        values |= {"owner_id": payload.owner_id, "currency": payload.currency,
                   "min_balance_minor": payload.min_balance_minor, "max_balance_minor": payload.max_balance_minor}
    elif isinstance(payload, AccountCredited | AccountDebited):
        values |= {"amount_minor": payload.amount_minor, "transaction_id": payload.transaction_id,
                   "reason": payload.reason}
    elif isinstance(payload, AccountLimitsChanged):
        values |= {"min_balance_minor": payload.min_balance_minor, "max_balance_minor": payload.max_balance_minor}
    elif isinstance(payload, AccountSuspended | TransactionFailed):
        values["reason"] = payload.reason
    elif isinstance(payload, TransactionInitiated):
        values |= {"source_account_id": payload.source_account_id,
                   "destination_account_id": payload.destination_account_id,
                   "amount_minor": payload.amount_minor, "currency": payload.currency}
    return values


def _frame_columns(records: Sequence[LogRecord], rows: list[tuple[int, Event]]) -> dict[str, list[object]]:
    columns: dict[str, list[object]] = {name: [] for name in FRAME_SCHEMA}
    for index, event in rows:
        record = records[index]
        envelope = {"topic": record.topic(), "partition": record.partition(), "offset": record.offset(),
                    "key": record.key(), "event_id": event.event_id, "event_type": event.event_type,
                    "schema_version": event.schema_version, "aggregate_type": event.aggregate_type,
                    "aggregate_id": event.aggregate_id, "version": event.aggregate_version,
                    "occurred_at": event.occurred_at, "correlation_id": event.correlation_id}
        for name, value in (envelope | payload_values(event)).items():
            columns[name].append(value)
    return columns
