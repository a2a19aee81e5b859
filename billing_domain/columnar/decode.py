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


FOLD_SCHEMA: Final[dict[str, pl.DataType | type[pl.DataType]]] = {
    "index": pl.Int64,  # the record's place in the batch
    "entity": pl.Int64,  # a code per (aggregate_type, aggregate_id): `DecodedBatch.entity_keys`
    "kind": pl.Int8,  # `KIND` of the event type
    "version": pl.Int64,
    "partition": pl.Int64,
    "in_place": pl.Boolean,  # keyed, with a partition, and on its aggregate type's topic
    "amount": pl.Int64,  # amount_minor of a money event or a transfer, else 0
    "reason": pl.Int8,  # `REASON` of a money event's reason, else NO_REASON
    "min_balance": pl.Int64,  # of AccountOpened and AccountLimitsChanged, else null
    "max_balance": pl.Int64,
    "occurred_us": pl.Int64,  # occurred_at, microseconds since the epoch (UTC)
}
FoldRow = tuple[int, int, int, int, int, bool, int, int, int | None, int | None, int]


@dataclass(slots=True)
class FoldColumns:
    """The per-event values the fold reads, for the records that decoded, in log order: gathered as one tuple
    per record (one append in the decode loop), turned into typed columns by Polars in one call."""

    rows: list[FoldRow] = field(default_factory=list)

    def frame(self) -> pl.DataFrame:
        # Transposed in C (zip), then one typed Series per column; strict: a value that does not fit its
        # column (an amount past int64) raises instead of wrapping.
        columns = list(zip(*self.rows, strict=True)) if self.rows else [() for _ in FOLD_SCHEMA]
        return pl.DataFrame([pl.Series(name, values, dtype=dtype, strict=True)
                             for (name, dtype), values in zip(FOLD_SCHEMA.items(), columns, strict=True)])


@dataclass(slots=True)
class DecodedBatch:
    """A batch decoded: the events (None where refused), the refusals, and the fold's columns."""

    records: Sequence[LogRecord]
    events: list[Event | None]
    refused: dict[int, EventDecodeError]  # record index -> the strict decoder's error
    columns: FoldColumns
    entity_keys: list[EntityKey]  # entity code -> (entity type, entity id)
    poisoned: set[int]  # entity codes with a refused record
    _codes: dict[str, dict[str, int]] = field(default_factory=dict)

    def codes_of(self, entity_type: str) -> dict[str, int]:
        """Entity id -> code, of one entity type (computed once)."""
        if entity_type not in self._codes:
            self._codes[entity_type] = {entity_id: code for code, (kind, entity_id) in enumerate(self.entity_keys)
                                        if kind == entity_type}
        return self._codes[entity_type]

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
    """Decode every record with the strict decoder; gather the fold's columns in the same pass.

    The loop is the engine's one per-record Python cost besides the strict decoder, so it is kept flat."""
    events: list[Event | None] = []
    refused: dict[int, EventDecodeError] = {}
    rows: list[FoldRow] = []
    codes: dict[EntityKey, int] = {}
    poisoned: set[int] = set()
    add_event, add_row, kinds = events.append, rows.append, KIND
    home_topic = {"account": topics.accounts, "transaction": topics.transactions}
    for index, record in enumerate(records):
        key = record.key()
        try:
            event = decode_event(record.value(), key)
        except EventDecodeError as exc:
            add_event(None)
            refused[index] = exc
            poisoned.add(codes.setdefault(_poison_entity(record, exc, topics), len(codes)))
            continue
        add_event(event)
        entity = codes.get((event.aggregate_type, event.aggregate_id))
        if entity is None:
            entity = codes[(event.aggregate_type, event.aggregate_id)] = len(codes)
        partition = record.partition()
        # The reference applies only keyed events on their type's topic; a record with no partition never
        # settles a stream's home partition there, so it is left to the reference too.
        in_place = key is not None and partition is not None and record.topic() == home_topic[event.aggregate_type]
        payload = event.payload
        kind = type(payload)
        amount, reason, low, high = NO_AMOUNT, NO_REASON, None, None
        if kind is AccountCredited or kind is AccountDebited:
            amount, reason = payload.amount_minor, REASON[payload.reason]  # type: ignore[attr-defined]
        elif kind is AccountOpened or kind is AccountLimitsChanged:
            low, high = payload.min_balance_minor, payload.max_balance_minor  # type: ignore[attr-defined]
        elif kind is TransactionInitiated:
            amount = payload.amount_minor  # type: ignore[attr-defined]
        add_row((index, entity, kinds[event.event_type], event.aggregate_version, partition or 0, in_place, amount,
                 reason, low, high, (event.occurred_at - EPOCH) // ONE_MICROSECOND))
    return DecodedBatch(records, events, refused, FoldColumns(rows), list(codes), poisoned)


def _poison_entity(record: LogRecord, exc: EventDecodeError, topics: Topics) -> EntityKey:
    """The entity the reference replay files a poison record under (`Replay._poison`)."""
    entity_type = "account" if record.topic() == topics.accounts else "transaction"
    return (entity_type, poison_entity_id(exc, record))


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
