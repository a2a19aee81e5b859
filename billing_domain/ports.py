"""The interfaces the services need, as Protocols; the adapters implement them.

A service takes these, never a concrete adapter class, so the same service runs against Kafka and
PostgreSQL (`billing_domain.adapters`) or against the in-memory fakes of `tests/support/fakes.py`.
Each port has a contract suite in `tests/contract/` that runs against both.

The value types that cross a port (a read mark, an audit record, a delivery...) are defined here too,
so that a service never imports an adapter module to build or read one; the adapters import them from
here (and re-export the old names).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from billing_domain.core.accounts import AccountState
from billing_domain.core.checkpoint import CheckpointHeader, EntityRow
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.events import Event
from billing_domain.core.findings import Finding, ReconciliationReport
from billing_domain.core.lifecycle import Key, LifecycleRow, RunLifecycle
from billing_domain.core.operators import Operator
from billing_domain.core.records import LogPosition, LogRecord, Topics
from billing_domain.core.topic_config import TopicConfig
from billing_domain.core.transactions import TransactionState

__all__ = [
    "ACCOUNT_COLUMNS", "PENDING", "TRANSACTION_COLUMNS", "AuditRecord", "CheckpointStore", "CheckpointView",
    "CutRead", "Delivery", "EventLog", "Locks", "LogPosition", "LogRecord", "LogScan", "Notifier", "PartitionEnd",
    "ProjectionSnapshot", "ProjectionStore", "ReadMark", "ReportStore", "Topics",
]

ProgressCallback = Callable[[int], None]


# --- the event log (Kafka) -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartitionEnd:
    """A partition's exact end (the offset after its last record) and its last record, if any."""

    end: int
    last: LogRecord | None


class CutRead(Protocol):
    """Batches of the records of a bounded cut, in the log's order per partition; `cut` holds the
    offsets read once the iteration ends."""

    @property
    def cut(self) -> Cut: ...

    def __iter__(self) -> Iterator[Sequence[LogRecord]]: ...


class LogScan(Protocol):
    """Records of some partitions from given offsets, each to its end or until `finish`ed."""

    @property
    def read(self) -> int:
        """How many records were yielded so far."""
        ...

    @property
    def ends(self) -> dict[TopicPartitionKey, int]:
        """The exact end of each partition read to its end (filled as each end is reached)."""
        ...

    def finish(self, tp: TopicPartitionKey) -> None:
        """Stop reading `tp` (records of it already fetched are dropped)."""
        ...

    def __iter__(self) -> Iterator[LogRecord]: ...


