"""The billing engine's live projector: the event log applied, in order, to the projection tables.

A consumer-group member of both event topics. Each consumed batch is folded in one database
transaction (rows read `FOR UPDATE`, events applied in memory by the aggregates' own mutators,
rows written back with one guarded bulk upsert); the batch's offsets are committed only after
that transaction commits. A crash between the two redelivers the batch, which the version guard
makes harmless: an event at or below a row's version is a redelivery and is skipped, only
version + 1 is applied, and a gap is logged and left for the reconciler to report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from sqlalchemy.engine import Engine

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.aggregate import Aggregate
from billing_domain.core.cut import TopicPartitionKey
from billing_domain.core.events import AccountCredited, AccountDebited, Event, decode_event
from billing_domain.core.exceptions import BillingError, EventDecodeError, EventPosition, StreamCorruptionError
from billing_domain.core.transactions import TransactionAggregate, TransactionState

log = logging.getLogger(__name__)
MAX_BATCH = 5_000  # messages per database transaction: big enough to amortise the round trips
POLL_TIMEOUT_S = 0.2
A = TypeVar("A", bound=Aggregate)
BIGINT = range(-(2**63), 2**63)  # PostgreSQL bigint, the projections' money columns


class ProjectorTimeoutError(BillingError):
    """The projector did not reach the end of its partitions in time."""


def hydrate_account(state: AccountState) -> AccountAggregate:
    """An aggregate standing exactly where a projection row stands, ready for version + 1."""
    account = AccountAggregate(state.account_id)
    account.owner_id = state.owner_id
    account.currency = state.currency
    account.balance_minor = state.balance_minor
    account.min_balance_minor = state.min_balance_minor
    account.max_balance_minor = state.max_balance_minor
    account.status = state.status
    _hydrate_stream(account, state.version, state.last_event_id, state.updated_at)
    return account


def hydrate_transaction(state: TransactionState) -> TransactionAggregate:
    transaction = TransactionAggregate(state.transaction_id)
    transaction.source_account_id = state.source_account_id
    transaction.destination_account_id = state.destination_account_id
    transaction.amount_minor = state.amount_minor
    transaction.currency = state.currency
    transaction.status = state.status
    transaction.failure_reason = state.failure_reason
    transaction.initiated_at = state.initiated_at
    _hydrate_stream(transaction, state.version, None, state.updated_at)
    return transaction


def _hydrate_stream(aggregate: Aggregate, version: int, last_event_id: str | None,
                    updated_at: datetime | None) -> None:
    # The row keeps only the last event id: the aggregate stands at `version` knowing that one, so the
    # stream rules accept exactly version + 1, with no placeholder per earlier version (a row edited to
    # version 2**31 - 1 would have cost 16 GB of them).
    aggregate.start_at(version, last_event_id)
    aggregate.updated_at = updated_at


class ProjectionBatch:
    """The rows one batch touches, as aggregates; `apply` enforces the projector's version guard."""

    def __init__(self, accounts: dict[str, AccountState], transactions: dict[str, TransactionState]) -> None:
        self._accounts = {k: hydrate_account(v) for k, v in accounts.items()}
        self._transactions = {k: hydrate_transaction(v) for k, v in transactions.items()}
        self._changed: set[tuple[str, str]] = set()

    def apply(self, event: Event, position: EventPosition | None = None) -> bool:
        """Apply the event if it is its row's next version. Returns whether it was applied."""
        if event.aggregate_type == "account":
            return self._apply(self._accounts, AccountAggregate, event, position)
        return self._apply(self._transactions, TransactionAggregate, event, position)

    def changed_accounts(self) -> list[AccountState]:
        return [a.state() for k, a in self._accounts.items() if ("account", k) in self._changed]

    def changed_transactions(self) -> list[TransactionState]:
        return [t.state() for k, t in self._transactions.items() if ("transaction", k) in self._changed]

    def _apply(self, rows: dict[str, A], new: Callable[[str], A], event: Event, position: EventPosition | None) -> bool:
        current = rows.get(event.aggregate_id)
        version = current.version if current else 0
        if event.aggregate_version <= version:
            return False  # a redelivery (or a conflicting copy, which the reconciler reports)
        if event.aggregate_version > version + 1:
            log.warning("version gap on %s %s: projection at v%d, event %s is v%d; not applied (at %s)",
                        event.aggregate_type, event.aggregate_id, version, event.event_id,
                        event.aggregate_version, position)
            return False
        aggregate = current or new(event.aggregate_id)
        if not _row_fits(aggregate, event):
            log.warning("event not applied: %s %s v%d would take the balance of %s outside bigint (at %s)",
                        event.event_type, event.event_id, event.aggregate_version, event.aggregate_id, position)
            return False
        try:
            aggregate.apply(event, position)
        except StreamCorruptionError as exc:
            log.warning("event not applied: %s", exc)
            return False
        rows[event.aggregate_id] = aggregate
        self._changed.add((event.aggregate_type, event.aggregate_id))
        return True


def _row_fits(aggregate: Aggregate, event: Event) -> bool:
    """Whether the row after this event still fits the projection's bigint columns. The decoder bounds
    each amount, but a sum of them can leave the range, and a row the database refuses would stop the
    projector for good (the reconciler reports the account: its balance breaks its max balance)."""
    payload = event.payload
    if not isinstance(aggregate, AccountAggregate):
        return True
    if isinstance(payload, AccountCredited):
        return aggregate.balance_minor + payload.amount_minor in BIGINT
    if isinstance(payload, AccountDebited):
        return aggregate.balance_minor - payload.amount_minor in BIGINT
    return True


