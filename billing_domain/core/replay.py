"""One pass over a cut of the event store, folding every account and transaction.

Per event the work is: decode, one dict lookup, `apply`, and for money events a few sums. The
pass never stops at a poison event: it becomes a `stream_corrupt` finding naming topic,
partition, offset and event id, and the aggregate is marked corrupt so that no rebuild trusts it.

To make the diff lag-aware without keeping history, the caller passes the version each
projection row is at (read *before* the events); the replay keeps the state at that version.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.aggregate import Aggregate
from billing_domain.core.events import MAX_VERSION, AccountCredited, AccountDebited, Event, decode_event
from billing_domain.core.exceptions import EventDecodeError, EventPosition, StreamCorruptionError
from billing_domain.core.findings import Finding, Kind
from billing_domain.core.records import LogPosition, LogRecord, Topics
from billing_domain.core.transactions import TransactionAggregate, TransactionState

MAX_PROBLEMS_LISTED = 20
AGGREGATE_TYPES = ("account", "transaction")  # what a replay folds; a narrower replay is a partial one
SAGA_REASONS = frozenset({"transfer_out", "transfer_in", "refund"})
UNDECODABLE, NO_KEY = "undecodable event", "no message key"  # reasons that do not depend on the read order


@dataclass(frozen=True, slots=True)
class MoneyMove:
    """A saga's money on an account stream: one credit or debit carrying a `transaction_id`."""

    account_id: str
    reason: str
    amount_minor: int
    currency: str
    event_id: str
    occurred_at: datetime  # a leg read moments apart from its transfer's status is judged by it (see lag.py)


# The first event a projection row lacks (the one after the row's version; the first one when there is
# no row): when it occurred and where it sits. The lag-aware diff judges a row behind, or missing, by it.
Unapplied = tuple[datetime, EventPosition]


@dataclass(slots=True)
class Corruption:
    """Everything wrong with one aggregate's stream; reported as one `stream_corrupt` finding."""

    entity_type: str
    entity_id: str
    problems: list[dict[str, Any]] = field(default_factory=list)  # in log position order; the first is reported

    def add(self, reason: str, position: EventPosition, event_id: str | None, field_name: str | None = None) -> None:
        """Keep the problems in log position order, whatever order they were read in: a full replay
        reads one topic after the other, a resumed one the checkpoint's problems before the tail's, and
        both must name the same first problem (the finding's position) and list the same ones."""
        problem = {"reason": reason, "topic": position.topic, "partition": position.partition,
                   "offset": position.offset, "event_id": event_id} | ({"field": field_name} if field_name else {})
        more = self.problems[-1].pop("more", 0) if self.problems else 0
        bisect.insort(self.problems, problem, key=_log_order)
        if len(self.problems) > MAX_PROBLEMS_LISTED:
            self.problems.pop()
            more += 1
        if more:
            self.problems[-1]["more"] = more

    def names(self, reason: str, event_id: str, topic: str, partition: int) -> bool:
        """Is this event already listed for this reason on this partition (a copy the broker delivered again)?
        Only on one partition: there the first copy is the one read first in any order; copies placed on two
        partitions are two problems, whichever is read first."""
        return any(p["event_id"] == event_id and p["reason"] == reason and p["topic"] == topic
                   and p["partition"] == partition for p in self.problems)

    def finding(self) -> Finding:
        first = self.problems[0]
        position = EventPosition(first["topic"], first["partition"], first["offset"])
        return Finding.of(
            self.entity_type, self.entity_id, Kind.STREAM_CORRUPT,
            f"{first['reason']} at {position} "
            f"({'event ' + first['event_id'] if first['event_id'] else 'no event id could be read'}); "
            f"{len(self.problems)} problem(s); no rebuild will trust this stream",
            expected={"problems": self.problems}, actual=None, topic=position.topic, partition=position.partition,
            offset=position.offset, event_id=first["event_id"])


def _log_order(problem: dict[str, Any]) -> tuple[str, int, int]:
    return (problem["topic"], problem["partition"], problem["offset"])


@dataclass(slots=True)
class InvariantBreak:
    version: int
    rule: str
    event_id: str
    position: EventPosition


