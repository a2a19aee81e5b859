"""A clean, deterministic billing history: N accounts over D days, every event legal.

Everything comes from one `random.Random(seed)` and the configured start: ids, amounts and
timestamps (milliseconds after `start`, never the wall clock). Actions are drawn per account
from a time-ordered queue; each event is applied at once to the aggregate it belongs to, so the
generator checks its own moves with the domain's single fold, and the final aggregates are
exactly what a caught-up projector holds. Transfer sagas run to their end within a few seconds,
every one: the history is a still log (its engine has stopped), so a saga left pending would be
`stuck` once the run's clock passes the threshold, and a clean history must stay clean whenever it is
reconciled. (In-flight transfers are the live tests' and the stand-in engine's: a running engine's.)
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any, Literal

from billing_domain.core.accounts import ACTIVE, CLOSED, SUSPENDED, AccountAggregate
from billing_domain.core.events import (
    AccountClosed,
    AccountCredited,
    AccountDebited,
    AccountLimitsChanged,
    AccountOpened,
    AccountReactivated,
    AccountSuspended,
    CreditReason,
    DebitReason,
    Event,
    Payload,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
)
from billing_domain.core.transactions import TransactionAggregate

AggregateType = Literal["account", "transaction"]

DAY_MS = 86_400_000
ACTIONS_PER_ACCOUNT_DAY = 8.0
SAMPLED_TRANSACTIONS = 256  # transactions whose last event is kept (for duplicate injection)
# Cumulative weights of an active account's next action.
ACTION_WEIGHTS: tuple[tuple[float, str], ...] = (
    (0.30, "deposit"), (0.46, "withdrawal"), (0.52, "fee"), (0.86, "transfer"), (0.89, "adjustment"),
    (0.95, "limits"), (0.98, "suspend"), (0.984, "close"), (1.00, "deposit"),
)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate. The same config always gives byte-identical events."""

    seed: int = 7
    accounts: int = 200
    days: int = 3
    faults: bool = True
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    currencies: tuple[str, ...] = ("EUR", "USD", "GBP")
    bulk_projections: bool | None = None  # None: bulk when the history has more than 200k events

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "accounts": self.accounts, "days": self.days, "faults": self.faults,
                "start": self.start.isoformat(), "currencies": list(self.currencies),
                "bulk_projections": self.bulk_projections}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimulationConfig:
        return cls(seed=data["seed"], accounts=data["accounts"], days=data["days"], faults=data["faults"],
                   start=datetime.fromisoformat(data["start"]), currencies=tuple(data["currencies"]),
                   bulk_projections=data["bulk_projections"])


@dataclass(slots=True)
class History:
    """The generated history as its folded aggregates, plus what fault injection needs to know."""

    accounts: dict[str, AccountAggregate] = field(default_factory=dict)
    transactions: dict[str, TransactionAggregate] = field(default_factory=dict)
    openings: dict[str, AccountOpened] = field(default_factory=dict)
    last_events: dict[str, Event] = field(default_factory=dict)  # every account, a few transactions
    event_count: int = 0
    end: datetime | None = None  # occurred_at of the last event: the cut time of a clean history


def new_event(rng: random.Random, aggregate_type: AggregateType, aggregate_id: str, version: int, occurred_at: datetime,
              payload: Payload, correlation_id: str | None = None) -> Event:
    """An event of the contract with an id drawn from `rng` (so it is reproducible)."""
    return Event(new_id(rng), type(payload).__name__, 1, aggregate_type, aggregate_id, version, occurred_at,
                 correlation_id, payload)


