"""The account aggregate: the fold, the four invariants, the money-after-close rule and the stream rules."""

from __future__ import annotations

import pytest
from support.builders import T0, AccountStream, SagaStream, make_event

from billing_domain.core.accounts import ACTIVE, CLOSED, SUSPENDED, AccountAggregate, AccountState
from billing_domain.core.aggregate import event_digest
from billing_domain.core.events import AccountCredited, AccountDebited
from billing_domain.core.exceptions import EventPosition, InvariantViolationError, StreamCorruptionError


def _realistic() -> AccountStream:
    s = AccountStream("acc-42")
    s.opened(owner_id="owner-7", currency="EUR", min_balance_minor=0, max_balance_minor=100_000)
    s.credited(50_000, "deposit")                                  # 50_000
    s.debited(12_345, "withdrawal")                                # 37_655
    s.debited(2_500, "transfer_out", transaction_id="tx-1")        # 35_155
    s.credited(2_500, "refund", transaction_id="tx-1")             # 37_655
    s.credited(7_000, "transfer_in", transaction_id="tx-2")        # 44_655
    s.debited(150, "fee")                                          # 44_505
    s.limits_changed(1_000, 250_000)
    s.suspended("fraud check")
    s.reactivated()
    s.credited(5, "adjustment")                                    # 44_510
    s.debited(10, "adjustment")                                    # 44_500
    return s


def test_fold_of_a_realistic_stream() -> None:
    stream = _realistic()
    account = AccountAggregate.from_events(stream.events)
    last = stream.events[-1]
    assert account.state() == AccountState(
        account_id="acc-42", owner_id="owner-7", currency="EUR", balance_minor=44_500,
        min_balance_minor=1_000, max_balance_minor=250_000, status=ACTIVE, version=12,
        last_event_id=last.event_id, updated_at=last.occurred_at,
    )
    assert not account.violations
    account.validate_invariants()  # does not raise


def test_status_follows_suspend_reactivate_close() -> None:
    stream = AccountStream()
    account = AccountAggregate("acc-1")
    account.apply(stream.opened())
    assert account.status == ACTIVE
    account.apply(stream.suspended())
    assert account.status == SUSPENDED
    account.apply(stream.reactivated())
    assert account.status == ACTIVE
    account.apply(stream.closed())
    assert account.status == CLOSED
    assert account.version == 4
    account.validate_invariants()


def test_apply_returns_true_for_a_new_event() -> None:
    stream = AccountStream()
    account = AccountAggregate("acc-1")
    assert account.apply(stream.opened()) is True
    assert account.apply(stream.credited(10)) is True
    assert account.event_digests == b"".join(event_digest(e.event_id) for e in stream.events)
    assert account.last_event_id == stream.events[-1].event_id


def test_from_events_needs_an_event() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        AccountAggregate.from_events([])


# --- the four invariants ---------------------------------------------------------------------------
def _fold_and_expect_violation(stream: AccountStream, fragment: str) -> AccountAggregate:
    account = AccountAggregate.from_events(stream.events)
    assert len(account.violations) == 1
    assert fragment in account.violations[0]
    with pytest.raises(InvariantViolationError) as info:
        account.validate_invariants()
    assert info.value.aggregate_id == stream.aggregate_id
    assert info.value.version == account.version
    assert fragment in info.value.detail
    return account


def test_negative_balance_is_a_violation() -> None:
    stream = AccountStream()
    stream.opened(min_balance_minor=-5_000, max_balance_minor=10_000)  # an overdraft limit cannot allow < 0
    stream.credited(100)
    stream.debited(300)
    account = _fold_and_expect_violation(stream, "balance -200 is negative")
    assert account.violations[0].startswith("v3:")
    assert account.balance_minor == -200  # the fold goes on and shows what the events say


def test_balance_below_min_is_a_violation() -> None:
    stream = AccountStream()
    stream.opened(min_balance_minor=0, max_balance_minor=10_000)
    stream.credited(1_000)
    stream.limits_changed(500, 10_000)
    stream.debited(600)
    account = _fold_and_expect_violation(stream, "balance 400 is below min balance 500")
    assert account.violations[0].startswith("v4:")


def test_balance_above_max_is_a_violation() -> None:
    stream = AccountStream()
    stream.opened(max_balance_minor=1_000)
    stream.credited(1_000)
    stream.credited(1)
    account = _fold_and_expect_violation(stream, "balance 1001 is above max balance 1000")
    assert account.violations[0].startswith("v3:")


def test_max_equal_to_min_is_a_violation() -> None:
    # balance 100 sits inside [100, 100], so only the "max > min" rule is broken
    stream = AccountStream()
    stream.opened(max_balance_minor=10_000)
    stream.credited(100)
    stream.limits_changed(100, 100)
    account = _fold_and_expect_violation(stream, "max balance 100 is not above min balance 100")
    assert account.violations[0].startswith("v3:")


