"""The transfer saga's aggregate: legal status moves, illegal ones recorded and raised, and its columns."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.builders import SagaStream, make_event

from billing_domain.core.events import AccountCredited, Event
from billing_domain.core.exceptions import InvariantViolationError, StreamCorruptionError
from billing_domain.core.transactions import (
    COMPENSATED,
    COMPLETED,
    FAILED,
    PENDING,
    TransactionAggregate,
    TransactionState,
)

STEP: dict[str, Callable[[SagaStream], Event]] = {
    COMPLETED: lambda s: s.completed(),
    FAILED: lambda s: s.failed("destination account closed"),
    COMPENSATED: lambda s: s.compensated(),
}


def test_initiated_is_pending_with_its_columns() -> None:
    saga = SagaStream("tx-7")
    initiated = saga.initiated(source="acc-1", destination="acc-2", amount_minor=4_200, currency="GBP")
    tx = TransactionAggregate.from_events(saga.events)
    assert tx.state() == TransactionState(
        transaction_id="tx-7", source_account_id="acc-1", destination_account_id="acc-2", amount_minor=4_200,
        currency="GBP", status=PENDING, failure_reason=None, version=1, initiated_at=initiated.occurred_at,
        updated_at=initiated.occurred_at,
    )
    tx.validate_invariants()


@pytest.mark.parametrize("status", [COMPLETED, FAILED, COMPENSATED])
def test_each_legal_move(status: str) -> None:
    saga = SagaStream()
    initiated = saga.initiated()
    last = STEP[status](saga)
    tx = TransactionAggregate.from_events(saga.events)
    assert tx.status == status
    assert tx.version == 2
    assert not tx.violations
    assert tx.initiated_at == initiated.occurred_at
    assert tx.updated_at == last.occurred_at
    assert tx.last_event_id == last.event_id
    tx.validate_invariants()


def test_failure_reason_is_kept() -> None:
    saga = SagaStream()
    saga.initiated()
    saga.failed("insufficient funds on acc-1")
    tx = TransactionAggregate.from_events(saga.events)
    assert tx.status == FAILED
    assert tx.failure_reason == "insufficient funds on acc-1"
    assert tx.state().failure_reason == "insufficient funds on acc-1"


def test_no_failure_reason_unless_failed() -> None:
    saga = SagaStream()
    saga.initiated()
    saga.completed()
    assert TransactionAggregate.from_events(saga.events).failure_reason is None


def test_initiated_at_is_occurred_at_of_initiated_not_of_later_steps() -> None:
    saga = SagaStream()
    initiated = saga.initiated()
    completed = saga.completed()
    assert completed.occurred_at > initiated.occurred_at
    tx = TransactionAggregate.from_events(saga.events)
    assert tx.initiated_at == initiated.occurred_at
    assert tx.updated_at == completed.occurred_at


@pytest.mark.parametrize(("first", "second"), [
    (COMPLETED, FAILED),
    (FAILED, COMPLETED),
    (COMPENSATED, COMPLETED),
    (COMPLETED, COMPLETED),
    (FAILED, COMPENSATED),
    (COMPENSATED, FAILED),
])
def test_illegal_move_is_recorded_and_raised(first: str, second: str) -> None:
    saga = SagaStream("tx-3")
    saga.initiated()
    STEP[first](saga)
    STEP[second](saga)
    tx = TransactionAggregate.from_events(saga.events)
    assert tx.violations == [f"v3: illegal move {first} -> {second}"]
    assert tx.version == 3
    assert tx.status == second  # the fold goes on and shows what the events say
    with pytest.raises(InvariantViolationError) as info:
        tx.validate_invariants()
    assert info.value.aggregate_id == "tx-3"
    assert info.value.invariant == "illegal saga move"
    assert f"illegal move {first} -> {second}" in info.value.detail
    assert info.value.version == 3


def test_failure_reason_after_an_illegal_failure_is_still_recorded() -> None:
    saga = SagaStream()
    saga.initiated()
    saga.completed()
    saga.failed("late failure")
    tx = TransactionAggregate.from_events(saga.events)
    assert tx.failure_reason == "late failure"
    assert len(tx.violations) == 1


def test_every_illegal_move_is_recorded() -> None:
    saga = SagaStream()
    saga.initiated()
    saga.completed()
    saga.failed()
    saga.compensated()
    tx = TransactionAggregate.from_events(saga.events)
    assert tx.violations == ["v3: illegal move completed -> failed", "v4: illegal move failed -> compensated"]


def test_redelivered_step_is_ignored_not_an_illegal_move() -> None:
    saga = SagaStream()
    saga.initiated()
    completed = saga.completed()
    tx = TransactionAggregate.from_events(saga.events)
    assert tx.apply(completed) is False
    assert tx.apply(saga.events[0]) is False
    assert not tx.violations
    assert tx.status == COMPLETED
    assert tx.version == 2


def test_saga_must_start_with_initiated() -> None:
    saga = SagaStream()
    first = saga.completed()
    tx = TransactionAggregate("tx-1")
    with pytest.raises(StreamCorruptionError, match="not TransactionInitiated"):
        tx.apply(first)
    assert tx.version == 0
    assert tx.status == ""


def test_initiated_twice_is_stream_corruption() -> None:
    saga = SagaStream()
    saga.initiated()
    saga.initiated(amount_minor=1)
    tx = TransactionAggregate("tx-1")
    tx.apply(saga.events[0])
    with pytest.raises(StreamCorruptionError, match="not version 1"):
        tx.apply(saga.events[1])
    assert tx.amount_minor == 2_500
    assert tx.version == 1


def test_gap_in_a_saga_is_stream_corruption() -> None:
    saga = SagaStream()
    saga.initiated()
    saga.completed()
    late = saga.failed()
    tx = TransactionAggregate.from_events(saga.events[:1])
    with pytest.raises(StreamCorruptionError, match="version gap"):
        tx.apply(late)
    assert tx.status == PENDING


def test_account_event_on_a_saga_is_stream_corruption() -> None:
    saga = SagaStream("tx-1")
    saga.initiated()
    tx = TransactionAggregate.from_events(saga.events)
    stray = make_event(AccountCredited(5, "tx-1", "refund"), aggregate_id="tx-1", version=2)
    with pytest.raises(StreamCorruptionError, match="does not belong"):
        tx.apply(stray)
    assert tx.version == 1
