"""The saga money check against a plain statement of the contract's rules, on generated legs.

`saga_problems` compares sorted legs first and counts them only when they differ (for speed); the
oracle here always counts, as the check did before that, and its text must come out line for line
the same. The rules: completed = one transfer_out on the source and one
transfer_in on the destination, compensated = one transfer_out and one refund on the source,
failed = no money, pending = at most the transfer_out.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from billing_domain.core.replay import MoneyMove
from billing_domain.core.sagas import saga_problems
from billing_domain.core.transactions import COMPENSATED, COMPLETED, FAILED, PENDING, TransactionAggregate

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "billing-recon-hypothesis")
SOURCE, DESTINATION, OTHER = "acc-src", "acc-dst", "acc-other"
LEG_AT = datetime(2026, 3, 1, tzinfo=UTC)


def oracle(saga: TransactionAggregate, moves: list[MoneyMove]) -> list[str]:
    wanted: Counter[tuple[str, str]] = Counter()
    if saga.status in (COMPLETED, COMPENSATED):
        wanted[("transfer_out", saga.source_account_id)] = 1
    if saga.status == COMPLETED:
        wanted[("transfer_in", saga.destination_account_id)] = 1
    if saga.status == COMPENSATED:
        wanted[("refund", saga.source_account_id)] = 1
    got = Counter((m.reason, m.account_id) for m in moves)
    problems: list[str] = []
    if saga.status == PENDING:
        extra = got - Counter({("transfer_out", saga.source_account_id): 1})
        problems += [f"{n} unexpected {reason} on {account} while pending" for (reason, account), n in extra.items()]
    else:
        problems += [f"missing {reason} on {account}" for (reason, account), n in (wanted - got).items()
                     for _ in range(n)]
        problems += [f"unexpected {reason} on {account}" + (" (failed transfers move no money)"
                                                             if saga.status == FAILED else "")
                     for (reason, account), n in (got - wanted).items() for _ in range(n)]
    problems += [f"{m.reason} of {m.amount_minor} on {m.account_id}, transfer amount is {saga.amount_minor}, "
                 f"in {saga.currency} minor units" if m.currency == saga.currency else
                 f"{m.reason} of {m.amount_minor} {m.currency} on {m.account_id}, transfer amount is "
                 f"{saga.amount_minor} {saga.currency}, in minor units"
                 for m in moves if m.amount_minor != saga.amount_minor]
    problems += [f"{m.reason} on {m.account_id} in {m.currency}, transfer currency is {saga.currency}"
                 for m in moves if m.currency != saga.currency]
    return problems


def a_saga(status: str) -> TransactionAggregate:
    saga = TransactionAggregate("tx-1")
    saga.source_account_id, saga.destination_account_id = SOURCE, DESTINATION
    saga.amount_minor, saga.currency, saga.status = 2_500, "EUR", status
    return saga


moves_strategy = st.lists(st.builds(
    MoneyMove,
    account_id=st.sampled_from((SOURCE, DESTINATION, OTHER)),
    reason=st.sampled_from(("transfer_out", "transfer_in", "refund")),
    amount_minor=st.sampled_from((2_500, 2_500, 2_499)),
    currency=st.sampled_from(("EUR", "EUR", "USD")),
    event_id=st.sampled_from(("e1", "e2", "e3")), occurred_at=st.just(LEG_AT)), max_size=4)


@settings(max_examples=400, deadline=None, database=None)
@given(status=st.sampled_from((PENDING, COMPLETED, COMPENSATED, FAILED)), moves=moves_strategy)
def test_saga_problems_match_the_rules(status: str, moves: list[MoneyMove]) -> None:
    saga = a_saga(status)
    assert saga_problems(saga, moves) == oracle(saga, moves)  # the same lines, in the same order


def test_a_completed_transfer_with_its_two_legs_in_any_order_has_no_problem() -> None:
    legs = [MoneyMove(DESTINATION, "transfer_in", 2_500, "EUR", "e2", LEG_AT),
            MoneyMove(SOURCE, "transfer_out", 2_500, "EUR", "e1", LEG_AT)]
    assert saga_problems(a_saga(COMPLETED), legs) == []
    assert saga_problems(a_saga(COMPLETED), legs[::-1]) == []
    assert saga_problems(a_saga(COMPLETED), legs[1:]) == [f"missing transfer_in on {DESTINATION}"]