def test_max_equal_to_min_at_opening_is_a_violation() -> None:
    stream = AccountStream()
    stream.opened(min_balance_minor=0, max_balance_minor=0)
    _fold_and_expect_violation(stream, "max balance 0 is not above min balance 0")


def test_max_below_min_is_a_violation() -> None:
    stream = AccountStream()
    stream.opened(max_balance_minor=10_000)
    stream.limits_changed(500, 100)
    account = AccountAggregate.from_events(stream.events)
    assert len(account.violations) == 1
    with pytest.raises(InvariantViolationError):
        account.validate_invariants()


@pytest.mark.parametrize(("balance", "low", "high", "broken"), [
    (-1, -10, 10, "negative"),
    (5, 6, 10, "below min"),
    (11, 0, 10, "above max"),
    (5, 5, 5, "not above min"),
    (0, 0, 1, None),
    (10, 0, 10, None),
])
def test_broken_invariant_boundaries(balance: int, low: int, high: int, broken: str | None) -> None:
    account = AccountAggregate("acc-1")
    account.balance_minor, account.min_balance_minor, account.max_balance_minor = balance, low, high
    result = account.broken_invariant()
    if broken is None:
        assert result is None
        account.validate_invariants()
    else:
        assert result is not None and broken in result
        with pytest.raises(InvariantViolationError, match="account invariant"):
            account.validate_invariants()


def test_broken_invariant_on_state_changed_after_the_fold() -> None:
    """validate_invariants also checks the current state, not just what the fold recorded."""
    account = AccountAggregate.from_events(_realistic().events)
    account.max_balance_minor = account.min_balance_minor
    with pytest.raises(InvariantViolationError, match="account invariant"):
        account.validate_invariants()


def test_only_the_first_violation_is_recorded() -> None:
    stream = AccountStream()
    stream.opened()
    stream.debited(1)
    stream.debited(1)
    stream.debited(1)
    account = AccountAggregate.from_events(stream.events)
    assert account.violations == ["v2: balance -1 is negative"]
    assert account.balance_minor == -3


# --- no money after close --------------------------------------------------------------------------
@pytest.mark.parametrize("money", ["credit", "debit"])
def test_money_after_close_is_recorded_and_raised(money: str) -> None:
    stream = AccountStream()
    stream.opened()
    stream.credited(500)
    stream.closed()
    late = stream.credited(100) if money == "credit" else stream.debited(100)
    account = AccountAggregate.from_events(stream.events)
    assert account.status == CLOSED
    assert account.version == 4
    assert len(account.violations) == 1
    assert late.event_id in account.violations[0]
    assert "after AccountClosed" in account.violations[0]
    with pytest.raises(InvariantViolationError, match="after AccountClosed"):
        account.validate_invariants()


def test_non_money_events_after_close_are_not_a_violation() -> None:
    stream = AccountStream()
    stream.opened()
    stream.closed()
    stream.limits_changed(0, 5_000)
    account = AccountAggregate.from_events(stream.events)
    assert not account.violations
    account.validate_invariants()


# --- stream rules ----------------------------------------------------------------------------------
def test_redelivery_is_ignored() -> None:
    stream = _realistic()
    account = AccountAggregate.from_events(stream.events)
    before = account.state()
    for event in (stream.events[0], stream.events[1], stream.events[5], stream.events[-1]):
        assert account.apply(event) is False
    assert account.state() == before
    assert not account.violations


def test_redelivery_of_the_last_event_does_not_double_a_credit() -> None:
    stream = AccountStream()
    stream.opened()
    credit = stream.credited(700)
    account = AccountAggregate("acc-1")
    account.apply(stream.events[0])
    assert account.apply(credit) is True
    assert account.apply(credit) is False
    assert account.balance_minor == 700


def test_gap_is_stream_corruption_and_the_event_is_not_applied() -> None:
    stream = AccountStream()
    stream.opened()
    stream.credited(100)
    skipped = stream.credited(200)
    after_gap = stream.credited(400)
    account = AccountAggregate.from_events(stream.events[:2])
    before = account.state()
    position = EventPosition("billing.account-events", 0, 99)
    with pytest.raises(StreamCorruptionError) as info:
        account.apply(after_gap, position)
    error = info.value
    assert (error.expected_version, error.got_version) == (3, 4)
    assert error.reason == "version gap"
    assert error.event_id == after_gap.event_id
    assert error.position == position
    assert "billing.account-events[0]@99" in str(error)
    assert account.state() == before
    # the missing event still fits afterwards
    assert account.apply(skipped) is True
    assert account.balance_minor == 300


