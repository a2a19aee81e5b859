"""A stand-in for the real billing engine, run in its own process, for the live-traffic tests (issue 13).

This is not our `billing-recon projector` (billing_sandbox/projector.py): it plays the production engine
the pipeline reconciles against, so the tests see what an operator sees while the engine runs.

- The **writer** (main thread) appends contract events at a steady rate with confluent-kafka's idempotent
  producer: accounts opened, deposits, withdrawals and whole transfer sagas, several interleaved, ending
  completed, failed, compensated or left pending (after the initiation, or after the source's debit).
  Balances stay within each account's limits (money promised to a saga is reserved), so the history
  itself is clean.
- The **applier** (its own thread) applies each event to `billing.account_projection` and
  `billing.transaction_projection` `--delay` seconds after the broker confirmed it, in append order,
  the way an engine's projector does: a plain INSERT for a new row, a plain UPDATE per event (never our
  guarded bulk upsert). It folds the events itself; the writer's model is a second, independent fold.
- Told to stop (a line `stop` or EOF on stdin, SIGTERM/SIGINT, or `--stop-file`), it finishes the sagas
  under way, flushes, applies everything appended, and checks its rows equal the writer's fold (every
  column, by version). It prints JSON lines: `{"status": "running", ...}` a few times a second,
  `{"withheld": ...}` once, and a last `{"status": "stopped", "exact": ..., ...}`; it exits 0 only if
  every row is exact.

`--withhold` opens one extra account (zero balance, never used again) whose event is never applied: a row
missing for an old event, for the tests of the lag window's edge.

Run: `python tests/support/standin_engine.py --bootstrap-servers ... --database-url ... --account-topic ...
--transaction-topic ... --prefix live- --rate 150 --delay 0.5 --seed 1`.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import psycopg
from confluent_kafka import KafkaError, Message, Producer

from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    CreditReason,
    DebitReason,
    Event,
    Payload,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
    encode_event,
)

CURRENCIES = ("EUR", "USD")
MIN_ACCOUNTS_PER_CURRENCY = 4
MAX_BALANCE_MINOR = 50_000_000
STATUS_EVERY_S = 0.2
# Outcomes of a new transfer and their weights; "pending_*" sagas stop there and stay in flight.
OUTCOMES: dict[str, int] = {"completed": 55, "failed": 10, "compensated": 15, "pending_initiated": 8,
                            "pending_debited": 12}
Outcome = Literal["completed", "failed", "compensated", "pending_initiated", "pending_debited"]


# --- the writer's model: the engine's own fold of what it appended ------------------------------------
@dataclass
class AccountModel:
    account_id: str
    owner_id: str
    currency: str
    min_balance_minor: int
    max_balance_minor: int
    balance_minor: int = 0
    reserved_out_minor: int = 0  # promised to sagas, not debited yet
    reserved_in_minor: int = 0  # promised by sagas (transfer_in, refund), not credited yet
    version: int = 0
    last_event_id: str | None = None
    updated_at: datetime | None = None

    @property
    def spendable_minor(self) -> int:
        return self.balance_minor - self.reserved_out_minor - self.min_balance_minor

    @property
    def headroom_minor(self) -> int:
        return self.max_balance_minor - self.balance_minor - self.reserved_in_minor

    def row(self) -> tuple[Any, ...]:
        return (self.account_id, self.owner_id, self.currency, self.balance_minor, self.min_balance_minor,
                self.max_balance_minor, "active", self.version, self.last_event_id, self.updated_at)


@dataclass
class TransactionModel:
    transaction_id: str
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str
    initiated_at: datetime
    status: str = "pending"
    failure_reason: str | None = None
    version: int = 0
    updated_at: datetime | None = None

    def row(self) -> tuple[Any, ...]:
        return (self.transaction_id, self.source_account_id, self.destination_account_id, self.amount_minor,
                self.currency, self.status, self.failure_reason, self.version, self.initiated_at, self.updated_at)


ACCOUNT_COLUMNS = ("account_id", "owner_id", "currency", "balance_minor", "min_balance_minor", "max_balance_minor",
                   "status", "version", "last_event_id", "updated_at")
TRANSACTION_COLUMNS = ("transaction_id", "source_account_id", "destination_account_id", "amount_minor", "currency",
                       "status", "failure_reason", "version", "initiated_at", "updated_at")


class Ledger:
    """The engine's write side: builds each event, bumps the aggregate's version and folds it in."""

    def __init__(self, prefix: str, rng: random.Random, seed: int) -> None:
        self.prefix = prefix
        self.rng = rng
        # Event ids from their own stream, named by the prefix: beside a simulator (or another stand-in) seeded
        # alike, equal ids would read as redeliveries of one another's events.
        self._ids = random.Random(f"standin-event-ids:{prefix}:{seed}")
        self.accounts: dict[str, AccountModel] = {}
        self.transactions: dict[str, TransactionModel] = {}
        self.withheld: set[str] = set()
        self._accounts_opened = 0
        self._transfers = 0

    def _event(self, aggregate_type: Literal["account", "transaction"], aggregate_id: str, version: int,
               payload: Payload, correlation: str | None) -> Event:
        event_id = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
        return Event(event_id, type(payload).__name__, 1, aggregate_type, aggregate_id, version,
                     datetime.now(UTC), correlation, payload)

    def open_account(self, currency: str) -> Event:
        self._accounts_opened += 1
        number = self._accounts_opened
        account = AccountModel(f"{self.prefix}acc-{number:06d}", f"{self.prefix}owner-{number % 50:03d}", currency,
                               0, MAX_BALANCE_MINOR)
        self.accounts[account.account_id] = account
        return self._account_event(account, AccountOpened(account.owner_id, currency, account.min_balance_minor,
                                                          account.max_balance_minor), None)

    def credit(self, account: AccountModel, amount: int, transaction_id: str | None, reason: CreditReason) -> Event:
        account.balance_minor += amount
        return self._account_event(account, AccountCredited(amount, transaction_id, reason), transaction_id)

    def debit(self, account: AccountModel, amount: int, transaction_id: str | None, reason: DebitReason) -> Event:
        account.balance_minor -= amount
        return self._account_event(account, AccountDebited(amount, transaction_id, reason), transaction_id)

    def _account_event(self, account: AccountModel, payload: Payload, correlation: str | None) -> Event:
        account.version += 1
        event = self._event("account", account.account_id, account.version, payload, correlation)
        account.last_event_id, account.updated_at = event.event_id, event.occurred_at
        return event

    def initiate(self, source: AccountModel, destination: AccountModel, amount: int) -> tuple[TransactionModel, Event]:
        self._transfers += 1
        transaction_id = f"{self.prefix}tx-{self._transfers:07d}"
        event = self._event("transaction", transaction_id, 1, TransactionInitiated(
            source.account_id, destination.account_id, amount, source.currency), transaction_id)
        saga = TransactionModel(transaction_id, source.account_id, destination.account_id, amount, source.currency,
                                event.occurred_at, version=1, updated_at=event.occurred_at)
        self.transactions[transaction_id] = saga
        return saga, event

    def finish(self, saga: TransactionModel, payload: Payload) -> Event:
        saga.version += 1
        event = self._event("transaction", saga.transaction_id, saga.version, payload, saga.transaction_id)
        saga.status = {"TransactionCompleted": "completed", "TransactionFailed": "failed",
                       "TransactionCompensated": "compensated"}[type(payload).__name__]
        saga.failure_reason = payload.reason if isinstance(payload, TransactionFailed) else None
        saga.updated_at = event.occurred_at
        return event

    def usable(self, currency: str | None = None) -> list[AccountModel]:
        return [a for a in self.accounts.values()
                if a.account_id not in self.withheld and (currency is None or a.currency == currency)]


# --- the traffic: short scripts (generators of events), several interleaved ---------------------------
Script = Iterator[Event]


def opening(ledger: Ledger, currency: str) -> Script:
    # Lazy like every script: an event is built (and its version taken) only when it is appended.
    yield ledger.open_account(currency)


def deposit(ledger: Ledger) -> Script:
    account = ledger.rng.choice(ledger.usable())
    amount = min(ledger.rng.randint(1_000, 60_000), account.headroom_minor)
    if amount > 0:
        yield ledger.credit(account, amount, None, "deposit")


def withdrawal(ledger: Ledger) -> Script:
    account = ledger.rng.choice(ledger.usable())
    amount = min(ledger.rng.randint(100, 5_000), account.spendable_minor)
    if amount > 0:
        yield ledger.debit(account, amount, None, "withdrawal")


def transfer(ledger: Ledger, outcome: Outcome) -> Script:
    """A saga in the engine's order: initiated, debit on the source, credit on the destination, the end."""
    currency = ledger.rng.choice(CURRENCIES)
    sources = [a for a in ledger.usable(currency) if a.spendable_minor > 0]
    if not sources:
        return
    source = ledger.rng.choice(sources)
    destination = ledger.rng.choice([a for a in ledger.usable(currency) if a is not source])
    amount = min(ledger.rng.randint(100, 20_000), source.spendable_minor, destination.headroom_minor)
    if amount <= 0:
        return
    source.reserved_out_minor += amount
    incoming = source if outcome == "compensated" else destination
    incoming.reserved_in_minor += amount
    saga, initiated = ledger.initiate(source, destination, amount)
    yield initiated
    if outcome == "failed":  # refused before any money moved
        source.reserved_out_minor -= amount
        incoming.reserved_in_minor -= amount
        yield ledger.finish(saga, TransactionFailed("destination refused the transfer"))
        return
    if outcome == "pending_initiated":
        return  # left in flight before the debit: the reservation stays
    source.reserved_out_minor -= amount
    yield ledger.debit(source, amount, saga.transaction_id, "transfer_out")
    if outcome == "pending_debited":
        return  # in flight: debited, never credited
    incoming.reserved_in_minor -= amount
    if outcome == "compensated":
        yield ledger.credit(source, amount, saga.transaction_id, "refund")
        yield ledger.finish(saga, TransactionCompensated())
    else:
        yield ledger.credit(destination, amount, saga.transaction_id, "transfer_in")
        yield ledger.finish(saga, TransactionCompleted())


