"""The batch decoder against the strict decoder: it accepts exactly what `decode_event` accepts, with the same
values in its columns (money as Int64, never a float), and when it refuses it names the same field.

Hypothesis starts from valid events of every type and damages them on the wire: a field removed, added,
retyped (float, string, bool, null, object, an integer past int64), a value out of range, the whole value
truncated, made not UTF-8, not JSON, or a tombstone; the key absent, right or wrong.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from support.builders import envelope_dict, make_event
from support.messages import FakeMessage

from billing_domain.columnar.decode import EPOCH, ONE_MICROSECOND, decode_batch, payload_values
from billing_domain.config import Topics
from billing_domain.core.events import (
    AccountClosed,
    AccountCredited,
    AccountDebited,
    AccountLimitsChanged,
    AccountOpened,
    AccountReactivated,
    AccountSuspended,
    Event,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
    decode_event,
)
from billing_domain.core.exceptions import EventDecodeError

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "billing-recon-hypothesis")
TOPICS = Topics.with_prefix("dec.")
SETTINGS = settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
PAYLOADS = [AccountOpened("owner", "EUR", -5, 2**63 - 1), AccountCredited(2**63 - 1, "tx-1", "refund"),
            AccountDebited(1, None, "fee"), AccountLimitsChanged(-(2**63), 0), AccountSuspended("kyc"),
            AccountReactivated(), AccountClosed(), TransactionInitiated("acc-a", "acc-b", 7, "USD"),
            TransactionCompleted(), TransactionFailed("nsf"), TransactionCompensated()]
ENVELOPE_FIELDS = ("event_id", "event_type", "schema_version", "aggregate_type", "aggregate_id",
                   "aggregate_version", "occurred_at", "correlation_id", "payload")
PAYLOAD_FIELDS = ("owner_id", "currency", "min_balance_minor", "max_balance_minor", "amount_minor",
                  "transaction_id", "reason", "source_account_id", "destination_account_id")
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "EUR", "eur", "deposit", "transfer_out", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00",
                     "2026-03-01T02:00:00+02:00", "AccountOpened", "account", "transaction", "acc-1"]),
    st.text(max_size=6), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                              max_size=2))


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    """A message (key, value): a valid event, or one damaged in one or two places."""
    payload = draw(st.sampled_from(PAYLOADS))
    occurred = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(microseconds=draw(st.integers(0, 10**12)))
    if draw(st.booleans()):
        occurred = occurred.astimezone(timezone(timedelta(hours=draw(st.integers(-12, 12)))))
    event = make_event(payload, aggregate_id=draw(st.sampled_from(["acc-1", "tx-ü"])),
                       version=draw(st.sampled_from([1, 2, 2**31 - 1])), occurred_at=occurred)
    document: Any = envelope_dict(event)
    for _ in range(draw(st.integers(0, 2))):
        _damage(draw, document)
    value: bytes | None = json.dumps(document, ensure_ascii=draw(st.booleans())).encode()
    wire = draw(st.sampled_from(("as is", "as is", "truncated", "not utf-8", "tombstone", "surrogate")))
    if wire == "truncated":
        value = value[:draw(st.integers(0, len(value)))]
    elif wire == "not utf-8":
        value = value.replace(b'"owner"', b'"\xff\xfe"').replace(b'"kyc"', b'"\xc3"')
    elif wire == "tombstone":
        value = None
    elif wire == "surrogate":
        value = value.replace(b'"owner"', b'"\\ud800"').replace(b'"nsf"', b'"\\udfff"')
    key = draw(st.sampled_from([event.aggregate_id.encode(), None, b"other", b"\xff"]))
    return key, value


def _damage(draw: st.DrawFn, document: dict[str, Any]) -> None:
    target = document["payload"] if draw(st.booleans()) and isinstance(document.get("payload"), dict) else document
    names = list(ENVELOPE_FIELDS if target is document else PAYLOAD_FIELDS)
    name = draw(st.sampled_from([*names, "unknown_field"]))
    if draw(st.integers(0, 3)) == 0:
        target.pop(name, None)
    else:
        target[name] = draw(json_values)


def _messages(pairs: list[tuple[bytes | None, bytes | None]]) -> list[FakeMessage]:
    return [FakeMessage(TOPICS.accounts if i % 2 else TOPICS.transactions, i % 3, i, key, value)
            for i, (key, value) in enumerate(pairs)]


def _strict(message: FakeMessage) -> Event | EventDecodeError:
    try:
        return decode_event(message.value(), message.key())
    except EventDecodeError as exc:
        return exc


def _row_of(event: Event, message: FakeMessage) -> dict[str, Any]:
    return {"topic": message.topic(), "partition": message.partition(), "offset": message.offset(),
            "key": message.key(), "event_id": event.event_id, "event_type": event.event_type,
            "schema_version": event.schema_version, "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id, "version": event.aggregate_version,
            "occurred_at": event.occurred_at.astimezone(UTC), "correlation_id": event.correlation_id,
            **payload_values(event)}


@SETTINGS
@given(st.lists(documents(), min_size=1, max_size=8))
def test_the_batch_decoder_accepts_refuses_and_values_as_the_strict_decoder(
        pairs: list[tuple[bytes | None, bytes | None]]) -> None:
    messages = _messages(pairs)
    batch = decode_batch(messages, TOPICS)  # type: ignore[arg-type]
    accepted = []
    for index, message in enumerate(messages):
        strict = _strict(message)
        if isinstance(strict, EventDecodeError):
            refused = batch.refused[index]
            assert batch.events[index] is None
            assert (refused.field, refused.reason, refused.event_id, refused.key) == (
                strict.field, strict.reason, strict.event_id, strict.key)
        else:
            assert index not in batch.refused and batch.events[index] == strict
            accepted.append((index, strict))
    _check_fold_columns(batch.columns, accepted)
    _check_frame(batch.frame(), messages, accepted)


def _check_fold_columns(columns: Any, accepted: list[tuple[int, Event]]) -> None:
    fold = columns.frame()
    assert fold["index"].to_list() == [i for i, _ in accepted]
    assert fold["version"].to_list() == [e.aggregate_version for _, e in accepted]
    assert fold["occurred_us"].to_list() == [(e.occurred_at - EPOCH) // ONE_MICROSECOND for _, e in accepted]
    values = [payload_values(e) for _, e in accepted]
    for name in ("amount", "min_balance", "max_balance"):
        assert fold.schema[name] == pl.Int64  # money stays integer: never a float
    assert fold["amount"].to_list() == [v["amount_minor"] or 0 for v in values]
    assert fold["min_balance"].to_list() == [v["min_balance_minor"] for v in values]
    assert fold["max_balance"].to_list() == [v["max_balance_minor"] for v in values]


def _check_frame(frame: pl.DataFrame, messages: list[FakeMessage], accepted: list[tuple[int, Event]]) -> None:
    for name in ("amount_minor", "min_balance_minor", "max_balance_minor", "version"):
        assert frame.schema[name] == pl.Int64  # money stays integer: never a float
    assert frame.to_dicts() == [_row_of(event, messages[index]) for index, event in accepted]
