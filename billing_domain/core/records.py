"""The event log as the fold sees it: its two topics and the shape of one record.

The shape is a Kafka message's (`confluent_kafka.Message` matches it as it is), written down here so
that the core reads records without importing a client: the fold, the fakes of the tests and any
other log all hand it something with these methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Protocol

import msgspec

DEFAULT_ACCOUNT_TOPIC = "billing.account-events"
DEFAULT_TRANSACTION_TOPIC = "billing.transaction-events"
# A record's timestamp is (type, milliseconds since the epoch); this type means it has none (Kafka's
# TIMESTAMP_NOT_AVAILABLE).
NO_TIMESTAMP = 0


@dataclass(frozen=True, slots=True)
class Topics:
    """The two event topics. A prefix replaces the leading `billing.` of both names."""

    accounts: str = DEFAULT_ACCOUNT_TOPIC
    transactions: str = DEFAULT_TRANSACTION_TOPIC

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(f"{prefix}account-events", f"{prefix}transaction-events")

    def all(self) -> tuple[str, str]:
        return (self.accounts, self.transactions)


class LogPosition(Protocol):
    """Where a record sits: all a finding needs to name it (None only on a record that is not one)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...


class LogRecord(LogPosition, Protocol):
    """One record of the log: its key (the aggregate id), its value (the encoded event), its timestamp."""

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def timestamp(self) -> tuple[int, int]: ...


class _Occurred(msgspec.Struct, gc=False):
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]


_OCCURRED = msgspec.json.Decoder(_Occurred)


def occurred_at_of(value: bytes | None) -> datetime | None:
    """The envelope's `occurred_at`, read without decoding the whole event; None if there is none."""
    if value is None:
        return None
    try:
        return _OCCURRED.decode(value).occurred_at
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None


def broker_time_of(record: LogRecord) -> datetime | None:
    """The record's broker timestamp (create or append time), if it has one."""
    kind, millis = record.timestamp()
    if kind == NO_TIMESTAMP or millis < 0:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=UTC)