class Traffic:
    """Picks the next event: a step of one of up to `concurrency` scripts under way, chosen at random."""

    def __init__(self, ledger: Ledger, concurrency: int = 6) -> None:
        self.ledger = ledger
        self.concurrency = concurrency
        self.active: list[Script] = []

    def next_event(self) -> Event:
        while True:
            if len(self.active) < self.concurrency:
                self.active.append(self._new_script())
            script = self.ledger.rng.choice(self.active)
            event = next(script, None)
            if event is not None:
                return event
            self.active.remove(script)

    def finish(self) -> Iterator[Event]:
        """Every script under way run to its end, so no saga is left half done by the stop."""
        for script in self.active:
            yield from script
        self.active.clear()

    def _new_script(self) -> Script:
        rng, ledger = self.ledger.rng, self.ledger
        for currency in CURRENCIES:
            if len(ledger.usable(currency)) < MIN_ACCOUNTS_PER_CURRENCY:
                return opening(ledger, currency)
        roll = rng.random()
        if roll < 0.04:
            return opening(ledger, rng.choice(CURRENCIES))
        if roll < 0.30:
            return deposit(ledger)
        if roll < 0.40:
            return withdrawal(ledger)
        outcome = rng.choices(list(OUTCOMES), weights=list(OUTCOMES.values()))[0]
        return transfer(ledger, cast(Outcome, outcome))


