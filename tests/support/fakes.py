"""In-memory implementations of the ports (`billing_domain.ports`), for fast tests of the services.

Each fake does what the services rely on of the real adapter, and its contract suite in `tests/contract/`
runs the same behaviours against both, so a test on the fakes says something about production:

- `InMemoryEventLog`: partitions with ordered offsets from 0, records keyed to a partition by the key's CRC32
  (librdkafka's default partitioner, which the real adapter uses), broker timestamps, cut reads to each
  partition's end (or to a stop), scans, exact ends, a group's committed offsets, offsets for a time;
- `InMemoryProjectionStore`: rows that never move to a lower version, the contract's column quirks (a
  currency is char(3), a missing timestamp is stored as the epoch), read marks and consistent snapshots
  from write sequence numbers standing for PostgreSQL's transaction ids, and its `Locks`;
- `InMemoryReportStore`: reports by run id (a scope's findings replaced on a second save), findings as
  stored (their JSON round trip), the newest finished run per scope, an append-only audit trail;
  `InMemoryReconStore` adds the finding lifecycle (tests/support/lifecycle_fake.py), as `ReconStore` does;
- the shadow tables (`InMemoryProjectionStore.shadow`): the real SQL's diff actions and version-guarded swap;
- `InMemoryCheckpointStore`: one checkpoint per pair of topics, saved all at once, a resumed run's save only
  while it still resumes the stored one, a reading view that keeps its picture;
- `InMemoryLocks`: a second holder refused at once with `ConcurrentOperationError`;
- `InMemoryNotifier`: the messages it was asked to post, and a channel that can refuse or be down.

Nothing here imports an adapter: the fakes stand on the ports alone.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import time
import uuid
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import msgspec

from billing_domain.core.accounts import AccountState
from billing_domain.core.checkpoint import CheckpointHeader, EntityRow, decode_ledger
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.events import Event, encode_event
from billing_domain.core.exceptions import ConcurrentOperationError, EventStoreError
from billing_domain.core.findings import Finding, Kind, LedgerIdentity, ReconciliationReport, Severity
from billing_domain.core.lifecycle import Key
from billing_domain.core.records import LogRecord, Topics
from billing_domain.core.topic_config import KEPT_FOREVER, TopicConfig
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import (
    PENDING,
    AuditRecord,
    Delivery,
    EventLog,
    PartitionEnd,
    ReadMark,
    ShadowDiff,
    ShadowPlan,
    ShadowSwap,
)
from support.lifecycle_fake import InMemoryLifecycleStore

CREATE_TIME = 1  # a record's timestamp type: stamped by the producer (Kafka's TIMESTAMP_CREATE_TIME)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- the event log ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record of the in-memory log, with the methods of `ports.LogRecord` (a Kafka message's)."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _timestamp_ms: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (CREATE_TIME, self._timestamp_ms)

    def error(self) -> None:
        return None


class RawAppend(Protocol):
    """A record to append as it is, past the codec (the real adapter's `RawRecord` matches)."""

    @property
    def topic(self) -> str: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


def partition_for(key: bytes | None, partitions: int, counter: Iterator[int]) -> int:
    """librdkafka's default (`consistent_random`): CRC32 of the key; a record without a key goes anywhere."""
    if key is None:
        return next(counter) % partitions
    return zlib.crc32(key) % partitions


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


def _itself(log: InMemoryEventLog) -> EventLog:
    return log


class InMemoryEventLog:
    """`ports.EventLog` in memory: the two topics of `topics`, `partitions` partitions each.

    Picklable, so `reopener()` hands a worker process a copy of the records (the same records to read)."""

    def __init__(self, topics: Topics | None = None, *, partitions: int = 3, batch_size: int = 500,
                 clock_ms: Callable[[], int] = _wall_clock_ms) -> None:
        self.topics = topics or Topics()
        self.partitions = partitions
        self.batch_size = batch_size
        self.clock_ms = clock_ms
        self._logs: dict[TopicPartitionKey, list[StoredRecord]] = {
            (t, p): [] for t in self.topics.all() for p in range(partitions)}
        self._log_start: dict[TopicPartitionKey, int] = dict.fromkeys(self._logs, 0)
        self._commits: dict[str, dict[TopicPartitionKey, int]] = {}
        self._keyless = itertools.count()
        # Each topic's settings as a broker would describe them (None: not described); kept forever unless set.
        self.topic_settings: dict[str, dict[str, str] | None] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_keyless"] = None  # an itertools.count does not pickle; a copy starts its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._keyless = itertools.count()

    # --- topics ---------------------------------------------------------------------------------------------
    def topic_for(self, aggregate_type: str) -> str:
        return self.topics.accounts if aggregate_type == "account" else self.topics.transactions

    def partitions_of(self, topic: str) -> list[int]:
        found = sorted(p for t, p in self._logs if t == topic)
        if not found:
            raise EventStoreError(f"topic {topic} does not exist in memory")
        return found

    def all_partitions(self, topics: Sequence[str] | None = None) -> list[TopicPartitionKey]:
        return [(t, p) for t in (topics or self.topics.all()) for p in self.partitions_of(t)]

    # --- appends --------------------------------------------------------------------------------------------
    def append(self, events: Iterable[Event], *, partitions: Mapping[tuple[str, str], int] | None = None) -> int:
        placed = partitions or {}
        count = 0
        for event in events:
            self._put(self.topic_for(event.aggregate_type), event.aggregate_id.encode(), encode_event(event), None,
                      placed.get((event.aggregate_type, event.aggregate_id)))
            count += 1
        return count

    def append_raw(self, records: Iterable[RawAppend]) -> int:
        """Append records as they are (bytes that may not decode), like the real adapter's `append_raw`."""
        count = 0
        for record in records:
            self._put(record.topic, record.key, record.value, None)
            count += 1
        return count

    def append_stamped(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> StoredRecord:
        """Append one record with this broker timestamp (a producer may stamp its own CreateTime)."""
        return self._put(topic, key, value, timestamp_ms)

    def _put(self, topic: str, key: bytes | None, value: bytes | None, timestamp_ms: int | None,
             partition: int | None = None) -> StoredRecord:
        tp = (topic, partition_for(key, len(self.partitions_of(topic)), self._keyless) if partition is None
              else partition)
        log = self._logs[tp]
        record = StoredRecord(topic, tp[1], self._end(tp), key, value,
                              self.clock_ms() if timestamp_ms is None else timestamp_ms)
        log.append(record)
        return record

    # --- test controls (what the real log does by itself) ------------------------------------------------
    def commit(self, group_id: str, offsets: dict[TopicPartitionKey, int]) -> None:
        """As if `group_id` had committed these offsets (the next offset it will read)."""
        self._commits.setdefault(group_id, {}).update(offsets)

    def delete_before(self, tp: TopicPartitionKey, offset: int) -> None:
        """Retention: records of `tp` before `offset` are gone; offsets do not move."""
        self._log_start[tp] = max(self._log_start[tp], min(offset, self._end(tp)))

    def records(self, tp: TopicPartitionKey) -> list[StoredRecord]:
        """The records of `tp` still kept, in offset order."""
        return [r for r in self._logs[tp] if r.offset() >= self._log_start[tp]]

    # --- reads ----------------------------------------------------------------------------------------------
    def _end(self, tp: TopicPartitionKey) -> int:
        return len(self._logs[tp])

    def _between(self, tp: TopicPartitionKey, first: int, end: int) -> list[StoredRecord]:
        return self._logs[tp][max(first, self._log_start[tp]):end]

    def read_cut(self, start: dict[TopicPartitionKey, int] | None = None,
                 stop: dict[TopicPartitionKey, int] | None = None,
                 topics: Sequence[str] | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 partitions: set[TopicPartitionKey] | None = None) -> InMemoryCutRead:
        ordered = list(topics or (self.topics.transactions, self.topics.accounts))
        return InMemoryCutRead(self, ordered, dict(start or {}), None if stop is None else dict(stop), on_batch,
                               partitions)

    def read_values(self, offsets: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, bytes | None]:
        found = self.records_at(offsets)
        return {tp: (found[tp].value() if tp in found else None) for tp in offsets}

    def records_at(self, positions: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, LogRecord]:
        return {tp: self._logs[tp][offset] for tp, offset in positions.items()
                if self._log_start[tp] <= offset < self._end(tp)}

    def scan(self, starts: dict[TopicPartitionKey, int]) -> InMemoryLogScan:
        return InMemoryLogScan(self, starts)

    def exact_ends(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, PartitionEnd]:
        ends: dict[TopicPartitionKey, PartitionEnd] = {}
        for tp in partitions:
            end = self._end(tp)
            ends[tp] = PartitionEnd(end, self._logs[tp][end - 1] if end > self._log_start[tp] else None)
        return ends

    def log_starts(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return {tp: self._log_start[tp] for tp in partitions}

    def reported_ends(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return {tp: self._end(tp) for tp in partitions}

    def committed_offsets(self, group_id: str,
                          partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        committed = self._commits.get(group_id, {})
        return {tp: committed.get(tp) for tp in partitions}

    def starting_offsets_for_time(self, partitions: Iterable[TopicPartitionKey],
                                  timestamp_ms: int) -> dict[TopicPartitionKey, int]:
        starts: dict[TopicPartitionKey, int] = {}
        for tp in partitions:
            later = (r.offset() for r in self.records(tp) if r.timestamp()[1] >= timestamp_ms)
            starts[tp] = next(later, self._end(tp))
        return starts

    def reopener(self) -> Callable[[], EventLog]:
        return functools.partial(_itself, self)

    def topic_configs(self) -> dict[str, TopicConfig]:
        return {t: TopicConfig(t, self.topic_settings.get(t, dict(KEPT_FOREVER))) for t in self.topics.all()}

    def close(self) -> None:
        """Nothing to release (the real adapter flushes its producer)."""


class InMemoryCutRead:
    """`ports.CutRead` over the in-memory log: each topic in the order given, each partition to its end as it
    stood when the read reached it (or to its stop), in batches of at most the log's `batch_size`."""

    def __init__(self, log: InMemoryEventLog, topics: list[str], start: dict[TopicPartitionKey, int],
                 stop: dict[TopicPartitionKey, int] | None, on_batch: Callable[[int], None] | None,
                 only: set[TopicPartitionKey] | None) -> None:
        self._log = log
        self._topics = topics
        self._start = start
        self._stop = stop
        self._on_batch = on_batch
        self._only = only
        self.cut = Cut()

    def __iter__(self) -> Iterator[list[StoredRecord]]:
        log = self._log
        for topic in self._topics:
            for partition in log.partitions_of(topic):
                tp = (topic, partition)
                if self._only is not None and tp not in self._only:
                    continue
                first = self._start.get(tp, 0)
                self.cut.start[tp] = first
                end = log._end(tp)
                if self._stop is not None:  # a partition the stop does not name is read to nothing
                    end = min(end, self._stop.get(tp, 0))
                if end <= first:
                    self.cut.end[tp] = first
                    continue
                records = log._between(tp, first, end)
                self.cut.end[tp] = end
                for i in range(0, len(records), log.batch_size):
                    batch = records[i:i + log.batch_size]
                    if self._on_batch:
                        self._on_batch(len(batch))
                    yield batch


class InMemoryLogScan:
    """`ports.LogScan` over the in-memory log: partition after partition, each to its end unless finished."""

    def __init__(self, log: InMemoryEventLog, starts: dict[TopicPartitionKey, int]) -> None:
        self._log = log
        self._starts = dict(starts)
        self._remaining = set(starts)
        self.read = 0
        self.ends: dict[TopicPartitionKey, int] = {}

    def finish(self, tp: TopicPartitionKey) -> None:
        self._remaining.discard(tp)

    def __iter__(self) -> Iterator[StoredRecord]:
        for tp, first in sorted(self._starts.items()):
            end = self._log._end(tp)
            for record in self._log._between(tp, first, end):
                if tp not in self._remaining:
                    break
                self.read += 1
                yield record
            if tp in self._remaining:
                self.ends[tp] = end
                self._remaining.discard(tp)


# --- the projections ----------------------------------------------------------------------------------------
State = AccountState | TransactionState
_S = TypeVar("_S", AccountState, TransactionState)
# Past this many write numbers between two reads the real store compares nothing (PostgreSQL's xid age).
MAX_XID_DISTANCE = 1 << 30


def stored_account(state: AccountState) -> AccountState:
    """The row as the contract's table keeps it: currency char(3) (blank-padded), no timestamp stored as epoch."""
    return msgspec.structs.replace(state, currency=state.currency.ljust(3), updated_at=state.updated_at or EPOCH)


def stored_transaction(state: TransactionState) -> TransactionState:
    return msgspec.structs.replace(state, currency=state.currency.ljust(3), initiated_at=state.initiated_at or EPOCH,
                                   updated_at=state.updated_at or EPOCH)


@dataclass
class _Tables:
    """Both projection tables, with the write number (the stand-in of a row's xmin) of each row."""

    accounts: dict[str, AccountState] = field(default_factory=dict)
    transactions: dict[str, TransactionState] = field(default_factory=dict)
    written: dict[tuple[str, str], int] = field(default_factory=dict)

    def of(self, entity_type: str) -> dict[str, Any]:
        if entity_type not in ("account", "transaction"):
            raise ValueError(f"no projection of {entity_type!r}")
        return self.accounts if entity_type == "account" else self.transactions


class InMemorySnapshot:
    """`ports.ProjectionSnapshot`: both tables as they were when the snapshot was taken."""

    def __init__(self, tables: _Tables, mark: ReadMark, xmax: int) -> None:
        self._tables = tables
        self.mark = mark
        self._xmax = xmax

    def why_not_comparable(self, earlier: ReadMark) -> str | None:
        if earlier.database != self.mark.database:
            return "the projections database is not the one the last run read (restored, moved or restarted)"
        distance = self._xmax - earlier.xmin
        if not 0 <= distance < MAX_XID_DISTANCE:
            return f"{distance} transaction ids since the last run's read"
        return None

    def ids(self, entity_type: str) -> set[str]:
        return set(self._tables.of(entity_type))

    def changed_ids(self, entity_type: str, earlier_xmin: int) -> set[str]:
        return {i for i in self._tables.of(entity_type)
                if self._tables.written[(entity_type, i)] >= earlier_xmin}

    def balance_sums(self) -> dict[str, tuple[int, int]]:
        sums: dict[str, tuple[int, int]] = {}
        for row in self._tables.accounts.values():
            total, count = sums.get(row.currency, (0, 0))
            sums[row.currency] = (total + row.balance_minor, count + 1)
        return sums

    def read_accounts(self, ids: Sequence[str]) -> dict[str, AccountState]:
        return {i: self._tables.accounts[i] for i in ids if i in self._tables.accounts}

    def read_transactions(self, ids: Sequence[str]) -> dict[str, TransactionState]:
        return {i: self._tables.transactions[i] for i in ids if i in self._tables.transactions}


class InMemoryProjectionStore:
    """`ports.ProjectionStore` in memory. Each write is one numbered transaction; a read mark is the next
    number (every earlier write had finished), so `changed_ids` finds every row written since, as PostgreSQL's
    xmin does (no concurrent writer here, so never more)."""

    def __init__(self, locks: InMemoryLocks | None = None) -> None:
        self._tables = _Tables()
        self._next_write = 1
        self.database = f"memory-{uuid.uuid4().hex[:8]}"
        self.locks = locks or InMemoryLocks()
        self.shadow = InMemoryShadowTables(self)  # `ports.ShadowProjections`: the shadow tables beside these

    # --- test controls --------------------------------------------------------------------------------------
    def restart(self) -> None:
        """As if the database had been restored or moved: earlier read marks no longer compare."""
        self.database = f"memory-{uuid.uuid4().hex[:8]}"

    # --- reads ----------------------------------------------------------------------------------------------
    def read_accounts(self, ids: Sequence[str] | None = None) -> dict[str, AccountState]:
        rows = self._tables.accounts
        return dict(rows) if ids is None else {i: rows[i] for i in ids if i in rows}

    def read_transactions(self, ids: Sequence[str] | None = None) -> dict[str, TransactionState]:
        rows = self._tables.transactions
        return dict(rows) if ids is None else {i: rows[i] for i in ids if i in rows}

    def read_mark(self) -> ReadMark:
        return ReadMark(self._next_write, self.database)

    @contextmanager
    def snapshot(self) -> Iterator[InMemorySnapshot]:
        tables = _Tables(dict(self._tables.accounts), dict(self._tables.transactions), dict(self._tables.written))
        yield InMemorySnapshot(tables, self.read_mark(), self._next_write)

    # --- writes, each one transaction -----------------------------------------------------------------------
    def _write(self) -> int:
        number = self._next_write
        self._next_write += 1
        return number

    def upsert(self, entity_type: str, states: Sequence[State]) -> int:
        if entity_type == "account":
            rows: list[State] = [stored_account(s) for s in _checked(AccountState, states)]
        else:
            rows = [stored_transaction(s) for s in _checked(TransactionState, states)]
        table = self._tables.of(entity_type)
        number = self._write()
        written = 0
        for row in rows:
            key = _key(row)
            live = table.get(key)
            if live is None or live.version <= row.version:
                table[key] = row
                self._tables.written[(entity_type, key)] = number
                written += 1
        return written

    def compare_and_set(self, entity_type: str, seen: State, new: State) -> bool:
        if entity_type == "account" and isinstance(seen, AccountState) and isinstance(new, AccountState):
            seen, new = stored_account(seen), stored_account(new)
        elif isinstance(seen, TransactionState) and isinstance(new, TransactionState):
            seen, new = stored_transaction(seen), stored_transaction(new)
        else:
            raise TypeError(f"compare_and_set: {type(seen).__name__} and {type(new).__name__} are not two "
                            f"{entity_type} states")
        table = self._tables.of(entity_type)
        key = _key(seen)
        if table.get(key) != seen:
            return False
        table[key] = msgspec.structs.replace(new, **{_key_field(new): key})  # the row keeps its key
        self._tables.written[(entity_type, key)] = self._write()
        return True

    def delete(self, entity_type: str, ids: Sequence[str]) -> int:
        table = self._tables.of(entity_type)
        self._write()
        gone = [i for i in set(ids) if i in table]
        for i in gone:
            del table[i]
            del self._tables.written[(entity_type, i)]
        return len(gone)


def _checked(kind: type[_S], states: Sequence[object]) -> list[_S]:
    checked = [s for s in states if isinstance(s, kind)]
    if len(checked) != len(states):
        raise TypeError(f"upsert: not every state is a {kind.__name__}")
    return checked


def _key(state: State) -> str:
    return state.account_id if isinstance(state, AccountState) else state.transaction_id


def _key_field(state: State) -> str:
    return "account_id" if isinstance(state, AccountState) else "transaction_id"


# --- the shadow tables ------------------------------------------------------------------------------------
# The columns a repair compares: all but the key, the version, the update time and the last event id.
_CONTENT = {"account": ("owner_id", "currency", "balance_minor", "min_balance_minor", "max_balance_minor", "status"),
            "transaction": ("source_account_id", "destination_account_id", "amount_minor", "currency", "status",
                            "failure_reason", "initiated_at")}


def _row_json(state: State | None) -> dict[str, Any] | None:
    """A row as PostgreSQL's `to_jsonb(row)` gives it: its columns by name, times as ISO text."""
    if state is None:
        return None
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in msgspec.structs.asdict(state).items()}


class InMemoryShadowTables:
    """`ports.ShadowTables` beside an `InMemoryProjectionStore`: the same diff actions and version-guarded swap as
    the SQL of the real store (adapters/postgres/shadow_store.py)."""

    def __init__(self, projections: InMemoryProjectionStore) -> None:
        self._projections = projections
        self.tables: dict[str, dict[str, State]] = {"account": {}, "transaction": {}}

    def ensure(self) -> None:
        """Nothing to create: the shadow tables are there from the start."""

    def fill(self, accounts: Sequence[AccountState], transactions: Sequence[TransactionState]) -> dict[str, int]:
        self.tables = {"account": {a.account_id: stored_account(a) for a in accounts},
                       "transaction": {t.transaction_id: stored_transaction(t) for t in transactions}}
        return {"account": len(accounts), "transaction": len(transactions)}

    def _action(self, entity_type: str, key: str, plan: ShadowPlan) -> str:
        shadow = self.tables[entity_type].get(key)
        live = self._projections._tables.of(entity_type).get(key)
        if live is None:
            return "insert"
        if shadow is None:
            return ("refused" if key in plan.refused[entity_type] else
                    "orphan" if key in plan.orphans[entity_type] else "live_only_newer")
        if live.version > shadow.version:
            ahead = {_key(seen) for seen, _ in plan.ahead[entity_type]}
            return "reset_ahead" if key in ahead else "keep_live_newer"
        if live.version < shadow.version:
            return "catch_up"
        return "repair" if _differs(entity_type, live, shadow) else "unchanged"

    def diff(self, plan: ShadowPlan, sample_rows: int) -> dict[str, ShadowDiff]:
        diffs: dict[str, ShadowDiff] = {}
        for entity_type, shadow in self.tables.items():
            live = self._projections._tables.of(entity_type)
            actions = {k: self._action(entity_type, k, plan) for k in sorted(set(shadow) | set(live))}
            changed = [k for k, a in actions.items() if a != "unchanged"]
            counts: dict[str, int] = {}
            for action in actions.values():
                counts[action] = counts.get(action, 0) + 1
            diffs[entity_type] = ShadowDiff(
                counts=dict(sorted(counts.items())),
                sample=[{"id": k, "action": actions[k], "live": _row_json(live.get(k)),
                         "shadow": _row_json(shadow.get(k))} for k in changed[:sample_rows]],
                changed_ids=changed)
        return diffs

    def swap(self, plan: ShadowPlan, *, delete_orphans: bool) -> dict[str, ShadowSwap]:
        projections = self._projections
        number = projections._write()  # one transaction for both tables
        swapped: dict[str, ShadowSwap] = {}
        for entity_type, shadow in self.tables.items():
            live = projections._tables.of(entity_type)
            written = 0
            for key, row in sorted(shadow.items()):
                current = live.get(key)
                if current is None or current.version < row.version or (
                        current.version == row.version and _differs(entity_type, current, row)):
                    live[key] = row
                    projections._tables.written[(entity_type, key)] = number
                    written += 1
            for seen, head in plan.ahead[entity_type]:
                written += projections.compare_and_set(entity_type, seen, head)
            if delete_orphans and plan.orphans[entity_type]:
                written += projections.delete(entity_type, plan.orphans[entity_type])
            kept = sum(1 for key, row in shadow.items() if key in live and live[key].version > row.version)
            swapped[entity_type] = ShadowSwap(written, kept)
        return swapped


def _differs(entity_type: str, a: State, b: State) -> bool:
    return any(getattr(a, c) != getattr(b, c) for c in _CONTENT[entity_type])


# --- reports and audit --------------------------------------------------------------------------------------
ENTITY_TYPES_OF_FINDINGS = ("account", "transaction", "ledger")


def _as_json(value: Any) -> Any:
    """A value as a jsonb column gives it back (the real store writes findings' values with datetimes as ISO
    text, audit values with msgspec)."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=_iso, sort_keys=True))


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


@dataclass
class _Run:
    scope: str
    source: str
    started_at: datetime
    finished_at: datetime | None
    cut: dict[str, Any]
    summary: dict[str, Any]
    stats: dict[str, Any]


class InMemoryReportStore:
    """`ports.ReportStore` in memory: runs, findings (numbered as stored), ledger identities and the audit."""

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}
        self._findings: list[tuple[int, str, Finding]] = []  # (finding id, run id, finding as read back)
        self.ledger: dict[str, list[LedgerIdentity]] = {}
        self._audit: list[dict[str, Any]] = []
        self._finding_ids = itertools.count(1)

    def save_report(self, report: ReconciliationReport, source: str) -> None:
        for f in report.findings:
            if f.entity_type not in ENTITY_TYPES_OF_FINDINGS:  # the table's CHECK: the whole save fails
                raise ValueError(f"a finding of entity type {f.entity_type!r} cannot be stored")
        summary = {"by_kind": report.counts_by_kind(), "by_severity": report.counts_by_severity(),
                   "total": len(report.findings)}
        known = self.runs.get(report.run_id)
        self.runs[report.run_id] = _Run(
            report.scope, known.source if known else source, known.started_at if known else report.started_at,
            report.finished_at, report.cut.to_json(), summary, _as_json(report.stats))
        replaced = {f.entity_type for f in report.findings} | set(report.entity_types)
        self._findings = [(i, run, f) for i, run, f in self._findings
                          if not (run == report.run_id and f.entity_type in replaced)]
        self._findings += [(next(self._finding_ids), report.run_id, _stored_finding(f)) for f in report.findings]
        self.ledger[report.run_id] = list(report.ledger)

    def findings(self, run_id: str, entity_type: str | None = None) -> list[Finding]:
        return [f for _, run, f in self._findings
                if run == run_id and (entity_type is None or f.entity_type == entity_type)]

    def finding_ids(self, run_id: str) -> list[int]:
        """The stored ids of a run's findings, in the order `findings` gives them."""
        return [i for i, run, _ in self._findings if run == run_id]

    def latest_run_id(self, entity_type: str | None = None) -> str | None:
        scopes = {"all"} | ({f"{entity_type}s"} if entity_type else set())
        finished = [(run.finished_at, run_id) for run_id, run in self.runs.items()
                    if run.scope in scopes and run.finished_at is not None]
        return max(finished, key=lambda r: r[0])[1] if finished else None

    def stored_report(self, run_id: str) -> ReconciliationReport | None:
        run = self.runs.get(run_id)
        if run is None:
            return None
        return ReconciliationReport(run_id=run_id, scope=run.scope, started_at=run.started_at,
                                    finished_at=run.finished_at, findings=self.findings(run_id))

    def run_exists(self, run_id: str) -> bool:
        return run_id in self.runs

    # --- audit --------------------------------------------------------------------------------------------
    def write_audit(self, record: AuditRecord) -> int:
        if record.completes is not None and not any(
                r["audit_id"] == record.completes and r["outcome"] == PENDING and r["operation"] == record.operation
                for r in self._audit):
            raise ValueError(f"audit #{record.completes} is not a pending {record.operation} record")
        audit_id = len(self._audit) + 1
        self._audit.append({
            "audit_id": audit_id, "recorded_at": datetime.now(UTC), "actor": record.operator.name,
            "reason": record.reason, "operation": record.operation, "run_id": record.run_id,
            "dry_run": record.dry_run, "entity_type": record.entity_type,
            "entity_ids": _msgspec_json(list(record.entity_ids)), "cut": _msgspec_json(record.cut or {}),
            "before": _msgspec_json(record.before or {}), "after": _msgspec_json(record.after or {}),
            "outcome": record.outcome,
            "details": _msgspec_json({**(record.details or {}), "operator": record.operator.to_json()}),
            "db_role": "memory", "operator_auth": record.operator.authenticated_by, "completes": record.completes})
        return audit_id

    def audit_record(self, audit_id: int) -> dict[str, Any] | None:
        return next((copy.deepcopy(r) for r in self._audit if r["audit_id"] == audit_id), None)

    def audit_records(self, limit: int = 100) -> list[dict[str, Any]]:
        return [copy.deepcopy(r) for r in reversed(self._audit)][:limit]

    def audit_operations(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.audit_records(limit * 2)
        completions = {r["completes"]: r for r in rows if r.get("completes") is not None}
        merged = []
        for row in rows:
            if row.get("completes") is not None:
                continue
            done = completions.get(row["audit_id"])
            if done is not None:
                row = {**row, "outcome": done["outcome"], "details": {**row["details"], **done["details"]},
                       "completion_id": done["audit_id"]}
            merged.append(row)
        return merged[:limit]

    def audit_operation(self, run_id: str) -> dict[str, Any] | None:
        return next((op for op in self.audit_operations(len(self._audit)) if op["run_id"] == run_id), None)


def _stored_finding(f: Finding) -> Finding:
    return Finding(f.entity_type, f.entity_id, Kind(f.kind), Severity(f.severity), f.detail, _as_json(f.expected),
                   _as_json(f.actual), f.topic, f.partition, f.offset, f.event_id)


def _msgspec_json(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


class InMemoryReconStore(InMemoryReportStore, InMemoryLifecycleStore):
    """`ports.ReportsWithLifecycle` and `ports.AuditLookup`, as `ReconStore` is: the reports and audit above with
    the finding lifecycle of tests/support/lifecycle_fake.py, whose finding ids are the stored findings' ids."""

    def __init__(self) -> None:
        InMemoryReportStore.__init__(self)
        InMemoryLifecycleStore.__init__(self)

    def finding_keys(self, finding_ids: Sequence[int]) -> dict[int, Key]:
        stored = {i: f.key for i, _, f in self._findings}
        return {i: stored[i] for i in finding_ids if i in stored}


# --- checkpoints --------------------------------------------------------------------------------------------
@dataclass
class _Checkpoint:
    code_version: str
    created_at: datetime
    run_id: str | None
    cut: dict[str, Any]
    tail_marks: dict[str, int]
    ledger: bytes
    delta: bytes | None
    entities: dict[tuple[str, str], EntityRow]


class InMemoryCheckpointView:
    """`ports.CheckpointView` over the checkpoints as they were when `reading()` began."""

    def __init__(self, checkpoints: dict[str, _Checkpoint]) -> None:
        self._checkpoints = checkpoints

    def header(self, topics: str) -> CheckpointHeader | None:
        c = self._checkpoints.get(topics)
        if c is None:
            return None
        return CheckpointHeader(topics, c.code_version, Cut.from_json(c.cut), dict(c.tail_marks),
                                decode_ledger(c.ledger), c.run_id, c.delta is not None)

    def delta_memo(self, topics: str) -> bytes | None:
        c = self._checkpoints.get(topics)
        return None if c is None else c.delta

    def entities(self, topics: str, kinds: Iterable[str] | None = None) -> Generator[EntityRow, None, None]:
        c = self._checkpoints.get(topics)
        wanted = None if kinds is None else set(kinds)
        for row in list(c.entities.values()) if c else []:
            if wanted is None or row.entity_type in wanted:
                yield row

    def entity_rows(self, topics: str, keys: Iterable[tuple[str, str]]) -> list[EntityRow]:
        c = self._checkpoints.get(topics)
        if c is None:
            return []
        return [c.entities[k] for k in dict.fromkeys(keys) if k in c.entities]


class InMemoryCheckpointStore:
    """`ports.CheckpointStore` in memory: each save replaces the header and writes its rows at once."""

    def __init__(self) -> None:
        self._checkpoints: dict[str, _Checkpoint] = {}

    def save(self, topics: str, code_version: str, cut: Cut, tail_marks: dict[str, int], ledger: bytes,
             rows: Iterable[EntityRow], *, run_id: str | None, replace_all: bool, delta: bytes | None = None,
             resumed_from: str | None = None) -> int | None:
        current = self._checkpoints.get(topics)
        if not replace_all and (current is None or current.run_id != resumed_from):
            return None
        entities = {} if replace_all or current is None else dict(current.entities)
        written = 0
        for row in rows:  # fully consumed before anything is kept: a failing iterable leaves the old checkpoint
            entities[(row.entity_type, row.entity_id)] = row
            written += 1
        self._checkpoints[topics] = _Checkpoint(code_version, datetime.now(UTC), run_id, cut.to_json(),
                                                _as_json(tail_marks), bytes(ledger), delta, entities)
        return written

    @contextmanager
    def reading(self) -> Iterator[InMemoryCheckpointView]:
        yield InMemoryCheckpointView({t: _Checkpoint(**{**c.__dict__, "entities": dict(c.entities)})
                                      for t, c in self._checkpoints.items()})

    def header(self, topics: str) -> CheckpointHeader | None:
        return InMemoryCheckpointView(self._checkpoints).header(topics)

    def entity_rows(self, topics: str, keys: Iterable[tuple[str, str]]) -> list[EntityRow]:
        return InMemoryCheckpointView(self._checkpoints).entity_rows(topics, keys)

    def drop(self, topics: str) -> None:
        self._checkpoints.pop(topics, None)


# --- locks and notifications --------------------------------------------------------------------------------
class InMemoryLocks:
    """`ports.Locks` in one process: the names held; a second holder is refused at once, never queued."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    @contextmanager
    def _hold(self, name: str, busy: str) -> Iterator[None]:
        if name in self.held:
            raise ConcurrentOperationError(busy)
        self.held.add(name)
        try:
            yield
        finally:
            self.held.discard(name)

    def rebuild(self, entity_type: str) -> AbstractContextManager[None]:
        key = f"billing.rebuild.{entity_type}"
        return self._hold(key, f"another {entity_type} rebuild is running (it holds the lock {key!r}); wait for "
                               "it to finish and retry")

    def saga_recovery(self) -> AbstractContextManager[None]:
        key = "billing.saga_recovery"
        return self._hold(key, f"another saga recovery is running (it holds the lock {key!r}); wait for it to "
                               "finish and retry")


@dataclass
class Posted:
    text: str
    blocks: list[dict[str, Any]] | None


class InMemoryNotifier:
    """`ports.Notifier` in memory: what was posted. `refusing` (an error code) or `down` make posts fail as a
    channel would (a `Delivery` saying why, never an exception)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._enabled = enabled
        self.posted: list[Posted] = []
        self.refusing: str | None = None
        self.down = False
        self._ts = itertools.count(1)

    @property
    def enabled(self) -> bool:
        return self._enabled

    def post(self, text: str, blocks: Sequence[dict[str, Any]] | None = None) -> Delivery:
        if not self._enabled:
            return Delivery(sent=False, error="not configured")
        if self.down:
            return Delivery(sent=False, error="ConnectionRefusedError")
        if self.refusing is not None:
            return Delivery(sent=False, error=self.refusing)
        self.posted.append(Posted(text, list(blocks) if blocks else None))
        return Delivery(sent=True, ts=f"{next(self._ts)}.000000")
