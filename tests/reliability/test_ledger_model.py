"""Fault 7: a stateful model of the ledger. Hypothesis opens accounts, deposits, withdraws and runs
transfers that complete, fail, are compensated or stay pending (in flight); after every step the fold
(Replay over the events so far) equals the model and every accounting identity holds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from billing_domain.config import Topics
from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    Payload,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
)
from billing_domain.core.exceptions import EventPosition
from billing_domain.core.lag import LagJudge
from billing_domain.core.ledger import ledger_findings, ledger_identities
from billing_domain.core.replay import Replay
from billing_domain.core.sagas import saga_findings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = Topics()
MAX = 10**9


@dataclass
class ModelAccount:
    currency: str
    balance: int = 0
    version: int = 1


@dataclass
class ModelTransfer:
    source: str
    destination: str
    amount: int
    status: str = "pending"
    version: int = 1
    debited: bool = False


@dataclass
class Ledger:
    events: list[tuple[Event, EventPosition]] = field(default_factory=list)
    clock: int = 0

    def add(self, aggregate_type: str, aggregate_id: str, version: int, payload: Payload,
            correlation: str | None = None) -> None:
        self.clock += 1
        topic = TOPICS.accounts if aggregate_type == "account" else TOPICS.transactions
        event = Event(str(uuid.uuid4()), type(payload).__name__, 1, aggregate_type,  # type: ignore[arg-type]
                      aggregate_id, version, T0 + timedelta(seconds=self.clock), correlation, payload)
        self.events.append((event, EventPosition(topic, 0, len(self.events))))


class LedgerMachine(RuleBasedStateMachine):
    accounts = Bundle("accounts")

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        self.model: dict[str, ModelAccount] = {}
        self.transfers: dict[str, ModelTransfer] = {}

    @rule(target=accounts, currency=st.sampled_from(["EUR", "USD"]))
    def open_account(self, currency: str) -> str:
        account_id = f"acc-{len(self.model)}"
        self.ledger.add("account", account_id, 1, AccountOpened("owner", currency, 0, MAX))
        self.model[account_id] = ModelAccount(currency)
        return account_id

    def _money(self, account_id: str, payload: Payload, delta: int, transfer: str | None = None) -> None:
        account = self.model[account_id]
        account.version += 1
        account.balance += delta
        self.ledger.add("account", account_id, account.version, payload, transfer)

    @rule(account=accounts, amount=st.integers(1, 10**6))
    def deposit(self, account: str, amount: int) -> None:
        if self.model[account].balance + amount <= MAX:
            self._money(account, AccountCredited(amount, None, "deposit"), amount)

    @rule(account=accounts, amount=st.integers(1, 10**6), fee=st.booleans())
    def withdraw(self, account: str, amount: int, fee: bool) -> None:
        amount = min(amount, self.model[account].balance)
        if amount > 0:
            self._money(account, AccountDebited(amount, None, "fee" if fee else "withdrawal"), -amount)

    @rule(source=accounts, destination=accounts, amount=st.integers(1, 10**6),
          ending=st.sampled_from(["completed", "failed", "compensated", "pending", "pending_undebited"]))
    def transfer(self, source: str, destination: str, amount: int, ending: str) -> None:
        src, dst = self.model[source], self.model[destination]
        if source == destination or src.currency != dst.currency:
            return
        amount = min(amount, src.balance)
        if ending == "failed" or amount <= 0:
            amount = max(amount, 1)
        transfer_id = f"tx-{len(self.transfers)}"
        self.ledger.add("transaction", transfer_id, 1, TransactionInitiated(source, destination, amount, src.currency))
        self.transfers[transfer_id] = saga = ModelTransfer(source, destination, amount)
        if ending in ("failed", "pending_undebited") or src.balance < amount:
            if ending == "failed" or src.balance < amount:
                self._settle(transfer_id, "failed")
            return
        self._money(source, AccountDebited(amount, transfer_id, "transfer_out"), -amount, transfer_id)
        saga.debited = True
        if ending != "pending":
            self._settle(transfer_id, ending)

    def _settle(self, transfer_id: str, ending: str) -> None:
        saga = self.transfers[transfer_id]
        if ending == "completed":
            self._money(saga.destination, AccountCredited(saga.amount, transfer_id, "transfer_in"), saga.amount,
                        transfer_id)
            payload: Payload = TransactionCompleted()
        elif ending == "compensated":
            self._money(saga.source, AccountCredited(saga.amount, transfer_id, "refund"), saga.amount, transfer_id)
            payload = TransactionCompensated()
        else:
            payload = TransactionFailed("declined")
        saga.version += 1
        saga.status = ending
        self.ledger.add("transaction", transfer_id, saga.version, payload)

    @precondition(lambda self: any(t.status == "pending" and t.debited for t in self.transfers.values()))
    @rule(data=st.data(), ending=st.sampled_from(["completed", "compensated"]))
    def settle_in_flight(self, data: Any, ending: str) -> None:
        pending = sorted(k for k, t in self.transfers.items() if t.status == "pending" and t.debited)
        self._settle(data.draw(st.sampled_from(pending)), ending)

    @invariant()
    def fold_equals_model_and_the_ledger_balances(self) -> None:
        replay = Replay(TOPICS)
        replay.feed_events(self.ledger.events)
        assert not replay.corrupt and not replay.invariant_breaks
        assert {k: (a.balance_minor, a.version, a.currency) for k, a in replay.accounts.items()} == {
            k: (m.balance, m.version, m.currency) for k, m in self.model.items()}
        assert {k: (t.status, t.version) for k, t in replay.transactions.items()} == {
            k: (m.status, m.version) for k, m in self.transfers.items()}
        rows = {k: a.state() for k, a in replay.accounts.items()}
        identities = ledger_identities(replay, rows, LagJudge.strict(datetime.now(UTC)))
        assert all(i.holds for i in identities), [i for i in identities if not i.holds]
        assert ledger_findings(identities) == []
        assert saga_findings(replay, LagJudge.strict(datetime.now(UTC))) == []
        in_flight = sum(t.amount for t in self.transfers.values() if t.status == "pending" and t.debited)
        assert sum(m.balance for m in self.model.values()) + in_flight == sum(
            sum(v for r, v in replay.credits[c].items() if r in ("deposit", "adjustment")) for c in replay.credits
        ) - sum(sum(v for r, v in replay.debits[c].items() if r in ("withdrawal", "fee", "adjustment"))
                for c in replay.debits)


LedgerMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=30, deadline=None, database=None,
                                           suppress_health_check=[HealthCheck.too_slow])
TestLedgerModel = LedgerMachine.TestCase