# --- the applier: the engine's projector, a moment behind the appends ----------------------------------
@dataclass
class Outgoing:
    event: Event
    confirmed_at: float | None = None  # time.monotonic() of the broker's confirmation
    error: str | None = None


@dataclass
class ApplierStats:
    applied: int = 0
    max_lag_s: float = 0.0  # the longest time from an event's occurred_at to its row's commit
    errors: list[str] = field(default_factory=list)


class Applier(threading.Thread):
    """Applies confirmed events in append order, each `delay_s` after its confirmation (at once when draining)."""

    def __init__(self, database_url: str, delay_s: float, withheld: set[str]) -> None:
        super().__init__(name="standin-applier", daemon=True)
        self.database_url = database_url
        self.delay_s = delay_s
        self.withheld = withheld
        self.stats = ApplierStats()
        self._queue: deque[Outgoing] = deque()
        self._cond = threading.Condition()
        self._draining = False
        self._balances: dict[str, int] = {}  # the projector's own fold of the balances it applied

    def add(self, outgoing: Outgoing) -> None:
        with self._cond:
            self._queue.append(outgoing)

    def confirmed(self, outgoing: Outgoing, error: str | None) -> None:
        with self._cond:
            outgoing.confirmed_at, outgoing.error = time.monotonic(), error
            self._cond.notify()

    def drain(self) -> None:
        with self._cond:
            self._draining = True
            self._cond.notify()

    def run(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                while (batch := self._take_due()) is not None:
                    self._apply_batch(conn, batch)
        except Exception as exc:  # the check reports it; the writer must not hang on a dead applier
            self.stats.errors.append(f"applier stopped: {exc!r}")

    def _take_due(self) -> list[Outgoing] | None:
        """The confirmed events at the head whose delay has passed; None once drained and empty."""
        with self._cond:
            while True:
                if not self._queue and self._draining:
                    return None
                wait = self._wait_for_head()
                if wait is None:
                    return self._pop_due()
                self._cond.wait(wait)

    def _wait_for_head(self) -> float | None:
        """None when the head is due now, else how long to wait (a notify may come sooner)."""
        if not self._queue or self._queue[0].confirmed_at is None:
            return 0.05
        if self._draining:
            return None
        due = self._queue[0].confirmed_at + self.delay_s
        return None if due <= time.monotonic() else due - time.monotonic()

    def _pop_due(self) -> list[Outgoing]:
        now, batch = time.monotonic(), []
        while self._queue and (head := self._queue[0]).confirmed_at is not None and (
                self._draining or head.confirmed_at + self.delay_s <= now):
            batch.append(self._queue.popleft())
        return batch

    def _apply_batch(self, conn: psycopg.Connection[Any], batch: list[Outgoing]) -> None:
        # One transaction per wake-up: each event still is its own plain statement, in append order.
        with conn.transaction():
            for outgoing in batch:
                if outgoing.error is not None:
                    self.stats.errors.append(f"{outgoing.event.event_id} not delivered: {outgoing.error}")
                elif outgoing.event.aggregate_id not in self.withheld:
                    self._apply(conn, outgoing.event)
        now = datetime.now(UTC)
        self.stats.applied += len(batch)
        for outgoing in batch:
            self.stats.max_lag_s = max(self.stats.max_lag_s, (now - outgoing.event.occurred_at).total_seconds())

    def _apply(self, conn: psycopg.Connection[Any], event: Event) -> None:
        if event.aggregate_type == "account":
            self._apply_account(conn, event)
        else:
            self._apply_transaction(conn, event)

    def _apply_account(self, conn: psycopg.Connection[Any], event: Event) -> None:
        payload = event.payload
        if isinstance(payload, AccountOpened):
            self._balances[event.aggregate_id] = 0
            conn.execute("INSERT INTO billing.account_projection (account_id, owner_id, currency, balance_minor, "
                         "min_balance_minor, max_balance_minor, status, version, last_event_id, updated_at) "
                         "VALUES (%s, %s, %s, 0, %s, %s, 'active', %s, %s, %s)",
                         (event.aggregate_id, payload.owner_id, payload.currency, payload.min_balance_minor,
                          payload.max_balance_minor, event.aggregate_version, event.event_id, event.occurred_at))
        elif isinstance(payload, AccountCredited | AccountDebited):
            sign = 1 if isinstance(payload, AccountCredited) else -1
            balance = self._balances[event.aggregate_id] + sign * payload.amount_minor
            self._balances[event.aggregate_id] = balance
            self._update(conn, "UPDATE billing.account_projection SET balance_minor = %s, version = %s, "
                               "last_event_id = %s, updated_at = %s WHERE account_id = %s",
                         (balance, event.aggregate_version, event.event_id, event.occurred_at, event.aggregate_id))

    def _apply_transaction(self, conn: psycopg.Connection[Any], event: Event) -> None:
        payload = event.payload
        if isinstance(payload, TransactionInitiated):
            conn.execute("INSERT INTO billing.transaction_projection (transaction_id, source_account_id, "
                         "destination_account_id, amount_minor, currency, status, failure_reason, version, "
                         "initiated_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'pending', NULL, %s, %s, %s)",
                         (event.aggregate_id, payload.source_account_id, payload.destination_account_id,
                          payload.amount_minor, payload.currency, event.aggregate_version, event.occurred_at,
                          event.occurred_at))
        else:
            status = {TransactionCompleted: "completed", TransactionFailed: "failed",
                      TransactionCompensated: "compensated"}[type(payload)]
            reason = payload.reason if isinstance(payload, TransactionFailed) else None
            self._update(conn, "UPDATE billing.transaction_projection SET status = %s, failure_reason = %s, "
                               "version = %s, updated_at = %s WHERE transaction_id = %s",
                         (status, reason, event.aggregate_version, event.occurred_at, event.aggregate_id))

    def _update(self, conn: psycopg.Connection[Any], sql: str, params: Sequence[Any]) -> None:
        if conn.execute(sql, params).rowcount != 1:
            self.stats.errors.append(f"no row for {params[-1]} at v{params[-3]}")


# --- the process: options, the writer's loop, the stop, the check -------------------------------------
@dataclass(frozen=True)
class Options:
    bootstrap_servers: str
    database_url: str
    account_topic: str
    transaction_topic: str
    prefix: str
    rate: float
    delay_s: float
    seed: int
    withhold: bool
    stop_file: Path | None


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(description="A stand-in billing engine for the live-traffic tests.")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--account-topic", required=True)
    parser.add_argument("--transaction-topic", required=True)
    parser.add_argument("--prefix", default="live-", help="prefix of every account and transaction id")
    parser.add_argument("--rate", type=float, default=150.0, help="events appended per second")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds from confirmation to projection")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--withhold", action="store_true", help="one account whose event is never applied")
    parser.add_argument("--stop-file", type=Path, default=None)
    args = parser.parse_args(argv)
    return Options(args.bootstrap_servers, libpq_url(args.database_url), args.account_topic, args.transaction_topic,
                   args.prefix, args.rate, args.delay, args.seed, args.withhold, args.stop_file)


