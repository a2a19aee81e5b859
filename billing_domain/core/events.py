"""The billing engine's events, exactly as the contract puts them on the wire, and their codec.

An `Event` is the envelope; its `payload` is one typed class per `event_type`, named after it in
the past tense. Decoding is the replay's hot path, so it is two msgspec passes (envelope with the
payload left raw, then the payload by type) and a handful of cheap checks. Anything that is not a
valid event raises `EventDecodeError` naming topic, partition, offset, event id and field.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from billing_domain.core.exceptions import EventDecodeError, EventPosition

SCHEMA_VERSION: Final = 1
# Always integer minor units (cents), never a float, and within PostgreSQL's bigint (the projections'
# money columns): an amount or a limit no projection row could hold is refused here, a finding naming
# the field, not a number the fold, the checkpoints or a rebuild would have to carry.
Money = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
PositiveMoney = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]
# The projections' `version` columns are PostgreSQL `integer`: a version above it could never be a
# projection row's, and no engine gets near 2**31 events of one aggregate. Refusing it here keeps every
# version the fold, the checkpoints (64-bit msgpack) and the rebuilds see within a small int.
MAX_VERSION: Final = 2**31 - 1
Version = Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
UtcTimestamp = Annotated[datetime, msgspec.Meta(tz=True)]

CreditReason = Literal["deposit", "transfer_in", "refund", "adjustment"]
DebitReason = Literal["withdrawal", "transfer_out", "fee", "adjustment"]


class Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Base of every payload. Unknown payload fields are refused: the contract fixes them.

    `gc=False` on events: they hold no cycles, and a replay retains millions of them.
    """


# --- account events -----------------------------------------------------------------------------
class AccountOpened(Payload, frozen=True):
    owner_id: NonEmpty
    currency: Currency
    min_balance_minor: Money
    max_balance_minor: Money


class AccountCredited(Payload, frozen=True):
    amount_minor: PositiveMoney
    transaction_id: str | None
    reason: CreditReason


class AccountDebited(Payload, frozen=True):
    amount_minor: PositiveMoney
    transaction_id: str | None
    reason: DebitReason


class AccountLimitsChanged(Payload, frozen=True):
    min_balance_minor: Money
    max_balance_minor: Money


class AccountSuspended(Payload, frozen=True):
    reason: str


class AccountReactivated(Payload, frozen=True):
    pass


class AccountClosed(Payload, frozen=True):
    pass


# --- transaction (transfer saga) events ----------------------------------------------------------
class TransactionInitiated(Payload, frozen=True):
    source_account_id: NonEmpty
    destination_account_id: NonEmpty
    amount_minor: PositiveMoney
    currency: Currency


class TransactionCompleted(Payload, frozen=True):
    pass


class TransactionFailed(Payload, frozen=True):
    reason: str


class TransactionCompensated(Payload, frozen=True):
    pass


ACCOUNT_PAYLOADS: Final[dict[str, type[Payload]]] = {
    cls.__name__: cls
    for cls in (AccountOpened, AccountCredited, AccountDebited, AccountLimitsChanged,
                AccountSuspended, AccountReactivated, AccountClosed)
}
TRANSACTION_PAYLOADS: Final[dict[str, type[Payload]]] = {
    cls.__name__: cls
    for cls in (TransactionInitiated, TransactionCompleted, TransactionFailed, TransactionCompensated)
}
AGGREGATE_TYPE_OF: Final[dict[str, str]] = {
    **dict.fromkeys(ACCOUNT_PAYLOADS, "account"),
    **dict.fromkeys(TRANSACTION_PAYLOADS, "transaction"),
}
PAYLOAD_TYPES: Final[dict[str, type[Payload]]] = {**ACCOUNT_PAYLOADS, **TRANSACTION_PAYLOADS}


class Event(msgspec.Struct, frozen=True, gc=False):
    """One event of the contract: the envelope with its typed payload."""

    event_id: NonEmpty
    event_type: str
    schema_version: int
    aggregate_type: Literal["account", "transaction"]
    aggregate_id: NonEmpty
    aggregate_version: Version
    occurred_at: UtcTimestamp
    correlation_id: str | None
    payload: Payload

    @property
    def is_money_event(self) -> bool:
        return isinstance(self.payload, AccountCredited | AccountDebited)