def test_different_event_at_a_used_version_is_stream_corruption() -> None:
    stream = AccountStream()
    stream.opened()
    stream.credited(100)
    stream.credited(200)
    account = AccountAggregate.from_events(stream.events)
    before = account.state()
    impostor = make_event(AccountDebited(50, None, "withdrawal"), aggregate_id="acc-1", version=2)
    with pytest.raises(StreamCorruptionError) as info:
        account.apply(impostor)
    assert info.value.reason == "a different event with a used version"
    assert (info.value.expected_version, info.value.got_version) == (4, 2)
    assert info.value.event_id == impostor.event_id
    assert account.state() == before


def test_different_event_at_the_current_version_is_stream_corruption() -> None:
    stream = AccountStream()
    stream.opened()
    stream.credited(100)
    account = AccountAggregate.from_events(stream.events)
    twin = make_event(AccountCredited(100, None, "deposit"), aggregate_id="acc-1", version=2)
    with pytest.raises(StreamCorruptionError):
        account.apply(twin)
    assert account.balance_minor == 100


def test_stream_must_start_with_account_opened() -> None:
    stream = AccountStream()
    first = stream.credited(100)
    account = AccountAggregate("acc-1")
    with pytest.raises(StreamCorruptionError, match="not AccountOpened") as info:
        account.apply(first)
    assert info.value.event_id == first.event_id
    assert account.version == 0
    assert account.event_digests == b"" and account.last_event_id is None
    assert account.balance_minor == 0


def test_account_opened_twice_is_stream_corruption() -> None:
    stream = AccountStream()
    stream.opened()
    stream.opened()
    account = AccountAggregate("acc-1")
    account.apply(stream.events[0])
    with pytest.raises(StreamCorruptionError, match="not version 1"):
        account.apply(stream.events[1])
    assert account.version == 1


def test_transaction_event_on_an_account_is_stream_corruption() -> None:
    stream = AccountStream()
    stream.opened()
    saga_event = SagaStream("acc-1").completed()
    stray = make_event(saga_event.payload, aggregate_id="acc-1", version=2)
    account = AccountAggregate.from_events(stream.events)
    with pytest.raises(StreamCorruptionError, match="does not belong"):
        account.apply(stray)
    assert account.version == 1


def test_apply_across_gap_continues_the_fold() -> None:
    stream = AccountStream()
    stream.opened()
    stream.credited(1_000)
    stream.credited(50)  # v3: lost
    after_gap = stream.credited(200)  # v4
    tail = stream.debited(300)  # v5
    account = AccountAggregate.from_events(stream.events[:2])
    with pytest.raises(StreamCorruptionError):
        account.apply(after_gap)
    account.apply_across_gap(after_gap)
    assert account.version == 4
    assert account.balance_minor == 1_200
    assert account.last_event_id == after_gap.event_id
    assert account.updated_at == after_gap.occurred_at
    assert account.apply(tail) is True
    assert account.state().balance_minor == 900
    assert account.version == 5
    # redelivery on both sides of the gap is still recognised
    assert account.apply(stream.events[1]) is False
    assert account.apply(after_gap) is False
    assert account.balance_minor == 900


def test_violation_after_a_gap_names_the_event_version() -> None:
    stream = AccountStream()
    stream.opened()
    stream.credited(100)  # v2: lost
    overdraw = stream.debited(500)  # v3
    account = AccountAggregate.from_events(stream.events[:1])
    account.apply_across_gap(overdraw)
    assert account.violations == ["v3: balance -500 is negative"]


def test_updated_at_is_the_last_event_time() -> None:
    stream = AccountStream(start=T0)
    stream.opened()
    last = stream.credited(1)
    account = AccountAggregate.from_events(stream.events)
    assert account.updated_at == last.occurred_at


def test_a_version_below_one_is_corruption_not_a_redelivery_of_the_last_event() -> None:
    """Only pre-decoded events get here (the decoder refuses them); version 0 once read the last event's id."""
    stream = AccountStream()
    stream.opened()
    last = stream.credited(10)
    account = AccountAggregate.from_events(stream.events)
    for version in (0, -1, -(2**70)):
        copy = make_event(last.payload, aggregate_id="acc-1", version=version, event_id=last.event_id,
                          occurred_at=last.occurred_at)
        with pytest.raises(StreamCorruptionError, match="is not a version") as info:
            account.apply(copy)
        assert info.value.field == "aggregate_version"
    assert (account.version, account.balance_minor) == (2, 10)


def test_an_event_inside_an_earlier_gap_is_named_so() -> None:
    stream = AccountStream()
    stream.opened()
    lost = stream.credited(1)  # v2, arrives after v3
    after = stream.credited(2)  # v3
    account = AccountAggregate.from_events(stream.events[:1])
    account.apply_across_gap(after)
    with pytest.raises(StreamCorruptionError, match="skipped by an earlier gap"):
        account.apply(lost)
    assert account.event_digest_at(2) is None and account.event_digest_at(3) == event_digest(after.event_id)