class Replay:
    """Fold batches of messages; read the results from the attributes once every batch is fed."""

    def __init__(self, topics: Topics, *, account_versions: Mapping[str, int] | None = None,
                 transaction_versions: Mapping[str, int] | None = None,
                 only_ids: set[str] | None = None) -> None:
        self.topics = topics
        self.account_versions = account_versions or {}
        self.transaction_versions = transaction_versions or {}
        # Only a replay diffed against rows of a type knows which of its entities have no row.
        self.rows_read = {"account": account_versions is not None, "transaction": transaction_versions is not None}
        self.unapplied: dict[tuple[str, str], Unapplied] = {}
        self.only_ids = only_ids
        self.accounts: dict[str, AccountAggregate] = {}
        self.transactions: dict[str, TransactionAggregate] = {}
        self.account_snapshots: dict[str, AccountState] = {}
        self.transaction_snapshots: dict[str, TransactionState] = {}
        self.corrupt: dict[tuple[str, str], Corruption] = {}
        self.invariant_breaks: dict[str, InvariantBreak] = {}
        self.saga_money: dict[str, list[MoneyMove]] = defaultdict(list)
        # credits[currency][reason] and debits[currency][reason], in minor units
        self.credits: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.debits: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.cut_time: datetime | None = None
        self.events_read = 0
        self.duplicates = 0
        # Where each aggregate's events live, for checkpoints and single-entity reads.
        self.partition_of: dict[tuple[str, str], tuple[str, int]] = {}
        # Set once checkpointed states are loaded (`checkpoint.load_entities`): the entities the tail
        # changed, to save only those. An aggregate may then sit at its projection row's version until
        # the tail moves it, so that state is kept when the tail changes the entity: most entities the
        # tail never touches, and a copy for every row up front cost each resume a state per row.
        self.touched: set[tuple[str, str]] | None = None

    # --- pickling (the parallel replay ships partial replays between processes) ----------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["credits"] = {c: dict(r) for c, r in self.credits.items()}
        state["debits"] = {c: dict(r) for c, r in self.debits.items()}
        state["saga_money"] = dict(self.saga_money)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.credits = _sums(state["credits"])
        self.debits = _sums(state["debits"])
        self.saga_money = defaultdict(list, state["saga_money"])

    def merge(self, other: Replay) -> None:
        """Take in a replay of other partitions. Aggregates are disjoint (a key lives in one partition);
        a transfer's money may sit on accounts of both sides, so saga money and sums are joined. A stream
        with events on both sides (misplaced: a fault) is kept from the side it started on, with both
        sides' problems named as one pass over every partition names them."""
        taken = {("account", k) for k, a in other.accounts.items() if _takes_over(self.accounts.get(k), a)}
        taken |= {("transaction", k) for k, t in other.transactions.items()
                  if _takes_over(self.transactions.get(k), t)}
        both = {k for k in other.corrupt if k in self.corrupt}
        both |= {("account", k) for k in other.accounts if k in self.accounts}
        both |= {("transaction", k) for k in other.transactions if k in self.transactions}
        self.accounts.update((k, a) for k, a in other.accounts.items() if ("account", k) in taken)
        self.transactions.update((k, t) for k, t in other.transactions.items() if ("transaction", k) in taken)
        self.account_snapshots.update((k, v) for k, v in other.account_snapshots.items() if ("account", k) in taken)
        self.transaction_snapshots.update((k, v) for k, v in other.transaction_snapshots.items()
                                          if ("transaction", k) in taken)
        self.invariant_breaks.update((k, v) for k, v in other.invariant_breaks.items() if ("account", k) in taken)
        self.unapplied.update((k, v) for k, v in other.unapplied.items() if k in taken)
        self.partition_of.update((k, v) for k, v in other.partition_of.items()
                                 if k in taken or k not in self.partition_of)
        for key, corruption in other.corrupt.items():
            joined = self.corrupt.setdefault(key, corruption)
            for problem in corruption.problems if joined is not corruption else ():
                joined.add(problem["reason"], EventPosition(problem["topic"], problem["partition"], problem["offset"]),
                         problem["event_id"], problem.get("field"))
        for entity_type, entity_id in both:
            aggregate = (self.accounts if entity_type == "account" else self.transactions).get(entity_id)
            if aggregate is not None and aggregate.partition is not None:
                topic, _ = self.partition_of[(entity_type, entity_id)]
                self._restate_off_home((entity_type, entity_id), topic, aggregate.partition)
        for transaction_id, moves in other.saga_money.items():
            self.saga_money[transaction_id].extend(moves)
        for mine, theirs in ((self.credits, other.credits), (self.debits, other.debits)):
            for currency, reasons in theirs.items():
                for reason, amount in reasons.items():
                    mine[currency][reason] += amount
        if other.cut_time is not None and (self.cut_time is None or other.cut_time > self.cut_time):
            self.cut_time = other.cut_time
        self.events_read += other.events_read
        self.duplicates += other.duplicates

    # --- feeding ------------------------------------------------------------------------------------
    def feed(self, messages: Iterable[LogRecord]) -> None:
        # The replay's hot loop: attributes are read into locals once per batch, not once per event.
        accounts_topic = self.topics.accounts
        only = self.only_ids
        apply_account, apply_transaction = self._apply_account, self._apply_transaction
        cut_time = self.cut_time
        read = 0
        for message in messages:
            read += 1
            key = message.key()
            if only is not None and key is not None and key.decode("utf-8", "replace") not in only:
                continue
            try:
                event = decode_event(message.value(), key)
            except EventDecodeError as exc:
                if only is None or key is not None:  # a keyless poison event names no entity we were asked for
                    self._poison(message, exc)
                continue
            if key is None:  # every message is keyed by its aggregate id: a keyless one is never applied
                if only is None or event.aggregate_id in only:  # filtered by the aggregate it names
                    self._keyless(message, event)
                continue
            if message.topic() == accounts_topic:
                if event.aggregate_type != "account":
                    self._wrong_topic(message, event)
                    continue
                apply_account(event, message)
            else:
                if event.aggregate_type != "transaction":
                    self._wrong_topic(message, event)
                    continue
                apply_transaction(event, message)
            if cut_time is None or event.occurred_at > cut_time:
                cut_time = event.occurred_at
        self.events_read += read
        self.cut_time = cut_time

    def _wrong_topic(self, message: LogPosition, event: Event) -> None:
        self._corrupt_at(message, event.aggregate_type, event.aggregate_id,
                         f"{event.event_type} on topic {message.topic()}", event.event_id)

    def _keyless(self, message: LogPosition, event: Event) -> None:
        # Not applied: where a keyless message lands is up to its producer's partitioner, so applying it
        # would make the fold depend on the order partitions are read in.
        self._corrupt_at(message, event.aggregate_type, event.aggregate_id,
                         f"{NO_KEY}: {event.event_type} v{event.aggregate_version} (every message is keyed by "
                         "its aggregate id)", event.event_id, "key")

    def feed_events(self, events: Iterable[tuple[Event, EventPosition]]) -> None:
        """Fold already decoded events (tests and single-entity paths)."""
        for event, position in events:
            self.events_read += 1
            message = _PositionedMessage(position, event.aggregate_id)
            if event.aggregate_type == "account":
                self._apply_account(event, message)
            else:
                self._apply_transaction(event, message)
            if self.cut_time is None or event.occurred_at > self.cut_time:
                self.cut_time = event.occurred_at

    def _apply_account(self, event: Event, message: LogPosition) -> None:
        account = self.accounts.get(event.aggregate_id)
        if account is None:
            account = self.accounts[event.aggregate_id] = AccountAggregate(event.aggregate_id)
            self.partition_of[("account", event.aggregate_id)] = (message.topic() or "", message.partition() or 0)
        row_version = self.account_versions.get(event.aggregate_id)
        before = account.version
        if self.touched is not None:
            self.touched.add(("account", event.aggregate_id))
            if before and row_version == before:
                self.account_snapshots[event.aggregate_id] = account.state()
        violations_before = len(account.violations)
        if not self._apply(account, "account", event, message):
            return
        if before == (row_version or 0) and (row_version is not None or self.rows_read["account"]):
            self.unapplied[("account", event.aggregate_id)] = (event.occurred_at, position_of(message))
        payload = event.payload
        if type(payload) is AccountCredited or type(payload) is AccountDebited:
            self._count_money(account, event, payload)
        if len(account.violations) != violations_before and account.aggregate_id not in self.invariant_breaks:
            self.invariant_breaks[account.aggregate_id] = InvariantBreak(
                event.aggregate_version, account.violations[-1], event.event_id, position_of(message))
        if row_version == account.version:
            self.account_snapshots[event.aggregate_id] = account.state()

    def _apply_transaction(self, event: Event, message: LogPosition) -> None:
        saga = self.transactions.get(event.aggregate_id)
        if saga is None:
            saga = self.transactions[event.aggregate_id] = TransactionAggregate(event.aggregate_id)
            self.partition_of[("transaction", event.aggregate_id)] = (message.topic() or "",
                                                                      message.partition() or 0)
        row_version = self.transaction_versions.get(event.aggregate_id)
        before = saga.version
        if self.touched is not None:
            self.touched.add(("transaction", event.aggregate_id))
            if before and row_version == before:
                self.transaction_snapshots[event.aggregate_id] = saga.state()
        if not self._apply(saga, "transaction", event, message):
            return
        if before == (row_version or 0) and (row_version is not None or self.rows_read["transaction"]):
            self.unapplied[("transaction", event.aggregate_id)] = (event.occurred_at, position_of(message))
        if row_version == saga.version:
            self.transaction_snapshots[event.aggregate_id] = saga.state()

    def _apply(self, aggregate: Aggregate, entity_type: str, event: Event, message: LogPosition) -> bool:
        """Apply with the stream rules; False when the event changed nothing (redelivery or refused).

        One aggregate, one partition: only events on the partition its stream started on are applied
        (one compare per event); the rest, and a stream's start, take `_apply_off_home`."""
        if message.partition() != aggregate.partition:
            return self._apply_off_home(aggregate, entity_type, event, message)
        try:  # `_apply_in_order`, inlined: this is the path of every event
            if aggregate.apply(event):
                return True
        except StreamCorruptionError as exc:
            return self._refused(aggregate, entity_type, event, message, exc)
        self.duplicates += 1
        return False

    def _apply_in_order(self, aggregate: Aggregate, entity_type: str, event: Event, message: LogPosition) -> bool:
        try:
            if aggregate.apply(event):
                return True
        except StreamCorruptionError as exc:
            return self._refused(aggregate, entity_type, event, message, exc)
        self.duplicates += 1
        return False

    def _refused(self, aggregate: Aggregate, entity_type: str, event: Event, message: LogPosition,
                 exc: StreamCorruptionError) -> bool:
        """Report an event the stream rules refused; after a gap, fold it all the same."""
        self._corrupt_at(message, entity_type, event.aggregate_id, exc.reason, event.event_id, exc.field)
        if exc.got_version > exc.expected_version and aggregate.version > 0:
            return self._apply_across_gap(aggregate, event)
        return False

    def _apply_off_home(self, aggregate: Aggregate, entity_type: str, event: Event, message: LogPosition) -> bool:
        """An event of a stream not started yet, or off its stream's partition.

        The order across partitions is not defined, so whatever is read first must not decide the fold:
        an event off the stream's partition is never applied, read before the stream started or after.
        One read before the start was refused as the fold saw it then (a version gap, mostly); once the
        stream starts, `_restate_off_home` names it for what it is, as if read after the start."""
        topic, partition = message.topic() or "", message.partition()
        if aggregate.partition is not None:
            self._corrupt_at(message, entity_type, event.aggregate_id, _off_home(partition, aggregate.partition),
                             event.event_id, "partition")
            return False
        applied = self._apply_in_order(aggregate, entity_type, event, message)
        key = (entity_type, aggregate.aggregate_id)
        if aggregate.version > 0:  # the stream starts here (or a state without a partition adopts this one)
            aggregate.partition = partition
            self.partition_of[key] = (topic, partition or 0)
            self._restate_off_home(key, topic, partition)
        elif (topic, partition or 0) < self.partition_of.get(key, (topic, partition or 0)):
            self.partition_of[key] = (topic, partition or 0)  # never started: the lowest partition, in any order
        return applied

    def _restate_off_home(self, key: tuple[str, str], topic: str, home: int | None) -> None:
        """Name the events refused before the stream started on `home` that sit on another partition."""
        corruption = self.corrupt.get(key)
        for problem in corruption.problems if corruption is not None else ():
            if (problem["topic"] == topic and problem["partition"] != home
                    and not problem["reason"].startswith((UNDECODABLE, NO_KEY))):
                problem["reason"], problem["field"] = _off_home(problem["partition"], home), "partition"

    @staticmethod
    def _apply_across_gap(aggregate: Aggregate, event: Event) -> bool:
        """Keep folding past a gap already reported, so one gap does not hide the rest of the stream.
        Not past `MAX_VERSION` (only pre-decoded events get there: the decoder refuses them), so no
        aggregate stands at a version no projection row, checkpoint or rebuild could hold."""
        if event.aggregate_version > MAX_VERSION:
            return False
        try:
            aggregate.apply_across_gap(event)
        except StreamCorruptionError:
            return False
        return True

    def _count_money(self, account: AccountAggregate, event: Event,
                     payload: AccountCredited | AccountDebited) -> None:
        sums = self.credits if type(payload) is AccountCredited else self.debits
        sums[account.currency][payload.reason] += payload.amount_minor
        if payload.transaction_id is not None and payload.reason in SAGA_REASONS:
            if self.touched is not None:
                self.touched.add(("money", payload.transaction_id))
            self.saga_money[payload.transaction_id].append(MoneyMove(
                account.aggregate_id, payload.reason, payload.amount_minor, account.currency, event.event_id,
                event.occurred_at))

    # --- poison -------------------------------------------------------------------------------------
    def _poison(self, message: LogRecord, exc: EventDecodeError) -> None:
        entity_type = "account" if message.topic() == self.topics.accounts else "transaction"
        entity_id = poison_entity_id(exc, message)
        self._corrupt_at(message, entity_type, entity_id, f"{UNDECODABLE}: {exc.reason}", exc.event_id,
                         exc.field)

    def _corrupt_at(self, message: LogPosition, entity_type: str, entity_id: str, reason: str,
                    event_id: str | None, field_name: str | None = None) -> None:
        corruption = self.corrupt.get((entity_type, entity_id))
        if corruption is None:
            corruption = self.corrupt[(entity_type, entity_id)] = Corruption(entity_type, entity_id)
            self.partition_of.setdefault((entity_type, entity_id), (message.topic() or "", message.partition() or 0))
        elif event_id is not None and corruption.names(reason, event_id, *_place(message)):
            self.duplicates += 1  # a redelivered copy of an event already refused: the same problem, once
            return
        if self.touched is not None:
            self.touched.add((entity_type, entity_id))
        corruption.add(reason, position_of(message), event_id, field_name)

    def is_corrupt(self, entity_type: str, entity_id: str) -> bool:
        return (entity_type, entity_id) in self.corrupt

    # --- results ------------------------------------------------------------------------------------
    def account_at(self, account_id: str, version: int) -> AccountAggregate | AccountState | None:
        """The account as of `version`, without copying it when that is its head: the diff reads the
        same attributes from an aggregate as from a state, and a copy per row was most of its time."""
        account = self.accounts.get(account_id)
        if account is not None and account.version == version:
            return account
        snapshot = self.account_snapshots.get(account_id)
        return snapshot if snapshot is not None and snapshot.version == version else None

    def transaction_at(self, transaction_id: str, version: int) -> TransactionAggregate | TransactionState | None:
        saga = self.transactions.get(transaction_id)
        if saga is not None and saga.version == version:
            return saga
        snapshot = self.transaction_snapshots.get(transaction_id)
        return snapshot if snapshot is not None and snapshot.version == version else None


