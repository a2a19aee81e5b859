"""Properties of the folds over generated streams that obey the contract.

A legal account stream keeps every invariant and its balance is Σ credits − Σ debits; redeliveries
inserted anywhere after an event's first occurrence change nothing; legal sagas end in the expected status.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from support.builders import AccountStream, SagaStream

from billing_domain.core.accounts import ACTIVE, CLOSED, SUSPENDED, AccountAggregate
from billing_domain.core.events import AccountCredited, AccountDebited, Event, decode_event, encode_event
from billing_domain.core.transactions import COMPENSATED, COMPLETED, FAILED, PENDING, TransactionAggregate

# Hypothesis' caches go to a temporary directory, not into the repository (database=None: no example store).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "billing-recon-hypothesis")
SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CREDIT_REASONS = ("deposit", "transfer_in", "refund", "adjustment")
DEBIT_REASONS = ("withdrawal", "transfer_out", "fee", "adjustment")


@dataclass
class Expected:
    """What a correct fold must end with, tracked alongside the generated stream."""

    events: list[Event]
    balance: int
    min_balance: int
    max_balance: int
    status: str
    credits: int = 0
    debits: int = 0
    owner_id: str = ""
    currency: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


@st.composite
def legal_account_streams(draw: st.DrawFn) -> Expected:
    stream = AccountStream(draw(st.sampled_from(["acc-1", "acc-äöü", "acc-" + "9" * 40])))
    owner = draw(st.text(min_size=1, max_size=12))
    currency = draw(st.sampled_from(["EUR", "USD", "JPY"]))
    low = draw(st.integers(-10_000, 0))  # balance starts at 0, so min ≤ 0 < max
    high = draw(st.integers(1, 10**12))
    stream.opened(owner_id=owner, currency=currency, min_balance_minor=low, max_balance_minor=high)
    model = Expected(stream.events, 0, low, high, ACTIVE, owner_id=owner, currency=currency)

    def floor() -> int:
        """The lowest balance the invariants allow right now."""
        return max(0, model.min_balance)

    for _ in range(draw(st.integers(0, 30))):
        moves = ["limits"]
        if model.max_balance > model.balance:
            moves.append("credit")
        if model.balance > floor():
            moves.append("debit")
        moves.append("suspend" if model.status == ACTIVE else "reactivate")
        move = draw(st.sampled_from(moves))
        if move == "credit":
            amount = draw(st.integers(1, model.max_balance - model.balance))
            reason = draw(st.sampled_from(CREDIT_REASONS))
            tx = draw(st.none() | st.just("tx-1")) if reason in ("transfer_in", "refund") else None
            stream.credited(amount, reason, transaction_id=tx)
            model.balance += amount
            model.credits += amount
        elif move == "debit":
            amount = draw(st.integers(1, model.balance - floor()))
            reason = draw(st.sampled_from(DEBIT_REASONS))
            stream.debited(amount, reason, transaction_id="tx-2" if reason == "transfer_out" else None)
            model.balance -= amount
            model.debits += amount
        elif move == "limits":
            model.min_balance = draw(st.integers(-10_000, model.balance))
            model.max_balance = draw(st.integers(max(model.balance, model.min_balance + 1), 10**12))
            stream.limits_changed(model.min_balance, model.max_balance)
        elif move == "suspend":
            stream.suspended(draw(st.text(max_size=10)))
            model.status = SUSPENDED
        else:
            stream.reactivated()
            model.status = ACTIVE
    if draw(st.booleans()):
        stream.closed()
        model.status = CLOSED
    return model


@st.composite
def with_redeliveries(draw: st.DrawFn, events: list[Event]) -> tuple[list[Event], int]:
    """The stream with copies of earlier events inserted anywhere after their first occurrence."""
    result = list(events)
    count = draw(st.integers(1, 8))
    for _ in range(count):
        original = draw(st.sampled_from(events))
        first = next(i for i, e in enumerate(result) if e is original)
        result.insert(draw(st.integers(first + 1, len(result))), original)
    return result, count


@SETTINGS
@given(legal_account_streams())
def test_legal_stream_keeps_the_invariants_and_balances(expected: Expected) -> None:
    account = AccountAggregate.from_events(expected.events)
    account.validate_invariants()
    assert not account.violations
    assert account.balance_minor == expected.balance
    credits = sum(e.payload.amount_minor for e in expected.events if isinstance(e.payload, AccountCredited))
    debits = sum(e.payload.amount_minor for e in expected.events if isinstance(e.payload, AccountDebited))
    assert account.balance_minor == credits - debits == expected.credits - expected.debits
    assert (account.min_balance_minor, account.max_balance_minor) == (expected.min_balance, expected.max_balance)
    assert account.status == expected.status
    assert account.version == len(expected.events)
    assert account.last_event_id == expected.events[-1].event_id
    assert (account.owner_id, account.currency) == (expected.owner_id, expected.currency)


@SETTINGS
@given(st.data())
def test_redeliveries_never_change_the_final_state(data: st.DataObject) -> None:
    expected = data.draw(legal_account_streams())
    stream, duplicates = data.draw(with_redeliveries(expected.events))
    once = AccountAggregate.from_events(expected.events)
    account = AccountAggregate(once.aggregate_id)
    applied = [account.apply(event) for event in stream]
    assert applied.count(False) == duplicates
    assert applied.count(True) == len(expected.events)
    assert account.state() == once.state()
    assert not account.violations and not once.violations
    assert account.event_digests == once.event_digests and account.last_event_id == once.last_event_id


@SETTINGS
@given(legal_account_streams())
def test_fold_of_decoded_wire_events_equals_fold_of_the_events(expected: Expected) -> None:
    events = expected.events
    key = events[0].aggregate_id.encode("utf-8")
    decoded = [decode_event(encode_event(e), key) for e in events]
    assert decoded == events
    assert AccountAggregate.from_events(decoded).state() == AccountAggregate.from_events(events).state()


END_STATUS = {"none": PENDING, "completed": COMPLETED, "failed": FAILED, "compensated": COMPENSATED}


@st.composite
def legal_sagas(draw: st.DrawFn) -> tuple[list[Event], str, str | None]:
    saga = SagaStream(draw(st.sampled_from(["tx-1", "tx-ß", "tx-" + "0" * 36])))
    saga.initiated(amount_minor=draw(st.integers(1, 10**12)), currency=draw(st.sampled_from(["EUR", "USD"])))
    end = draw(st.sampled_from(sorted(END_STATUS)))
    reason = None
    if end == "completed":
        saga.completed()
    elif end == "failed":
        reason = draw(st.text(max_size=20))
        saga.failed(reason)
    elif end == "compensated":
        saga.compensated()
    return saga.events, END_STATUS[end], reason


@SETTINGS
@given(st.data())
def test_legal_sagas_end_in_the_expected_status(data: st.DataObject) -> None:
    events, status, reason = data.draw(legal_sagas())
    stream, duplicates = data.draw(with_redeliveries(events))
    tx = TransactionAggregate(events[0].aggregate_id)
    applied = [tx.apply(e) for e in stream]
    assert applied.count(False) == duplicates
    assert tx.status == status
    assert tx.failure_reason == reason
    assert tx.version == len(events)
    assert tx.initiated_at == events[0].occurred_at
    assert not tx.violations
    tx.validate_invariants()
