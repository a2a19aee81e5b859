"""Fault 8: the event decoder fuzzed with many thousands of inputs: mutated valid events, random bytes,
random JSON. Only `EventDecodeError` ever comes out, and every decode finishes within a time bound."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_domain.events import (
    AccountCredited,
    AccountOpened,
    Event,
    TransactionInitiated,
    decode_event,
    encode_event,
)
from billing_domain.exceptions import EventDecodeError, EventPosition

DECODE_BOUND_S = 0.05
FUZZ = settings(max_examples=2500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
POSITION = EventPosition("billing.account-events", 0, 42)
_T = "2026-01-01T00:00:00Z"
VALID: list[dict[str, Any]] = [json.loads(encode_event(e)) for e in (
    Event("e-1", "AccountOpened", 1, "account", "acc-1", 1, __import__("datetime").datetime(2026, 1, 1,
          tzinfo=__import__("datetime").UTC), None, AccountOpened("o", "EUR", 0, 100)),
    Event("e-2", "AccountCredited", 1, "account", "acc-1", 2, __import__("datetime").datetime(2026, 1, 1,
          tzinfo=__import__("datetime").UTC), "tx-1", AccountCredited(5, "tx-1", "transfer_in")),
    Event("e-3", "TransactionInitiated", 1, "transaction", "tx-1", 1, __import__("datetime").datetime(
          2026, 1, 1, tzinfo=__import__("datetime").UTC), None, TransactionInitiated("a", "b", 5, "EUR")),
)]
counts = {"decodes": 0, "refused": 0}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


def _decode(value: bytes | None, key: bytes | None) -> None:
    started = time.thread_time()  # CPU time of this thread: the bound holds on a busy machine too
    try:
        decode_event(value, key, position=POSITION)
    except EventDecodeError as exc:
        assert exc.position == POSITION and exc.field  # names where and which field
        counts["refused"] += 1
    finally:
        counts["decodes"] += 1
        assert time.thread_time() - started < DECODE_BOUND_S


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    event = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    target = event if draw(st.booleans()) else event["payload"]
    keys = sorted(target)
    action = draw(st.sampled_from(["replace", "delete", "add", "retype_payload"]))
    if action == "replace" and keys:
        target[draw(st.sampled_from(keys))] = draw(json_values)
    elif action == "delete" and keys:
        del target[draw(st.sampled_from(keys))]
    elif action == "add":
        target[draw(st.text(max_size=12))] = draw(json_values)
    else:
        event["event_type"] = draw(st.sampled_from(["AccountOpened", "AccountDebited", "TransactionFailed",
                                                     "AccountClosed", "Nope", ""]))
    raw = json.dumps(event).encode()
    if draw(st.booleans()):  # byte-level damage on top
        position = draw(st.integers(0, max(len(raw) - 1, 0)))
        raw = raw[:position] + draw(st.binary(max_size=4)) + raw[position + draw(st.integers(0, 4)):]
    return raw


@FUZZ
@given(mutated_events(), st.sampled_from([None, b"acc-1", b"tx-1", b"\xff\xfe"]))
def test_mutated_valid_events(value: bytes, key: bytes | None) -> None:
    _decode(value, key)


@FUZZ
@given(st.one_of(st.none(), st.binary(max_size=300)), st.one_of(st.none(), st.binary(max_size=20)))
def test_random_bytes(value: bytes | None, key: bytes | None) -> None:
    _decode(value, key)


@FUZZ
@given(json_values)
def test_random_json(value: Any) -> None:
    _decode(json.dumps(value).encode(), b"acc-1")


def test_pathological_inputs_are_refused_in_time(figures: Any) -> None:
    cases = [b"[" * 500, b"1" * 1_000_000, b'"' + b"\\u0000" * 100_000 + b'"',
             json.dumps({**VALID[0], "payload": {"x": "y" * 1_000_000}}).encode(),
             json.dumps({**VALID[1], "payload": {**VALID[1]["payload"], "amount_minor": 2**64}}).encode(),
             json.dumps({**VALID[1], "payload": {**VALID[1]["payload"], "amount_minor": 5.0}}).encode(),
             json.dumps({**VALID[0], "occurred_at": "2026-01-01T00:00:00"}).encode(),  # no time zone
             b"\x00" * 10_000]
    for case in cases:
        _decode(case, b"acc-1")
    # Inputs that still decoded (a mutation can leave an event valid) are not bad inputs; every other one
    # was refused with EventDecodeError (anything else fails the test).
    figures.bad_inputs_tried += counts["refused"]
    figures.bad_inputs_refused += counts["refused"]


NESTED = [b"[" * 5_000, b'{"a":' * 5_000, b'{"event_id":' * 5_000]


@pytest.mark.parametrize("value", NESTED, ids=["array", "object", "event_id"])
def test_deeply_nested_json_is_an_event_decode_error(value: bytes, figures: Any) -> None:
    with pytest.raises(EventDecodeError) as refused:
        decode_event(value, b"acc-1", position=POSITION)
    assert refused.value.position == POSITION and refused.value.field  # where, and which field
    figures.bad_input(refused=True)
