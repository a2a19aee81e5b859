"""Fault injection into a simulated history: every finding kind a few times, with its answer key.

Faults go in three phases, so each lands where the reconciler must find it:
  1. events the projector applies (invariant breaks, stuck and mismatched sagas, a lagging
     saga's start), appended and projected;
  2. projection rows edited behind the projector's back (corrupt, wrong, deleted, orphan,
     version-ahead rows), each a compare-and-set against the state the history folded to;
  3. messages the projector never applies (lagging events, duplicates, poison, gaps,
     conflicting versions), appended last.
Entities are drawn from a seeded shuffle of active accounts with room in their limits (and
completed transfers), each used by one fault at most, so no fault breaks another's expectation.
Injected events carry occurred_at no later than the history's end, which stays the cut time.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial

from msgspec.structs import replace
from sqlalchemy.engine import Connection

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.accounts import ACTIVE, SUSPENDED, AccountAggregate, AccountState
from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountLimitsChanged,
    Event,
    Payload,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
    encode_event,
)
from billing_domain.core.exceptions import BillingError
from billing_domain.core.transactions import COMPLETED, FAILED, TransactionAggregate, TransactionState
from billing_sandbox.simulate.history import AggregateType, History, new_event, new_id
from billing_sandbox.simulate.manifest import ExpectedFinding, InjectedFault

PER_KIND = 2
Project = Callable[[Sequence[Event]], None]
BALANCES = "balances_match_events"
TRANSFERS = "transfers_conserve_money"


class FaultInjectionError(BillingError):
    """A projection row was not the state the history folded to, so a fault could not be placed."""


def _finding(entity_type: str, entity_id: str, kind: str) -> ExpectedFinding:
    return ExpectedFinding(entity_type, entity_id, kind)


def _spare(account: AccountAggregate) -> int:
    """What the account can pay out without going below its floor."""
    return account.balance_minor - max(account.min_balance_minor, 0)


def _ledger(currency: str, identity: str) -> ExpectedFinding:
    return ExpectedFinding("ledger", f"{currency}:{identity}", "accounting_equation")


class FaultInjector:
    """Plan every fault, then run the three phases. `project` makes appended events projected."""

    def __init__(self, history: History, event_store: KafkaEventStore, projections: ProjectionStore,
                 project: Project, seed: int) -> None:
        assert history.end is not None, "generate the history first"
        self.history = history
        self.event_store = event_store
        self.projections = projections
        self.project = project
        self.rng = random.Random(f"{seed}:faults")
        self.end: datetime = history.end
        self.faults: list[InjectedFault] = []
        self.projected: list[Event] = []
        self.edits: list[Callable[[Connection], None]] = []
        self.unprojected: list[RawRecord] = []
        self._ledger_delta: dict[str, int] = defaultdict(int)  # projection-side change of identity 1
        self._accounts = self._shuffled([a.aggregate_id for a in history.accounts.values() if self._roomy(a)])
        self._transactions = self._shuffled([t.aggregate_id for t in history.transactions.values()
                                             if t.status == COMPLETED])

    def inject(self) -> tuple[list[InjectedFault], int]:
        """Place every fault; returns them and the number of messages appended."""
        for plan in (self._corrupt_balance, self._wrong_field, self._deleted_row, self._version_ahead,
                     self._orphan_row, self._lagging, self._duplicates, self._undecodable, self._version_gap,
                     self._conflicting_version, self._invariant_break, self._stuck_saga, self._saga_mismatch):
            plan()
        self.event_store.append(self.projected)
        self.project(self.projected)
        with self.projections.engine.begin() as conn:
            for edit in self.edits:
                edit(conn)
        self.event_store.append_raw(self.unprojected)
        return self.faults, len(self.projected) + len(self.unprojected)

    # --- choosing entities --------------------------------------------------------------------------
    def _shuffled(self, ids: list[str]) -> list[str]:
        self.rng.shuffle(ids)
        return ids

    def _roomy(self, account: AccountAggregate) -> bool:
        # Room both ways, so that every fault's money stays inside the limits unless meant not to.
        return (account.status == ACTIVE and account.version >= 2 and _spare(account) >= 2_000
                and account.max_balance_minor - account.balance_minor >= 200_000)

    def _take_account(self, currency: str | None = None) -> AccountAggregate | None:
        for i, account_id in enumerate(self._accounts):
            if currency is None or self.history.accounts[account_id].currency == currency:
                del self._accounts[i]
                return self.history.accounts[account_id]
        return None

    def _take_pair(self) -> tuple[AccountAggregate, AccountAggregate] | None:
        source = self._take_account()
        destination = self._take_account(source.currency) if source else None
        return (source, destination) if source and destination else None

    def _take_transaction(self, sampled: bool = False) -> TransactionAggregate | None:
        for i, transaction_id in enumerate(self._transactions):
            if not sampled or transaction_id in self.history.last_events:
                del self._transactions[i]
                return self.history.transactions[transaction_id]
        return None

    def _add(self, fault: str, entity_type: str, entity_id: str, detail: str, *expected: ExpectedFinding) -> None:
        self.faults.append(InjectedFault(fault, entity_type, entity_id, detail, list(expected)))

    # --- building blocks ----------------------------------------------------------------------------
    def _emit(self, aggregate: AccountAggregate | TransactionAggregate, payload: Payload, at: datetime,
              correlation_id: str | None = None) -> None:
        """An event appended and projected (phase 1); the history's fold follows it."""
        kind: AggregateType = "account" if isinstance(aggregate, AccountAggregate) else "transaction"
        event = new_event(self.rng, kind, aggregate.aggregate_id, aggregate.version + 1, at, payload, correlation_id)
        aggregate.apply(event)
        self.projected.append(event)

    def _append_unprojected(self, aggregate_id: str, version: int, payload: Payload,
                            kind: AggregateType = "account") -> None:
        event = new_event(self.rng, kind, aggregate_id, version, self.end, payload,
                          aggregate_id if kind == "transaction" else None)
        self._raw(kind, aggregate_id, encode_event(event))

    def _raw(self, kind: str, key: str, value: bytes) -> None:
        self.unprojected.append(RawRecord(self.event_store.topic_for(kind), key.encode(), value))

    def _new_saga(self, source: AccountAggregate, destination: AccountAggregate, amount: int,
                  at: datetime) -> TransactionAggregate:
        saga = TransactionAggregate(new_id(self.rng))
        self.history.transactions[saga.aggregate_id] = saga
        self._emit(saga, TransactionInitiated(source.aggregate_id, destination.aggregate_id, amount,
                                              source.currency), at, saga.aggregate_id)
        return saga

    def _set_account(self, seen: AccountState, new: AccountState) -> None:
        def edit(conn: Connection) -> None:
            if not self.projections.compare_and_set_account(conn, seen, new):
                raise FaultInjectionError(f"account row {seen.account_id} is not at its folded state")
        self.edits.append(edit)

    def _set_transaction(self, seen: TransactionState, new: TransactionState) -> None:
        def edit(conn: Connection) -> None:
            if not self.projections.compare_and_set_transaction(conn, seen, new):
                raise FaultInjectionError(f"transaction row {seen.transaction_id} is not at its folded state")
        self.edits.append(edit)

    # --- phase 2: projection rows -------------------------------------------------------------------
    def _corrupt_balance(self) -> None:
        for account in filter(None, (self._take_account() for _ in range(PER_KIND))):
            seen = account.state()
            # Always downwards (as deleted rows are): faults of one currency never cancel out in Σ.
            delta = self.rng.randint(1, seen.balance_minor)
            self._set_account(seen, replace(seen, balance_minor=seen.balance_minor - delta))
            self._ledger_delta[seen.currency] -= delta
            self._add("corrupt_balance", "account", seen.account_id,
                      f"balance_minor {seen.balance_minor} -> {seen.balance_minor - delta}",
                      _finding("account", seen.account_id, "balance_mismatch"), _ledger(seen.currency, BALANCES))

    def _wrong_field(self) -> None:
        for column in ("max_balance_minor", "owner_id", "status"):
            account = self._take_account()
            if account is None:
                return
            seen = account.state()
            wrong = (replace(seen, max_balance_minor=seen.max_balance_minor + 100_000) if column == "max_balance_minor"
                     else replace(seen, owner_id=f"{seen.owner_id}-x") if column == "owner_id"
                     else replace(seen, status=SUSPENDED))
            self._set_account(seen, wrong)
            self._add("wrong_field", "account", seen.account_id,
                      f"{column} {getattr(seen, column)!r} -> {getattr(wrong, column)!r}",
                      _finding("account", seen.account_id, "field_mismatch"))
        for column in ("amount_minor", "status", "destination_account_id"):
            saga = self._take_transaction()
            if saga is None:
                return
            state = saga.state()
            changed = (replace(state, amount_minor=state.amount_minor + 100) if column == "amount_minor"
                       else replace(state, status=FAILED) if column == "status"
                       else replace(state, destination_account_id=new_id(self.rng)))
            self._set_transaction(state, changed)
            self._add("wrong_field", "transaction", state.transaction_id,
                      f"{column} {getattr(state, column)!r} -> {getattr(changed, column)!r}",
                      _finding("transaction", state.transaction_id, "field_mismatch"))

    def _deleted_row(self) -> None:
        for account in filter(None, (self._take_account() for _ in range(PER_KIND))):
            self.edits.append(partial(self._delete, "account", account.aggregate_id))
            self._ledger_delta[account.currency] -= account.balance_minor
            self._add("deleted_row", "account", account.aggregate_id, f"row deleted (balance {account.balance_minor})",
                      _finding("account", account.aggregate_id, "missing_projection"),
                      _ledger(account.currency, BALANCES))
        saga = self._take_transaction()
        if saga is not None:
            self.edits.append(partial(self._delete, "transaction", saga.aggregate_id))
            self._add("deleted_row", "transaction", saga.aggregate_id, "row deleted",
                      _finding("transaction", saga.aggregate_id, "missing_projection"))

    def _delete(self, entity_type: str, entity_id: str, conn: Connection) -> None:
        if self.projections.delete_rows(conn, entity_type, [entity_id]) != 1:
            raise FaultInjectionError(f"no {entity_type} row {entity_id} to delete")

    def _version_ahead(self) -> None:
        for account in filter(None, (self._take_account() for _ in range(PER_KIND))):
            seen, ahead = account.state(), self.rng.randint(1, 3)
            self._set_account(seen, replace(seen, version=seen.version + ahead))
            self._add("version_ahead", "account", seen.account_id, f"version {seen.version} -> {seen.version + ahead}",
                      _finding("account", seen.account_id, "version_ahead"))
        saga = self._take_transaction()
        if saga is not None:
            state, ahead = saga.state(), self.rng.randint(1, 3)
            self._set_transaction(state, replace(state, version=state.version + ahead))
            self._add("version_ahead", "transaction", state.transaction_id,
                      f"version {state.version} -> {state.version + ahead}",
                      _finding("transaction", state.transaction_id, "version_ahead"))

    def _orphan_row(self) -> None:
        currencies = sorted({a.currency for a in self.history.accounts.values()})
        rows: list[AccountState] = []
        for n in range(PER_KIND):
            currency = currencies[n % len(currencies)]
            balance = self.rng.randint(1_000, 500_000)
            if self._ledger_delta[currency] + balance == 0:
                balance += 1  # an orphan must not cancel the other faults of its currency in Σ
            self._ledger_delta[currency] += balance
            row = AccountState(new_id(self.rng), "cust-orphan", currency, balance, 0, balance * 10, ACTIVE,
                               self.rng.randint(1, 5), new_id(self.rng), self.end)
            rows.append(row)
            self._add("orphan_row", "account", row.account_id, f"row with no events, balance {balance} {currency}",
                      _finding("account", row.account_id, "orphan_projection"), _ledger(currency, BALANCES))
        some = list(self.history.accounts)
        orphan = TransactionState(new_id(self.rng), some[0], some[-1], 12_345, currencies[0], COMPLETED, None, 3,
                                  self.end - timedelta(hours=2), self.end - timedelta(hours=2))
        self.edits.append(lambda conn: self._insert(conn, rows, orphan))
        self._add("orphan_row", "transaction", orphan.transaction_id, "row with no events",
                  _finding("transaction", orphan.transaction_id, "orphan_projection"))

    def _insert(self, conn: Connection, accounts: list[AccountState], transaction: TransactionState) -> None:
        self.projections.upsert_accounts(conn, accounts)
        self.projections.upsert_transactions(conn, [transaction])

    # --- phase 3: messages never projected ----------------------------------------------------------
    def _lagging(self) -> None:
        for account in filter(None, (self._take_account() for _ in range(PER_KIND))):
            count = self.rng.randint(1, 3)
            room = (account.max_balance_minor - account.balance_minor) // (4 * count)
            for k in range(count):
                self._append_unprojected(account.aggregate_id, account.version + 1 + k,
                                         AccountCredited(self.rng.randint(1, room), None, "deposit"))
            self._add("lagging", "account", account.aggregate_id,
                      f"{count} deposit(s) appended after v{account.version}, not projected",
                      _finding("account", account.aggregate_id, "lagging"))
        pair = self._take_pair()
        if pair is not None:
            # Started (and projected) a minute before the end, then failed unseen: lagging, not stuck.
            saga = self._new_saga(*pair, 1_000, self.end - timedelta(minutes=1))
            self._append_unprojected(saga.aggregate_id, 2, TransactionFailed("destination rejected"), "transaction")
            self._add("lagging", "transaction", saga.aggregate_id, "TransactionFailed appended, not projected",
                      _finding("transaction", saga.aggregate_id, "lagging"))

    def _duplicates(self) -> None:
        chosen: list[AccountAggregate | TransactionAggregate | None] = [self._take_account() for _ in range(PER_KIND)]
        chosen.append(self._take_transaction(sampled=True))
        for aggregate in filter(None, chosen):
            event = self.history.last_events[aggregate.aggregate_id]
            self._raw(event.aggregate_type, event.aggregate_id, encode_event(event))
            self._add("duplicates", event.aggregate_type, event.aggregate_id,
                      f"v{event.aggregate_version} ({event.event_id}) appended again; redelivery is normal")

    def _undecodable(self) -> None:
        for account in filter(None, (self._take_account() for _ in range(PER_KIND))):
            self._raw("account", account.aggregate_id, b"\xff\xfe<not json> " + self.rng.randbytes(8))
            self._add("undecodable", "account", account.aggregate_id, "garbage bytes appended",
                      _finding("account", account.aggregate_id, "stream_corrupt"))

    def _version_gap(self) -> None:
        for account in filter(None, (self._take_account() for _ in range(PER_KIND))):
            # The same limits again: whatever a replay does across the gap, no state changes.
            limits = AccountLimitsChanged(account.min_balance_minor, account.max_balance_minor)
            self._append_unprojected(account.aggregate_id, account.version + 2, limits)
            self._add("version_gap", "account", account.aggregate_id,
                      f"AccountLimitsChanged at v{account.version + 2} after v{account.version}",
                      _finding("account", account.aggregate_id, "stream_corrupt"))

    def _conflicting_version(self) -> None:
        for account in filter(None, (self._take_account() for _ in range(PER_KIND))):
            # A second AccountOpened at v1, identical but for its id: whichever one a reader keeps,
            # the account's state is the same, so only the stream rule is broken.
            self._append_unprojected(account.aggregate_id, 1, self.history.openings[account.aggregate_id])
            self._add("conflicting_version", "account", account.aggregate_id,
                      "a second AccountOpened (new event_id) at v1",
                      _finding("account", account.aggregate_id, "stream_corrupt"))

    # --- phase 1: events the projector applies ------------------------------------------------------
    def _invariant_break(self) -> None:
        for account in filter(None, (self._take_account() for _ in range(PER_KIND))):
            amount = account.balance_minor + self.rng.randint(1, 5_000)
            self._emit(account, AccountDebited(amount, None, "withdrawal"), self.end)
            self._add("invariant_break", "account", account.aggregate_id,
                      f"withdrawal of {amount} takes the balance to {account.balance_minor} (projected)",
                      _finding("account", account.aggregate_id, "invariant_violation"))

    def _stuck_saga(self) -> None:
        for pair in filter(None, (self._take_pair() for _ in range(PER_KIND))):
            source, destination = pair
            amount = _spare(source) // 4
            saga = self._new_saga(source, destination, amount, self.end - timedelta(hours=1))
            self._emit(source, AccountDebited(amount, saga.aggregate_id, "transfer_out"), self.end, saga.aggregate_id)
            self._add("stuck_saga", "transaction", saga.aggregate_id,
                      f"pending since {saga.initiated_at}, source {source.aggregate_id} debited (projected)",
                      _finding("transaction", saga.aggregate_id, "stuck"))

    def _saga_mismatch(self) -> None:
        for pair in filter(None, (self._take_pair() for _ in range(PER_KIND))):
            source, destination = pair
            amount = _spare(source) // 4
            saga = self._new_saga(source, destination, amount, self.end - timedelta(minutes=10))
            self._emit(source, AccountDebited(amount, saga.aggregate_id, "transfer_out"), self.end, saga.aggregate_id)
            self._emit(saga, TransactionCompleted(), self.end, saga.aggregate_id)
            self._add("saga_mismatch", "transaction", saga.aggregate_id,
                      f"completed, source debited {amount}, destination {destination.aggregate_id} never credited",
                      _finding("transaction", saga.aggregate_id, "saga_mismatch"),
                      _ledger(source.currency, TRANSFERS))