@dataclass(frozen=True, slots=True)
class _PositionedMessage:
    """Where a pre-decoded event sits: all the fold reads of its record (a `LogPosition`)."""

    position: EventPosition
    aggregate_id: str

    def topic(self) -> str:
        return self.position.topic

    def partition(self) -> int:
        return self.position.partition

    def offset(self) -> int:
        return self.position.offset


def _takes_over(mine: Aggregate | None, theirs: Aggregate) -> bool:
    """In a merge: does the other side's aggregate stand for the stream (it started there, ours did not)?"""
    return mine is None or (mine.version == 0 and theirs.version > 0)


def _sums(plain: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return defaultdict(lambda: defaultdict(int), {c: defaultdict(int, r) for c, r in plain.items()})


def _off_home(partition: int | None, home: int | None) -> str:
    return f"on partition {partition}, but the stream is on partition {home} (one aggregate, one partition)"


def poison_entity_id(exc: EventDecodeError, message: LogPosition) -> str:
    """The entity a poison event is reported under: its key, or where it sits when it has none."""
    return exc.key or f"<no key> {position_of(message)}"


def _place(message: LogPosition) -> tuple[str, int]:
    return message.topic() or "", message.partition() or 0


def position_of(message: LogPosition) -> EventPosition:
    return EventPosition(message.topic() or "", message.partition() or 0, message.offset() or 0)