class LiveProjector:
    """The engine's projector: a consumer-group member applying both topics to the projections."""

    def __init__(self, event_store: KafkaEventStore, engine: Engine, group_id: str = "billing-projector",
                 session_timeout_ms: int = 6000) -> None:
        self.event_store = event_store
        self.projections = ProjectionStore(engine)
        self.group_id = group_id
        self._at_end: dict[TopicPartitionKey, bool] = {}
        self._next_offset: dict[TopicPartitionKey, int] = {}  # where each partition's fetch stands
        overrides: dict[str, str | int | float | bool] = {
            "group.id": group_id,
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(session_timeout_ms // 10, 100),
        }
        self._consumer = event_store.new_consumer(**overrides)
        self._consumer.subscribe(list(event_store.topics.all()), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)

    # --- public -------------------------------------------------------------------------------------
    def run_until_caught_up(self, timeout_s: float = 60) -> int:
        """Apply events until every assigned partition is at its end; returns events applied."""
        deadline = time.monotonic() + timeout_s
        self._refresh_ends()
        applied = 0
        while True:
            applied += self.poll_once()
            if self._at_end and all(self._at_end.values()):
                return applied
            if time.monotonic() > deadline:
                behind = sorted(f"{t}[{p}]" for (t, p), done in self._at_end.items() if not done)
                raise ProjectorTimeoutError(f"projector {self.group_id} not caught up after {timeout_s:.0f}s; "
                                            f"behind on {', '.join(behind) or 'no assigned partition'}")

    def run(self, stop: threading.Event) -> None:
        """Apply events until `stop` is set (for a background thread). A non-transient error ends it."""
        while not stop.is_set():
            self.poll_once()

    def close(self) -> None:
        self._consumer.close()

    def poll_once(self) -> int:
        """Consume one batch, apply it in one transaction, then commit its offsets. Returns events applied."""
        messages = self._consumer.consume(MAX_BATCH, timeout=POLL_TIMEOUT_S)
        events: list[tuple[Event, EventPosition]] = []
        offsets: dict[TopicPartitionKey, int] = {}
        for message in messages:
            event = self._read(message, offsets)
            if event is not None:
                events.append(event)
        applied = self.event_store.retry.run(lambda: self._store(events), "project a batch") if events else 0
        if offsets:
            self._commit(offsets)
        return applied

    # --- internals ----------------------------------------------------------------------------------
    def _read(self, message: Message, offsets: dict[TopicPartitionKey, int]) -> tuple[Event, EventPosition] | None:
        tp: TopicPartitionKey = (message.topic() or "", message.partition() or 0)
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                end = message.offset() or 0
                before = self._next_offset.get(tp)
                self._at_end[tp] = True
                self._next_offset[tp] = end
                if end > (before or 0):
                    # Only transaction markers (or an aborted transaction's records) lie between the last event
                    # and the end: committed too, so a caught-up group's lag is 0 and not one per marker.
                    offsets[tp] = max(offsets.get(tp, 0), end)
            else:
                log.warning("consumer error on %s[%s]: %s", tp[0], tp[1], error.str())
            return None
        offset = message.offset() or 0
        self._at_end[tp] = False
        offsets[tp] = self._next_offset[tp] = offset + 1
        position = EventPosition(tp[0], tp[1], offset)
        try:
            return decode_event(message.value(), message.key(), position=position), position
        except EventDecodeError as exc:
            log.error("skipping undecodable message (the reconciler reports it): %s", exc)
            return None

    def _store(self, events: Sequence[tuple[Event, EventPosition]]) -> int:
        accounts = sorted({e.aggregate_id for e, _ in events if e.aggregate_type == "account"})
        transactions = sorted({e.aggregate_id for e, _ in events if e.aggregate_type == "transaction"})
        with self.projections.engine.begin() as conn:
            batch = ProjectionBatch(self.projections.lock_accounts(conn, accounts),
                                    self.projections.lock_transactions(conn, transactions))
            applied = sum(batch.apply(event, position) for event, position in events)
            self.projections.upsert_accounts(conn, batch.changed_accounts())
            self.projections.upsert_transactions(conn, batch.changed_transactions())
        return applied

    def _commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partitions away; their new owner redelivers from the last
            # commit and the version guard skips what this batch already applied.
            log.warning("offset commit failed for %s: %s", self.group_id, exc)

    def _refresh_ends(self) -> None:
        """Forget the ends seen so far: seeking to where a partition stands makes the broker report anew.

        librdkafka reports a partition's end once per arrival there; without the seek, a second
        call would trust an end reported before the latest appends.
        """
        for tp in list(self._at_end):
            self._at_end[tp] = False
            if tp in self._next_offset:  # else its fetch has not reported yet, and will
                try:
                    self._consumer.seek(TopicPartition(tp[0], tp[1], self._next_offset[tp]))
                except KafkaException as exc:
                    log.debug("seek %s[%d] not possible: %s", tp[0], tp[1], exc)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._at_end[(tp.topic, tp.partition)] = False
            self._next_offset.pop((tp.topic, tp.partition), None)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._at_end.pop((tp.topic, tp.partition), None)
            self._next_offset.pop((tp.topic, tp.partition), None)