def libpq_url(url: str) -> str:
    """psycopg wants a plain libpq URL; the project's URLs may name SQLAlchemy's driver."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


class Engine:
    """The writer's loop in the main thread (which also serves the delivery callbacks), the applier beside it."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.ledger = Ledger(options.prefix, random.Random(options.seed), options.seed)
        self.traffic = Traffic(self.ledger)
        self.applier = Applier(options.database_url, options.delay_s, self.ledger.withheld)
        self.producer = Producer({"bootstrap.servers": options.bootstrap_servers, "enable.idempotence": True,
                                  "acks": "all", "linger.ms": 2})
        self.stop = threading.Event()
        self.appended = 0
        self.confirmed = 0

    def append(self, event: Event) -> None:
        outgoing = Outgoing(event)
        self.applier.add(outgoing)  # queued before produce: the applier keeps the append order
        topic = self.options.account_topic if event.aggregate_type == "account" else self.options.transaction_topic
        self.producer.produce(topic, key=event.aggregate_id.encode(), value=encode_event(event),
                              on_delivery=self._on_delivery(outgoing))
        self.appended += 1

    def _on_delivery(self, outgoing: Outgoing) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, _message: Message) -> None:
            self.confirmed += error is None
            self.applier.confirmed(outgoing, None if error is None else str(error))
        return delivered

    def run(self) -> int:
        # Connected and both topics' partitions known before the first event, so the first second's
        # confirmations (and hence projections) are not held back by the producer's start-up.
        for topic in (self.options.account_topic, self.options.transaction_topic):
            self.producer.list_topics(topic, timeout=10)
        self.applier.start()
        if self.options.withhold:
            self._withhold_one()
        self._write_until_stopped()
        for event in self.traffic.finish():
            self.append(event)
        unconfirmed = self.producer.flush(30)
        self.applier.drain()
        self.applier.join(60)
        return self._check(unconfirmed)

    def _withhold_one(self) -> None:
        event = self.ledger.open_account(CURRENCIES[0])
        self.ledger.withheld.add(event.aggregate_id)
        self.append(event)
        self.producer.flush(10)  # confirmed before it is announced: the test reads it as appended
        say({"withheld": {"entity_type": "account", "entity_id": event.aggregate_id,
                          "occurred_at": event.occurred_at.isoformat()}})

    def _write_until_stopped(self) -> None:
        interval, next_at, next_status = 1.0 / self.options.rate, time.monotonic(), 0.0
        while not self._stop_requested():
            now = time.monotonic()
            if now >= next_status:
                self._status("running")
                next_status = now + STATUS_EVERY_S
            if now < next_at:
                self.producer.poll(min(next_at - now, 0.02))
                continue
            self.append(self.traffic.next_event())
            self.producer.poll(0)
            # A steady rate: after a stall, go on from now rather than burst to catch up.
            next_at = max(next_at + interval, now - interval)

    def _stop_requested(self) -> bool:
        stop_file = self.options.stop_file
        return self.stop.is_set() or (stop_file is not None and stop_file.exists())

    def _status(self, status: str, **extra: Any) -> None:
        say({"status": status, "appended": self.appended, "confirmed": self.confirmed,
             "applied": self.applier.stats.applied, **extra})

    def _check(self, unconfirmed: int) -> int:
        mismatches = [*self.applier.stats.errors, *compare_rows(self.options.database_url, self.ledger)]
        if unconfirmed or self.applier.is_alive():
            mismatches.append(f"{unconfirmed} events unconfirmed, applier alive: {self.applier.is_alive()}")
        outcomes: dict[str, int] = {}
        for saga in self.ledger.transactions.values():
            outcomes[saga.status] = outcomes.get(saga.status, 0) + 1
        self._status("stopped", exact=not mismatches, mismatches=mismatches[:20],
                     accounts=len(self.ledger.accounts), transactions=len(self.ledger.transactions),
                     transaction_status=outcomes, max_apply_lag_s=round(self.applier.stats.max_lag_s, 3))
        return 0 if not mismatches else 1