class _RawEnvelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """The envelope as decoded. Unknown envelope keys are refused, as unknown payload fields are: the
    contract fixes both, and the reconciler is the engine's auditor. Accepting extra keys would be
    forward compatible with an engine that adds one, but a key we ignore may carry meaning (a
    correction, a partition, a tenant) that changes what the event does, and the pipeline would then
    fold, report and rebuild from a misunderstood event, silently. Refused, such an event is a loud
    `stream_corrupt` finding naming the key, no rebuild trusts the stream, and the fix is explicit:
    amend the contract, then this struct."""

    event_id: NonEmpty
    event_type: str
    schema_version: int
    aggregate_type: Literal["account", "transaction"]
    aggregate_id: NonEmpty
    aggregate_version: Version
    occurred_at: UtcTimestamp
    correlation_id: str | None
    payload: msgspec.Raw


_ENVELOPE_DECODER: Final = msgspec.json.Decoder(_RawEnvelope)
_PAYLOAD_DECODERS: Final = {name: msgspec.json.Decoder(cls) for name, cls in PAYLOAD_TYPES.items()}
_ENCODER: Final = msgspec.json.Encoder()
_PATH_IN_MESSAGE: Final = re.compile(r"at `\$\.?([^`]*)`")
_NAMED_FIELD: Final = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


def encode_event(event: Event) -> bytes:
    """The event as the UTF-8 JSON message value of the contract."""
    return _ENCODER.encode(event)


def decode_event(value: bytes | None, key: bytes | None = None, *,
                 position: EventPosition | None = None) -> Event:
    """Decode one message value strictly. Raises `EventDecodeError` for anything off-contract."""
    if value is None:
        raise _error("message has no value (tombstone)", value, key, position, field="value")
    try:
        raw = _ENVELOPE_DECODER.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8 inside a string.
        raise _error(str(exc), value, key, position, field=_field_of(exc) or "value") from None
    payload_decoder = _PAYLOAD_DECODERS.get(raw.event_type)
    if payload_decoder is None:
        raise _error(f"unknown event_type {raw.event_type!r}", value, key, position, field="event_type",
                     event_id=raw.event_id)
    try:
        payload = payload_decoder.decode(raw.payload)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        field = _field_of(exc)
        raise _error(str(exc), value, key, position, field=f"payload.{field}" if field else "payload",
                     event_id=raw.event_id) from None
    if (raw.schema_version != SCHEMA_VERSION or AGGREGATE_TYPE_OF[raw.event_type] != raw.aggregate_type
            or (key is not None and key != raw.aggregate_id.encode())):
        _check_envelope(raw, key, value, position)  # raises, naming the field
    return Event(raw.event_id, raw.event_type, raw.schema_version, raw.aggregate_type, raw.aggregate_id,
                 raw.aggregate_version, raw.occurred_at, raw.correlation_id, payload)


def _check_envelope(raw: _RawEnvelope, key: bytes | None, value: bytes,
                    position: EventPosition | None) -> None:
    if raw.schema_version != SCHEMA_VERSION:
        raise _error(f"schema_version {raw.schema_version} is not {SCHEMA_VERSION}", value, key, position,
                     field="schema_version", event_id=raw.event_id)
    if AGGREGATE_TYPE_OF[raw.event_type] != raw.aggregate_type:
        raise _error(f"{raw.event_type} is not an event of aggregate_type {raw.aggregate_type!r}", value,
                     key, position, field="aggregate_type", event_id=raw.event_id)
    if key is not None and key != raw.aggregate_id.encode():  # bytes: a key that is not UTF-8 is not the id
        raise _error(f"aggregate_id {raw.aggregate_id!r} differs from the message key "
                     f"{key.decode('utf-8', 'replace')!r}", value, key, position,
                     field="aggregate_id", event_id=raw.event_id)


def _field_of(exc: Exception) -> str | None:
    message = str(exc)
    missing = _NAMED_FIELD.search(message)
    path = _PATH_IN_MESSAGE.search(message)
    prefix = path.group(1) if path else ""
    if missing:
        return f"{prefix}.{missing.group(1)}" if prefix else missing.group(1)
    return prefix or None


def _error(reason: str, value: bytes | None, key: bytes | None, position: EventPosition | None, *,
           field: str | None, event_id: str | None = None) -> EventDecodeError:
    key_text = key.decode("utf-8", "replace") if key is not None else None
    return EventDecodeError(reason, position=position, event_id=event_id or _best_effort_event_id(value),
                            field=field, key=key_text)


def _best_effort_event_id(value: bytes | None) -> str | None:
    """The event id of a message we could not decode, if it has one, so an operator can find it."""
    if not value:
        return None
    try:
        loose: Any = msgspec.json.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # deeply nested JSON recurses
        return None
    candidate = loose.get("event_id") if isinstance(loose, dict) else None
    return candidate if isinstance(candidate, str) else None
