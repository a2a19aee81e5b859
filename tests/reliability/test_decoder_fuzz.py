"""Fault 8: the event decoder fuzzed with many thousands of inputs: mutated valid events, random bytes,
random JSON. Only `EventDecodeError` ever comes out, naming where and which field; what is not refused
is a valid event (it encodes back to an event that decodes the same). Each test counts, in its own
figures, every input when it tries it, and then, apart, each one it saw refused (an `EventDecodeError`
naming position and field) or decoded as valid: an input the decoder fails on any other way stays tried
and nothing else. After all its examples, each test asserts on those counts: every input refused or
valid, and random bytes and random JSON all refused (neither can make an event).

No decode is timed (a timed assertion passes on a fast machine and fails on a busy one, proving
nothing): pathological inputs are bounded by the memory their decode allocates, which is the same on
any machine, and a hang is caught by pytest-timeout.
"""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.figures import TestFigures

from billing_domain.core.events import (
    AccountCredited,
    AccountOpened,
    Event,
    TransactionInitiated,
    decode_event,
    encode_event,
)
from billing_domain.core.exceptions import EventDecodeError, EventPosition

# A pathological input may cost a few copies of itself, never more: an allocation that grows faster than
# the input (a parser gone quadratic, a per-element object graph) breaks this.
ALLOCATION_PER_INPUT_BYTE = 4
ALLOCATION_SLACK_BYTES = 256 * 1024
# Each test runs its examples through an inner @given function, so that after the last one it can assert on
# what its figures counted over them all.
FUZZ = settings(max_examples=2500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
POSITION = EventPosition("billing.account-events", 0, 42)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
VALID: list[dict[str, Any]] = [json.loads(encode_event(e)) for e in (
    Event("e-1", "AccountOpened", 1, "account", "acc-1", 1, T0, None, AccountOpened("o", "EUR", 0, 100)),
    Event("e-2", "AccountCredited", 1, "account", "acc-1", 2, T0, "tx-1", AccountCredited(5, "tx-1", "transfer_in")),
    Event("e-3", "TransactionInitiated", 1, "transaction", "tx-1", 1, T0, None,
          TransactionInitiated("a", "b", 5, "EUR")),
)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


def _decode(value: bytes | None, key: bytes | None, figures: TestFigures) -> None:
    """Decode one input: refused with a located EventDecodeError, or a valid event. Tried is counted before the
    decode, refused or valid only once seen, so an input that fails any other way is tried and nothing else."""
    figures.fuzz_tried()
    try:
        event = decode_event(value, key, position=POSITION)
    except EventDecodeError as exc:
        assert exc.position == POSITION and exc.field, (exc.position, exc.field)  # names where and which field
        figures.fuzz_refused()
        return
    # Accepted: then it is an event, not garbage that slipped through; it survives its own round trip.
    assert decode_event(encode_event(event), key, position=POSITION) == event
    figures.fuzz_valid()


def _every_input_refused_or_valid(figures: TestFigures) -> None:
    assert figures.fuzz_inputs_tried > 0
    assert figures.fuzz_inputs_refused + figures.fuzz_inputs_valid == figures.fuzz_inputs_tried, figures


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


def test_mutated_valid_events(figures: TestFigures) -> None:
    @FUZZ
    @given(mutated_events(), st.sampled_from([None, b"acc-1", b"tx-1", b"\xff\xfe"]))
    def decode(value: bytes, key: bytes | None) -> None:
        _decode(value, key, figures)

    decode()
    _every_input_refused_or_valid(figures)
    assert figures.fuzz_inputs_refused > 0, figures  # a mutation that breaks the contract is seen refused


def test_random_bytes(figures: TestFigures) -> None:
    @FUZZ
    @given(st.one_of(st.none(), st.binary(max_size=300)), st.one_of(st.none(), st.binary(max_size=20)))
    def decode(value: bytes | None, key: bytes | None) -> None:
        _decode(value, key, figures)

    decode()
    _every_input_refused_or_valid(figures)
    # An event is a JSON object of nine named fields: 300 random bytes never make one, so every input is refused.
    assert figures.fuzz_inputs_refused == figures.fuzz_inputs_tried, figures


def test_random_json(figures: TestFigures) -> None:
    @FUZZ
    @given(json_values)
    def decode(value: Any) -> None:
        _decode(json.dumps(value).encode(), b"acc-1", figures)

    decode()
    _every_input_refused_or_valid(figures)
    # Its keys are at most 10 characters and an event needs "aggregate_version": never an event, always refused.
    assert figures.fuzz_inputs_refused == figures.fuzz_inputs_tried, figures


PATHOLOGICAL = [b"[" * 500, b"1" * 1_000_000, b'"' + b"\\u0000" * 100_000 + b'"',
                json.dumps({**VALID[0], "payload": {"x": "y" * 1_000_000}}).encode(),
                json.dumps({**VALID[1], "payload": {**VALID[1]["payload"], "amount_minor": 2**64}}).encode(),
                json.dumps({**VALID[1], "payload": {**VALID[1]["payload"], "amount_minor": 5.0}}).encode(),
                json.dumps({**VALID[0], "occurred_at": "2026-01-01T00:00:00"}).encode(),  # no time zone
                b"\x00" * 10_000]


@pytest.mark.parametrize("value", PATHOLOGICAL, ids=[f"case{i}" for i in range(len(PATHOLOGICAL))])
def test_pathological_inputs_are_refused_within_a_memory_bound(value: bytes, figures: TestFigures) -> None:
    with figures.refusal():
        tracemalloc.start()
        try:
            with pytest.raises(EventDecodeError) as refused:
                decode_event(value, b"acc-1", position=POSITION)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert refused.value.position == POSITION and refused.value.field
        assert peak <= ALLOCATION_PER_INPUT_BYTE * len(value) + ALLOCATION_SLACK_BYTES, (len(value), peak)


NESTED = [b"[" * 5_000, b'{"a":' * 5_000, b'{"event_id":' * 5_000]


@pytest.mark.parametrize("value", NESTED, ids=["array", "object", "event_id"])
def test_deeply_nested_json_is_an_event_decode_error(value: bytes, figures: TestFigures) -> None:
    with figures.refusal():
        with pytest.raises(EventDecodeError) as refused:
            decode_event(value, b"acc-1", position=POSITION)
        assert refused.value.position == POSITION and refused.value.field  # where, and which field
