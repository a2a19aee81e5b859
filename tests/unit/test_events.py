"""The codec: every event of the contract round-trips, and every off-contract message is refused
with an `EventDecodeError` that names the field and says where the message sits."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from support.builders import AccountStream, SagaStream, envelope_dict, make_event, to_wire

from billing_domain.core.events import (
    ACCOUNT_PAYLOADS,
    PAYLOAD_TYPES,
    TRANSACTION_PAYLOADS,
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    decode_event,
    encode_event,
)
from billing_domain.core.exceptions import EventDecodeError, EventPosition

POSITION = EventPosition("billing.account-events", 2, 17)
KEY = b"acc-1"


def _every_event_type() -> list[Event]:
    account = AccountStream("acc-1")
    account.opened(owner_id="owner-7", currency="USD", min_balance_minor=0, max_balance_minor=500_000)
    account.credited(10_000, "deposit")
    account.credited(2_500, "transfer_in", transaction_id="tx-9")
    account.credited(100, "refund", transaction_id="tx-8")
    account.credited(1, "adjustment")
    account.debited(300, "withdrawal")
    account.debited(2_500, "transfer_out", transaction_id="tx-8")
    account.debited(25, "fee")
    account.debited(1, "adjustment")
    account.limits_changed(-100, 900_000)
    account.suspended("chargeback review")
    account.reactivated()
    account.closed()
    saga = SagaStream("tx-8")
    saga.initiated(source="acc-1", destination="acc-2", amount_minor=2_500, currency="USD")
    saga.completed()
    saga.failed("destination closed")
    saga.compensated()
    return account.events + saga.events


EVERY_EVENT = _every_event_type()


def test_the_sample_covers_every_event_type() -> None:
    assert {e.event_type for e in EVERY_EVENT} == set(PAYLOAD_TYPES)


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: f"{e.event_type}-v{e.aggregate_version}")
def test_round_trip(event: Event) -> None:
    decoded = decode_event(encode_event(event), event.aggregate_id.encode(), position=POSITION)
    assert decoded == event
    assert type(decoded.payload) is type(event.payload)
    assert decoded.occurred_at.utcoffset() is not None


def test_encoded_money_is_an_integer_on_the_wire() -> None:
    event = make_event(AccountCredited(1_234, None, "deposit"), aggregate_id="acc-1", version=2)
    wire = encode_event(event)
    assert b'"amount_minor":1234,' in wire
    assert envelope_dict(event)["payload"]["amount_minor"] == 1_234


def test_decode_without_key_or_position_still_works() -> None:
    event = EVERY_EVENT[1]
    assert decode_event(encode_event(event)) == event


def test_is_money_event() -> None:
    money = {e.event_type for e in EVERY_EVENT if e.is_money_event}
    assert money == {"AccountCredited", "AccountDebited"}


def test_account_and_transaction_payload_tables_partition_the_types() -> None:
    assert set(ACCOUNT_PAYLOADS).isdisjoint(TRANSACTION_PAYLOADS)
    assert set(ACCOUNT_PAYLOADS) | set(TRANSACTION_PAYLOADS) == set(PAYLOAD_TYPES)


# --- rejections ------------------------------------------------------------------------------------
CREDIT = make_event(AccountCredited(100, None, "deposit"), aggregate_id="acc-1", version=2)
OPENED = make_event(AccountOpened("owner-1", "EUR", 0, 1_000), aggregate_id="acc-1", version=1)
DEBIT = make_event(AccountDebited(100, "tx-1", "transfer_out"), aggregate_id="acc-1", version=3)


def _mutated(event: Event, change: Callable[[dict[str, Any]], None]) -> bytes:
    document = copy.deepcopy(envelope_dict(event))
    change(document)
    return to_wire(document)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = document
        for part in parents:
            target = target[part]
        target[leaf] = value
    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = document
        for part in parents:
            target = target[part]
        del target[leaf]
    return change


def _decode_error(value: bytes | None, key: bytes | None = KEY) -> EventDecodeError:
    with pytest.raises(EventDecodeError) as info:
        decode_event(value, key, position=POSITION)
    return info.value


def _assert_located(error: EventDecodeError, event_id: str | None) -> None:
    """The message names topic, partition and offset, and the event id when the message had one."""
    message = str(error)
    assert error.position == POSITION
    assert "billing.account-events[2]@17" in message
    assert error.event_id == event_id
    assert f"event_id={event_id or '?'}" in message
    assert f"field={error.field}" in message


REJECTIONS: list[tuple[str, Event, Callable[[dict[str, Any]], None], str]] = [
    ("unknown event_type", CREDIT, _set("event_type", "AccountFrozen"), "event_type"),
    ("missing envelope field", CREDIT, _drop("occurred_at"), "occurred_at"),
    ("missing aggregate_version", CREDIT, _drop("aggregate_version"), "aggregate_version"),
    ("missing payload", CREDIT, _drop("payload"), "payload"),
    ("missing payload field", CREDIT, _drop("payload.reason"), "payload.reason"),
    ("missing money", DEBIT, _drop("payload.amount_minor"), "payload.amount_minor"),
    ("mistyped envelope field", CREDIT, _set("aggregate_version", "2"), "aggregate_version"),
    ("mistyped correlation_id", CREDIT, _set("correlation_id", 7), "correlation_id"),
    ("mistyped payload field", OPENED, _set("payload.owner_id", 42), "payload.owner_id"),
    ("payload not an object", CREDIT, _set("payload", [1, 2]), "payload"),
    ("money as float 1.0", CREDIT, _set("payload.amount_minor", 1.0), "payload.amount_minor"),
    ("money as float 1.5", CREDIT, _set("payload.amount_minor", 1.5), "payload.amount_minor"),
    ("limit as float 1.0", OPENED, _set("payload.min_balance_minor", 1.0), "payload.min_balance_minor"),
    ("money as string", CREDIT, _set("payload.amount_minor", "100"), "payload.amount_minor"),
    ("money as bool", CREDIT, _set("payload.amount_minor", True), "payload.amount_minor"),
    ("limit as bool", OPENED, _set("payload.max_balance_minor", False), "payload.max_balance_minor"),
    ("amount 0", CREDIT, _set("payload.amount_minor", 0), "payload.amount_minor"),
    ("negative amount", DEBIT, _set("payload.amount_minor", -100), "payload.amount_minor"),
    ("aggregate_version 0", CREDIT, _set("aggregate_version", 0), "aggregate_version"),
    ("negative aggregate_version", CREDIT, _set("aggregate_version", -1), "aggregate_version"),
    ("account event as transaction", CREDIT, _set("aggregate_type", "transaction"), "aggregate_type"),
    ("unknown aggregate_type", CREDIT, _set("aggregate_type", "ledger"), "aggregate_type"),
    ("schema_version 2", CREDIT, _set("schema_version", 2), "schema_version"),
    ("schema_version 0", CREDIT, _set("schema_version", 0), "schema_version"),
    ("naive timestamp", CREDIT, _set("occurred_at", "2024-03-01T12:00:00"), "occurred_at"),
    ("not a timestamp", CREDIT, _set("occurred_at", "yesterday"), "occurred_at"),
    ("unknown payload field", CREDIT, _set("payload.bonus_minor", 5), "payload.bonus_minor"),
    ("unknown envelope key", CREDIT, _set("trace_id", "t-1"), "trace_id"),
    ("aggregate_version 2**31", CREDIT, _set("aggregate_version", 2**31), "aggregate_version"),
    ("aggregate_version 2**63", CREDIT, _set("aggregate_version", 2**63), "aggregate_version"),
    ("aggregate_version 2**70", CREDIT, _set("aggregate_version", 2**70), "aggregate_version"),
    ("aggregate_version -2**70", CREDIT, _set("aggregate_version", -(2**70)), "aggregate_version"),
    ("amount 2**63", CREDIT, _set("payload.amount_minor", 2**63), "payload.amount_minor"),
    ("amount 2**70", DEBIT, _set("payload.amount_minor", 2**70), "payload.amount_minor"),
    ("limit 2**63", OPENED, _set("payload.max_balance_minor", 2**63), "payload.max_balance_minor"),
    ("limit below -2**63", OPENED, _set("payload.min_balance_minor", -(2**63) - 1), "payload.min_balance_minor"),
    ("debit reason on a credit", CREDIT, _set("payload.reason", "withdrawal"), "payload.reason"),
    ("lower-case currency", OPENED, _set("payload.currency", "eur"), "payload.currency"),
    ("empty owner", OPENED, _set("payload.owner_id", ""), "payload.owner_id"),
]


@pytest.mark.parametrize(("event", "change", "field"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_rejection_names_field_and_position(event: Event, change: Callable[[dict[str, Any]], None],
                                            field: str) -> None:
    error = _decode_error(_mutated(event, change))
    assert error.field == field
    _assert_located(error, event.event_id)


def test_unknown_keys_are_refused_in_the_envelope_as_in_the_payload() -> None:
    """The decision (see `events._RawEnvelope`): the contract fixes both, so an extra key anywhere is a
    finding naming it, never ignored; nested keys of a known field are no way around it either."""
    for change, field in ((_set("trace_id", None), "trace_id"), (_set("payload.trace_id", None), "payload.trace_id"),
                          (_set("partition_hint", 3), "partition_hint")):
        error = _decode_error(_mutated(CREDIT, change))
        assert error.field == field and "unknown field" in error.reason
        _assert_located(error, CREDIT.event_id)


def test_the_largest_numbers_the_projections_hold_are_accepted() -> None:
    """Versions up to the projections' integer column and money to bigint's ends decode; one past is refused."""
    limits = _mutated(OPENED, lambda d: d["payload"].update(min_balance_minor=-(2**63), max_balance_minor=2**63 - 1))
    assert decode_event(limits, KEY).payload == AccountOpened("owner-1", "EUR", -(2**63), 2**63 - 1)
    last = decode_event(_mutated(CREDIT, _set("aggregate_version", 2**31 - 1)), KEY)
    assert last.aggregate_version == 2**31 - 1
    big = decode_event(_mutated(CREDIT, _set("payload.amount_minor", 2**63 - 1)), KEY)
    assert isinstance(big.payload, AccountCredited) and big.payload.amount_minor == 2**63 - 1


def test_transaction_event_as_account_is_refused() -> None:
    saga = SagaStream("acc-1")
    initiated = saga.initiated()
    error = _decode_error(_mutated(initiated, _set("aggregate_type", "account")))
    assert error.field == "aggregate_type"
    assert "TransactionInitiated" in error.reason
    _assert_located(error, initiated.event_id)


def test_aggregate_id_must_equal_the_key() -> None:
    error = _decode_error(encode_event(CREDIT), key=b"acc-2")
    assert error.field == "aggregate_id"
    assert error.key == "acc-2"
    assert "'acc-1'" in error.reason and "'acc-2'" in error.reason
    _assert_located(error, CREDIT.event_id)


def test_a_key_that_only_decodes_to_the_aggregate_id_is_not_it() -> None:
    """A non-UTF-8 key decoded with replacement characters once passed as the id it resembles."""
    event = make_event(AccountCredited(100, None, "deposit"), aggregate_id="acc-\ufffd", version=2)
    error = _decode_error(encode_event(event), key=b"acc-\xff")
    assert error.field == "aggregate_id"
    assert decode_event(encode_event(event), "acc-\ufffd".encode()) == event


def test_missing_event_id_is_reported_without_one() -> None:
    error = _decode_error(_mutated(CREDIT, _drop("event_id")))
    assert error.field == "event_id"
    _assert_located(error, None)


@pytest.mark.parametrize("value", [b'{"event_id": "e-1", ', b"", b"not json", b"[1, 2]", b"\xff\xfe\x00"],
                         ids=["truncated", "empty", "garbage", "array", "binary"])
def test_malformed_json_is_refused(value: bytes) -> None:
    error = _decode_error(value)
    assert error.field == "value"
    _assert_located(error, None)


@pytest.mark.parametrize(("old", "new", "field", "event_id"), [
    (b'"deposit"', b'"dep\xffosit"', "payload", CREDIT.event_id),
    (b'"acc-1"', b'"acc-\xc3"', "value", None),
    (b'"00000000', b'"\xff0000000', "value", None),
], ids=["in payload", "in envelope", "in event id"])
def test_non_utf8_bytes_are_refused(old: bytes, new: bytes, field: str, event_id: str | None) -> None:
    value = encode_event(CREDIT).replace(old, new, 1)
    assert value != encode_event(CREDIT)
    # invalid UTF-8 inside a string must not escape as a bare UnicodeDecodeError
    error = _decode_error(value)
    assert error.field == field
    assert "utf-8" in error.reason
    _assert_located(error, event_id)


def test_tombstone_is_refused() -> None:
    error = _decode_error(None)
    assert error.field == "value"
    assert "tombstone" in error.reason
    _assert_located(error, None)


def test_error_without_position_says_so() -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(_mutated(CREDIT, _set("schema_version", 3)))
    assert info.value.position is None
    assert "<no position>" in str(info.value)
    assert info.value.field == "schema_version"


def test_utc_timestamp_with_z_decodes_to_aware_utc() -> None:
    event = decode_event(_mutated(CREDIT, _set("occurred_at", "2024-03-01T12:00:00Z")), KEY)
    assert event.occurred_at == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