def new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _ActiveSet:
    """Active accounts of one currency: O(1) add, remove and seeded random choice."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item not in self.index:
            self.index[item] = len(self.items)
            self.items.append(item)

    def remove(self, item: str) -> None:
        position = self.index.pop(item, None)
        if position is None:
            return
        last = self.items.pop()
        if last != item:
            self.items[position] = last
            self.index[last] = position


class HistoryGenerator:
    """Iterate `events()` once; `history` then holds the folded result."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.history = History()
        self._end_ms = config.days * DAY_MS
        self._clock_ms = 0
        self._queue: list[tuple[int, int, str]] = []
        self._seq = 0
        self._currency_of: dict[str, str] = {}
        self._active = {c: _ActiveSet() for c in config.currencies}

    def events(self) -> Iterator[Event]:
        self._schedule_openings()
        while self._queue and self._queue[0][0] < self._end_ms:
            at_ms, _, account_id = heapq.heappop(self._queue)
            yield from self._act(at_ms, account_id)
        self.history.end = self._at(self._clock_ms)

    # --- scheduling ---------------------------------------------------------------------------------
    def _schedule_openings(self) -> None:
        for n in range(self.config.accounts):
            account_id = new_id(self.rng)
            self._currency_of[account_id] = self.config.currencies[n % len(self.config.currencies)]
            # Most accounts exist from the first hours; some open while the history runs.
            window = 0.05 if self.rng.random() < 0.85 else 0.8
            self._schedule(int(self.rng.random() * window * self._end_ms), account_id)

    def _schedule(self, at_ms: int, account_id: str) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_ms, self._seq, account_id))

    def _next_activity(self, at_ms: int, account_id: str) -> None:
        gap = self.rng.expovariate(ACTIONS_PER_ACCOUNT_DAY / DAY_MS)
        self._schedule(at_ms + 1 + int(gap), account_id)

    # --- emitting -----------------------------------------------------------------------------------
    def _at(self, ms: int) -> datetime:
        return self.config.start + timedelta(milliseconds=ms)

    def _emit(self, at_ms: int, aggregate: AccountAggregate | TransactionAggregate, payload: Payload,
              correlation_id: str | None = None) -> Event:
        # One global clock: every stream's timestamps rise with its versions.
        self._clock_ms = max(self._clock_ms, at_ms)
        kind: AggregateType = "account" if isinstance(aggregate, AccountAggregate) else "transaction"
        event = new_event(self.rng, kind, aggregate.aggregate_id, aggregate.version + 1, self._at(self._clock_ms),
                          payload, correlation_id)
        aggregate.apply(event)
        self.history.event_count += 1
        last = self.history.last_events
        if kind == "account" or event.aggregate_id in last or len(last) < self.config.accounts + SAMPLED_TRANSACTIONS:
            self.history.last_events[aggregate.aggregate_id] = event
        return event

    # --- account actions ----------------------------------------------------------------------------
    def _act(self, at_ms: int, account_id: str) -> list[Event]:
        account = self.history.accounts.get(account_id)
        if account is None:
            events = self._open(at_ms, account_id)
        elif account.status == SUSPENDED:
            events = [self._emit(at_ms, account, AccountReactivated())]
            self._active[account.currency].add(account_id)
        else:
            events = self._activity(at_ms, account)
        if self.history.accounts[account_id].status != CLOSED:
            self._next_activity(at_ms, account_id)
        return events

    def _open(self, at_ms: int, account_id: str) -> list[Event]:
        account = AccountAggregate(account_id)
        self.history.accounts[account_id] = account
        minimum = 0 if self.rng.random() < 0.9 else -self.rng.randint(1, 100) * 1_000
        opened = AccountOpened(f"cust-{self.rng.randrange(10**8):08d}", self._currency_of[account_id], minimum,
                               self.rng.randint(20, 2_000) * 50_000)
        self.history.openings[account_id] = opened
        self._active[opened.currency].add(account_id)
        return [self._emit(at_ms, account, opened)]

    def _activity(self, at_ms: int, account: AccountAggregate) -> list[Event]:
        draw = self.rng.random()
        action = next(name for limit, name in ACTION_WEIGHTS if draw < limit)
        if action == "transfer":
            return self._transfer(at_ms, account)
        if action == "suspend":
            self._active[account.currency].remove(account.aggregate_id)
            return [self._emit(at_ms, account, AccountSuspended("review"))]
        if action == "close":
            return self._close(at_ms, account)
        if action == "limits":
            return [self._emit(at_ms, account, self._new_limits(account))]
        return self._money(at_ms, account, action)

    def _money(self, at_ms: int, account: AccountAggregate, action: str) -> list[Event]:
        room = account.max_balance_minor - account.balance_minor
        spare = account.balance_minor - max(account.min_balance_minor, 0)
        if action == "adjustment":
            action = "adjust_in" if self.rng.random() < 0.5 else "adjust_out"
        wanted = {"deposit": (500, 200_000), "adjust_in": (1, 10_000), "withdrawal": (500, 150_000),
                  "fee": (50, 2_500), "adjust_out": (1, 10_000)}[action]
        credit = action in ("deposit", "adjust_in")
        amount = min(self.rng.randint(*wanted), room if credit else spare)
        if amount <= 0:
            return []
        if credit:
            credit_reason: CreditReason = "deposit" if action == "deposit" else "adjustment"
            return [self._emit(at_ms, account, AccountCredited(amount, None, credit_reason))]
        debit_reason: DebitReason = {"fee": "fee", "adjust_out": "adjustment"}.get(action, "withdrawal")  # type: ignore[assignment]
        return [self._emit(at_ms, account, AccountDebited(amount, None, debit_reason))]

    def _new_limits(self, account: AccountAggregate) -> AccountLimitsChanged:
        balance = account.balance_minor
        minimum = 0 if self.rng.random() < 0.7 else self.rng.randint(0, balance)
        return AccountLimitsChanged(minimum, max(balance, minimum) + self.rng.randint(1, 1_000) * 50_000)

    def _close(self, at_ms: int, account: AccountAggregate) -> list[Event]:
        events = []
        if account.min_balance_minor > 0:
            events.append(self._emit(at_ms, account, AccountLimitsChanged(0, account.max_balance_minor)))
        if account.balance_minor > 0:
            events.append(self._emit(at_ms, account, AccountDebited(account.balance_minor, None, "withdrawal")))
        events.append(self._emit(at_ms, account, AccountClosed()))
        self._active[account.currency].remove(account.aggregate_id)
        return events

    # --- transfer sagas -----------------------------------------------------------------------------
    def _transfer(self, at_ms: int, source: AccountAggregate) -> list[Event]:
        candidates = self._active[source.currency].items
        destination = self.history.accounts[self.rng.choice(candidates)] if len(candidates) > 1 else source
        spare = source.balance_minor - max(source.min_balance_minor, 0)
        if destination is source or spare <= 0:
            return self._money(at_ms, source, "deposit")
        amount = min(self.rng.randint(100, 100_000), spare)
        saga = TransactionAggregate(new_id(self.rng))
        self.history.transactions[saga.aggregate_id] = saga
        tid = saga.aggregate_id
        events = [self._emit(at_ms, saga, TransactionInitiated(source.aggregate_id, destination.aggregate_id,
                                                               amount, source.currency), tid)]
        # Each saga step a little after the one before, as the engine would commit them.
        steps = iter(list(accumulate([self.rng.randint(20, 1_500) for _ in range(4)], initial=at_ms))[1:])
        outcome = self._outcome(destination, amount)
        if outcome == "failed":
            return [*events, self._emit(next(steps), saga, TransactionFailed("declined by risk checks"), tid)]
        events.append(self._emit(next(steps), source, AccountDebited(amount, tid, "transfer_out"), tid))
        if outcome == "completed":
            events.append(self._emit(next(steps), destination, AccountCredited(amount, tid, "transfer_in"), tid))
            return [*events, self._emit(next(steps), saga, TransactionCompleted(), tid)]
        events.append(self._emit(next(steps), source, AccountCredited(amount, tid, "refund"), tid))
        return [*events, self._emit(next(steps), saga, TransactionCompensated(), tid)]

    def _outcome(self, destination: AccountAggregate, amount: int) -> str:
        draw = self.rng.random()
        if draw < 0.08:
            return "failed"
        fits = destination.balance_minor + amount <= destination.max_balance_minor and destination.status == ACTIVE
        return "completed" if fits and draw >= 0.14 else "compensated"