def compare_rows(database_url: str, ledger: Ledger) -> list[str]:
    """Every row of ours against the writer's fold: equal in every column, at the same version."""
    expected = {a.account_id: a.row() for a in ledger.accounts.values() if a.account_id not in ledger.withheld}
    expected |= {t.transaction_id: t.row() for t in ledger.transactions.values()}
    actual: dict[str, tuple[Any, ...]] = {}
    with psycopg.connect(database_url) as conn:
        for table, columns in (("account_projection", ACCOUNT_COLUMNS),
                               ("transaction_projection", TRANSACTION_COLUMNS)):
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM billing.{table} "
                                f"WHERE starts_with({columns[0]}, %s)", (ledger.prefix,))
            actual |= {row[0]: tuple(row) for row in rows}
    problems = [f"{key}: row {actual.get(key)} != events {row}" for key, row in expected.items()
                if actual.get(key) != row]
    return problems + [f"{key}: a row with no events (or withheld)" for key in actual.keys() - expected.keys()]


def _listen_for_stop(engine: Engine) -> None:
    """A line `stop` or the end of stdin (the test process gone) stops the engine; so do SIGTERM and SIGINT."""
    def on_signal(_signum: int, _frame: object) -> None:
        engine.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        engine.stop.set()

    threading.Thread(target=read_stdin, name="standin-stdin", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    engine = Engine(parse_options(sys.argv[1:] if argv is None else argv))
    _listen_for_stop(engine)
    return engine.run()


if __name__ == "__main__":
    sys.exit(main())
