"""Finding texts for a person (issue 18.8): every amount says its currency and that it counts minor units
(integers: money is never a float), and the version is said once."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
from support.builders import AccountStream

from billing_domain.config import Topics
from billing_domain.core.accounts import AccountAggregate
from billing_domain.core.diff import diff_accounts
from billing_domain.core.exceptions import EventPosition
from billing_domain.core.findings import Kind, LedgerIdentity, minor_units
from billing_domain.core.lag import LagJudge
from billing_domain.core.ledger import TRANSFERS_CONSERVE_MONEY, ledger_findings
from billing_domain.core.replay import MoneyMove, Replay
from billing_domain.core.sagas import saga_problems
from billing_domain.core.transactions import COMPLETED, TransactionAggregate

FLOAT = re.compile(r"\d\.\d")  # no "13.04": amounts stay integer minor units end to end


def _replay(stream: AccountStream) -> Replay:
    replay = Replay(Topics.with_prefix("t."))
    replay.feed_events((e, EventPosition("t.account-events", 0, i)) for i, e in enumerate(stream.events))
    return replay


def test_a_balance_mismatch_names_the_currency_of_its_minor_units() -> None:
    stream = AccountStream("acc-1")
    stream.opened(currency="GBP")
    stream.credited(1_000)
    row = AccountAggregate.from_events(stream.events).state()
    [finding] = diff_accounts(_replay(stream), {"acc-1": msgspec.structs.replace(row, balance_minor=997)},
                              LagJudge(datetime.now(UTC)))
    assert finding.kind == Kind.BALANCE_MISMATCH
    assert finding.detail == "balance 997 at v2, events say 1000 (difference -3), in GBP minor units"


def test_a_broken_invariant_says_its_version_once_and_its_currency() -> None:
    stream = AccountStream("acc-1")
    stream.opened(currency="USD")
    stream.debited(1_304)  # below zero at v2
    [broken] = [f for f in diff_accounts(_replay(stream), {}, LagJudge(stream.events[-1].occurred_at))
                if f.kind == Kind.INVARIANT_VIOLATION]
    assert broken.detail == "v2: balance -1304 is negative, in USD minor units"


def test_a_broken_identity_says_its_minor_units() -> None:
    [finding] = ledger_findings([LedgerIdentity("EUR", TRANSFERS_CONSERVE_MONEY, "Σ out = Σ in", 1_500, 1_200)])
    assert finding.detail.endswith("1500 ≠ 1200 (difference 300), in EUR minor units"), finding.detail


def _completed_saga() -> TransactionAggregate:
    saga = TransactionAggregate("tx-1")
    saga.source_account_id, saga.destination_account_id = "acc-src", "acc-dst"
    saga.amount_minor, saga.currency, saga.status = 2_500, "EUR", COMPLETED
    return saga


def _leg(reason: str, account_id: str, amount_minor: int, currency: str = "EUR") -> MoneyMove:
    return MoneyMove(account_id, reason, amount_minor, currency, f"e-{reason}", datetime(2026, 3, 1, tzinfo=UTC))


def test_a_transfer_of_the_wrong_amount_names_the_currency() -> None:
    problems = saga_problems(_completed_saga(), [_leg("transfer_out", "acc-src", 2_499),
                                                 _leg("transfer_in", "acc-dst", 2_500)])
    assert problems == ["transfer_out of 2499 on acc-src, transfer amount is 2500, in EUR minor units"]


def test_amounts_in_two_currencies_name_each() -> None:
    problems = saga_problems(_completed_saga(), [_leg("transfer_out", "acc-src", 2_400, "USD"),
                                                 _leg("transfer_in", "acc-dst", 2_500)])
    assert problems[0] == "transfer_out of 2400 USD on acc-src, transfer amount is 2500 EUR, in minor units"
    assert not any(FLOAT.search(p) for p in problems)


def test_minor_units_without_a_known_currency() -> None:
    assert (minor_units("EUR"), minor_units(None), minor_units("")) == (
        "in EUR minor units", "in minor units", "in minor units")