class EventLog(Protocol):
    """The two event topics: appends, bounded reads, and the offsets a read or a lag is judged by.

    Offsets are exact only where a read reached them (`read_cut`'s cut, `exact_ends`, `LogScan.ends`):
    a broker may answer offset lookups at batch granularity, so those are starting points only."""

    @property
    def topics(self) -> Topics: ...

    def topic_for(self, aggregate_type: str) -> str: ...

    def partitions_of(self, topic: str) -> list[int]: ...

    def all_partitions(self, topics: Sequence[str] | None = None) -> list[TopicPartitionKey]:
        """Every (topic, partition) of `topics` (default: both event topics)."""
        ...

    def append(self, events: Iterable[Event], *, partitions: Mapping[tuple[str, str], int] | None = None) -> int:
        """Append and return once every event is confirmed; raises `EventStoreError` otherwise.

        `partitions` names the partition a stream ((aggregate type, id)) is on, as read from the log: its
        events go there, whichever partitioner placed the stream (the engine's client may hash keys otherwise
        than this one: kafkajs's murmur2 against librdkafka's CRC32). Other streams go where this log's
        producer puts their key."""
        ...

    def read_cut(self, start: dict[TopicPartitionKey, int] | None = None,
                 stop: dict[TopicPartitionKey, int] | None = None,
                 topics: Sequence[str] | None = None,
                 on_batch: ProgressCallback | None = None,
                 partitions: set[TopicPartitionKey] | None = None) -> CutRead:
        """Every partition of `topics` (or just `partitions`) from `start` (default 0) to its end, or to
        `stop`; the transaction topic first by default (a completed transfer's money is then read)."""
        ...

    def read_values(self, offsets: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, bytes | None]:
        """The value of the record at each offset (None where there is none). Offsets have gaps (a transaction's
        marker takes one): where the log goes on past an offset that holds no record, the last record before it."""
        ...

    def records_at(self, positions: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, LogRecord]:
        """The record at each offset, or the first after it where the offset holds none (a transaction
        marker); absent where the partition ends before it."""
        ...

    def scan(self, starts: dict[TopicPartitionKey, int]) -> LogScan: ...

    def exact_ends(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, PartitionEnd]: ...

    def log_starts(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Where a reader with no committed offset starts each partition (its oldest record kept)."""
        ...

    def reported_ends(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Each partition's end as the broker reports it without a read (possibly a batch short): for
        estimates only, such as how long a tail is before it is read."""
        ...

    def committed_offsets(self, group_id: str,
                          partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        """The next offset `group_id` will read per partition, None where it committed none; the group is
        not disturbed."""
        ...

    def starting_offsets_for_time(self, partitions: Iterable[TopicPartitionKey],
                                  timestamp_ms: int) -> dict[TopicPartitionKey, int]:
        """Per partition, an offset at or before the first record stamped at or after `timestamp_ms`."""
        ...

    def reopener(self) -> Callable[[], EventLog]:
        """A picklable way to open this log again in another process (the parallel replay's workers)."""
        ...

    def topic_configs(self) -> dict[str, TopicConfig]:
        """Each event topic's settings that decide whether it keeps every event (`topic_config.LOSSY_SETTINGS`),
        as the broker describes them; a broker that describes none gives settings None (unknown), never an error."""
        ...


# --- the projections (PostgreSQL, schema billing) --------------------------------------------------
# The contract's projection columns, in the order of the states' fields (`AccountState(*row)`).
ACCOUNT_COLUMNS = ("account_id", "owner_id", "currency", "balance_minor", "min_balance_minor",
                   "max_balance_minor", "status", "version", "last_event_id", "updated_at")
TRANSACTION_COLUMNS = ("transaction_id", "source_account_id", "destination_account_id", "amount_minor",
                       "currency", "status", "failure_reason", "version", "initiated_at", "updated_at")


@dataclass(frozen=True, slots=True)
class ReadMark:
    """Where a read of the projections stands in the database's transaction history: a later read finds
    the rows written since by it (see adapters/postgres/projection_changes.py)."""

    xmin: int  # the oldest transaction still running when the read began (64-bit, epoch included)
    database: str  # which database (and server life) the ids belong to


class ProjectionSnapshot(Protocol):
    """Reads of both projection tables as of one consistent picture."""

    @property
    def mark(self) -> ReadMark: ...

    def why_not_comparable(self, earlier: ReadMark) -> str | None:
        """None if rows can be compared with that earlier read; else why not."""
        ...

    def ids(self, entity_type: str) -> set[str]: ...

    def changed_ids(self, entity_type: str, earlier_xmin: int) -> set[str]:
        """The ids of rows that may have been written since the read marked `earlier_xmin` (never fewer)."""
        ...

    def balance_sums(self) -> dict[str, tuple[int, int]]:
        """Per row currency: the sum of balance_minor and the number of rows."""
        ...

    def read_accounts(self, ids: Sequence[str]) -> dict[str, AccountState]: ...

    def read_transactions(self, ids: Sequence[str]) -> dict[str, TransactionState]: ...


class ProjectionStore(Protocol):
    """The engine's read-side projections, as the contract fixes them; writes never lower a version."""

    def read_accounts(self, ids: Sequence[str] | None = None) -> dict[str, AccountState]: ...

    def read_transactions(self, ids: Sequence[str] | None = None) -> dict[str, TransactionState]: ...

    def read_mark(self) -> ReadMark:
        """Take it before a read: everything written before it is seen by the read."""
        ...

    def snapshot(self) -> AbstractContextManager[ProjectionSnapshot]: ...

    def upsert(self, entity_type: str, states: Sequence[AccountState | TransactionState]) -> int:
        """Insert or update these rows in one transaction, never moving a row to a lower version; returns the
        rows written."""
        ...

    def compare_and_set(self, entity_type: str, seen: AccountState | TransactionState,
                        new: AccountState | TransactionState) -> bool:
        """Overwrite one row only if it is still exactly `seen` (a row ahead of its events)."""
        ...

    def delete(self, entity_type: str, ids: Sequence[str]) -> int: ...

    @property
    def locks(self) -> Locks:
        """The locks of the operations that write these projections (held where the projections live)."""
        ...


# --- reports, audit and checkpoints (PostgreSQL, schema billing_recon) -----------------------------
PENDING = "pending"  # the outcome of an audit record written before its operation's first write


@dataclass(frozen=True, slots=True)
class AuditRecord:
    operator: Operator
    reason: str
    operation: str
    dry_run: bool
    entity_type: str
    entity_ids: Sequence[str]
    outcome: str
    run_id: str | None = None
    cut: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    completes: int | None = None  # the id of the `pending` record this record completes


class ReportStore(Protocol):
    """Stored reports (a run, its findings, its ledger identities) and the append-only audit trail."""

    def save_report(self, report: ReconciliationReport, source: str) -> None:
        """Store the run, its findings and its ledger identities at once; again under a run id replaces its
        scope's findings."""
        ...

    def findings(self, run_id: str, entity_type: str | None = None) -> list[Finding]: ...

    def latest_run_id(self, entity_type: str | None = None) -> str | None:
        """The newest finished full run (scope `all`, or `<entity_type>s`)."""
        ...

    def run_exists(self, run_id: str) -> bool: ...

    def write_audit(self, record: AuditRecord) -> int:
        """Append one audit record; returns its id."""
        ...

    def audit_records(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit rows, as stored."""
        ...

    def audit_operations(self, limit: int = 100) -> list[dict[str, Any]]:
        """One dict per audited operation, newest first: a pending record merged with its completion."""
        ...

    def audit_operation(self, run_id: str) -> dict[str, Any] | None:
        """The newest operation audited under `run_id` (a Dagster run's id), as `audit_operations` gives it;
        None when that run audited nothing."""
        ...


class CheckpointView(Protocol):
    """Reads of the checkpoints that belong together (one consistent view)."""

    def header(self, topics: str) -> CheckpointHeader | None: ...

    def delta_memo(self, topics: str) -> bytes | None: ...

    def entities(self, topics: str, kinds: Iterable[str] | None = None) -> Generator[EntityRow, None, None]:
        """Every checkpointed entity, or those of the given kinds (account, transaction, money)."""
        ...

    def entity_rows(self, topics: str, keys: Iterable[tuple[str, str]]) -> list[EntityRow]: ...


class CheckpointStore(Protocol):
    """One checkpoint per pair of topics: a header and the entity states, saved all at once."""

    def save(self, topics: str, code_version: str, cut: Cut, tail_marks: dict[str, int], ledger: bytes,
             rows: Iterable[EntityRow], *, run_id: str | None, replace_all: bool, delta: bytes | None = None,
             resumed_from: str | None = None) -> int | None:
        """Save atomically; a resumed run's (not `replace_all`) only while `resumed_from` is still the
        checkpoint, else nothing and None. Returns the entity rows written."""
        ...

    def reading(self) -> AbstractContextManager[CheckpointView]: ...

    def header(self, topics: str) -> CheckpointHeader | None: ...

    def entity_rows(self, topics: str, keys: Iterable[tuple[str, str]]) -> list[EntityRow]: ...

    def drop(self, topics: str) -> None: ...


# --- finding lifecycle, shadow tables, saga recovery (PostgreSQL, schema billing_recon) ------------
class LifecycleTransaction(Protocol):
    """The lifecycle tables inside one transaction holding the lifecycle lock: no other writer changes what it
    read before it ends; what it wrote commits when it ends, and nothing of it if the block raises."""

    def applied_statuses(self, run_id: str) -> dict[Key, str] | None:
        """The status each identity had in that run; None if the run was never applied."""
        ...

    def latest_applied_at(self) -> datetime | None:
        """When the newest applied run finished (None before the first)."""
        ...

    def rows(self, keys: Sequence[Key]) -> dict[Key, LifecycleRow]:
        """Every identity not resolved, and those of `keys` that are."""
        ...

    def save_run(self, run_id: str, finished_at: datetime, rows: Sequence[LifecycleRow],
                 counts: dict[str, int]) -> None:
        """Write these rows and the status each has in this run, and mark the run applied (with its counts)."""
        ...

    def note(self, keys: Sequence[Key], *, status: str, action: str, note: str, operator: str,
             at: datetime) -> None:
        """Give these identities this status and note, and add the note to their history."""
        ...


class LifecycleStore(Protocol):
    """The finding lifecycle: each identity's row, each applied run's statuses, the operators' notes."""

    def lifecycle_transaction(self) -> AbstractContextManager[LifecycleTransaction]: ...

    def run_lifecycle(self, run_id: str) -> RunLifecycle | None:
        """The statuses and severities one applied run gave; None if it was never applied."""
        ...

    def lifecycle_rows(self, status: str | None = None, limit: int = 1_000) -> list[LifecycleRow]:
        """The rows (of one status, if given), oldest first seen first."""
        ...

    def finding_keys(self, finding_ids: Sequence[int]) -> dict[int, Key]:
        """The identity of each stored finding id found (absent where no finding has that id)."""
        ...

    def lifecycle_notes(self, key: Key) -> list[dict[str, Any]]:
        """Every note recorded on one identity, oldest first (recorded_at, action, note, operator)."""
        ...


class ReportsWithLifecycle(ReportStore, LifecycleStore, Protocol):
    """The reports and the lifecycle they feed, kept together (the tables share a schema)."""

    def stored_report(self, run_id: str) -> ReconciliationReport | None:
        """A stored run read back: its scope, times and findings; None if there is no such run."""
        ...


@dataclass(slots=True)
class ShadowPlan:
    """What the replay decided per table: refused ids (with why), orphan ids, rows seen ahead of the log."""

    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    orphans: dict[str, list[str]] = field(default_factory=dict)
    ahead: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)  # (row seen, state of the log)
    shadow_rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShadowDiff:
    """One table's shadow against its live rows: rows per action, the first rows that would change (id,
    action, live and shadow row as JSON), and the id of every row that would."""

    counts: dict[str, int]
    sample: list[dict[str, Any]]
    changed_ids: list[str]


@dataclass(frozen=True, slots=True)
class ShadowSwap:
    """What a swap did to one live table: rows written, and live rows kept because they are newer."""

    written: int
    kept_newer_live: int


class ShadowTables(Protocol):
    """A shadow copy of each projection table beside the live one, diffed and swapped in (version-guarded)."""

    def ensure(self) -> None: ...

    def fill(self, accounts: Sequence[AccountState], transactions: Sequence[TransactionState]) -> dict[str, int]:
        """Replace both shadow tables' rows with these, at once; the rows per entity type."""
        ...

    def diff(self, plan: ShadowPlan, sample_rows: int) -> dict[str, ShadowDiff]:
        """Per entity type, what a swap would do with each row (the plan names refused, orphan and ahead ids)."""
        ...

    def swap(self, plan: ShadowPlan, *, delete_orphans: bool) -> dict[str, ShadowSwap]:
        """Write the shadow rows that differ into the live tables in one transaction; a live row of a higher
        version always wins; rows ahead are reset only if still as seen; orphans deleted only if asked."""
        ...


class ShadowProjections(ProjectionStore, Protocol):
    """The projections with their shadow tables (in their database: the swap is one transaction)."""

    @property
    def shadow(self) -> ShadowTables: ...


class AuditLookup(Protocol):
    def audit_record(self, audit_id: int) -> dict[str, Any] | None:
        """One audit row as stored (its columns by name); None if there is no such row."""
        ...


# --- locks and notifications ------------------------------------------------------------------------
class Locks(Protocol):
    """One operation of a kind at a time, for its whole length: a second is refused at once with
    `ConcurrentOperationError`, never queued; a dead holder's lock is released."""

    def rebuild(self, entity_type: str) -> AbstractContextManager[None]:
        """One rebuild (or shadow rebuild) of `entity_type` at a time."""
        ...

    def saga_recovery(self) -> AbstractContextManager[None]: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one message: `sent` with the channel's message id (`ts`), or why not."""

    sent: bool
    ts: str | None = None
    error: str | None = None


class Notifier(Protocol):
    """Alerts to one channel; never fails the caller (an undelivered alert is a `Delivery` saying why)."""

    @property
    def enabled(self) -> bool: ...

    def post(self, text: str, blocks: Sequence[dict[str, Any]] | None = None) -> Delivery: ...
