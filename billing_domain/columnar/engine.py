"""The columnar full replay: plain streams folded with Polars, every other stream by the reference `Replay`.

A stream is plain when every record filed under its entity decoded, is keyed and on its type's topic,
sits on one partition, and its versions are exactly 1..n in log order starting with its opening event
(AccountOpened / TransactionInitiated, only there). Then no stream rule can fire (no redelivery, no
conflicting version, no gap, no off-home event), and its fold is a scan: balance = cumulative credits -
debits (in Int128, so no sum of int64 amounts can wrap), limits and status = the last value set, the
invariants checked on every row. Anything else is fed, in log order, to the reference replay the caller
passed in; the entities of the two parts are disjoint (a record belongs to exactly one), so the parts only
meet in sums, saga money and the cut time, which are joined here.

Only a fresh replay of a full cut may be filled (no checkpointed state, no id filter): the incremental and
delta replays keep `touched` and the states at row versions across resumes, which this does not model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import polars as pl

from billing_domain.columnar.decode import KIND, REASON, REASONS, DecodedBatch, FoldColumns, decode_batch
from billing_domain.core.accounts import ACTIVE, CLOSED, SUSPENDED, AccountAggregate, AccountState
from billing_domain.core.aggregate import Aggregate, event_digest
from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    TransactionFailed,
    TransactionInitiated,
)
from billing_domain.core.records import LogRecord
from billing_domain.core.replay import SAGA_REASONS, InvariantBreak, MoneyMove, Replay, position_of
from billing_domain.core.transactions import (
    COMPENSATED,
    COMPLETED,
    FAILED,
    PENDING,
    TransactionAggregate,
    TransactionState,
)

ENGINES: Final = ("aggregate", "columnar")
OPENED, CREDITED, DEBITED, LIMITS = (KIND[n] for n in ("AccountOpened", "AccountCredited", "AccountDebited",
                                                       "AccountLimitsChanged"))
SUSPENDED_KIND, REACTIVATED, CLOSED_KIND = (KIND[n] for n in ("AccountSuspended", "AccountReactivated",
                                                              "AccountClosed"))
INITIATED, COMPLETED_KIND, FAILED_KIND, COMPENSATED_KIND = (
    KIND[n] for n in ("TransactionInitiated", "TransactionCompleted", "TransactionFailed", "TransactionCompensated"))
FIRST_TRANSACTION_KIND: Final = INITIATED  # account kinds come before it
ACCOUNT_STATUS: Final = (None, ACTIVE, SUSPENDED, CLOSED)  # status codes of the account scan
SAGA_STATUS: Final = (None, PENDING, COMPLETED, FAILED, COMPENSATED)
SAGA_REASON_CODES: Final = [REASON[r] for r in sorted(SAGA_REASONS)]


@dataclass(frozen=True, slots=True)
class FoldSplit:
    """How many records each engine folded: the columns (plain streams) and the reference (the rest)."""

    columnar: int
    reference: int


def fold_into(replay: Replay, records: Sequence[LogRecord]) -> FoldSplit:
    """Fold every record of a full cut into `replay` (fresh, as `read_path` builds it): as `replay.feed(records)`
    would, with the plain streams folded by columns."""
    _check_fresh(replay)
    batch = decode_batch(records, replay.topics)
    frame = _fold_frame(batch.columns)
    plain = _plain_rows(frame, batch.poisoned)
    is_plain = [False] * len(records)
    for index in plain["index"].to_list():
        is_plain[index] = True
    replay.feed(record for record, skip in zip(records, is_plain, strict=True) if not skip)
    _fold_accounts(replay, batch, plain.filter(pl.col("kind") < FIRST_TRANSACTION_KIND))
    _fold_transactions(replay, batch, plain.filter(pl.col("kind") >= FIRST_TRANSACTION_KIND))
    replay.events_read += plain.height
    replay.cut_time = _cut_time(batch, frame)
    return FoldSplit(plain.height, len(records) - plain.height)


def can_fold(replay: Replay) -> bool:
    """Is this a fresh, unfiltered replay (nothing hydrated, nothing fed): the only kind this engine fills?"""
    return not (replay.only_ids is not None or replay.touched is not None or replay.accounts or replay.transactions
                or replay.corrupt or replay.events_read)


def _check_fresh(replay: Replay) -> None:
    if not can_fold(replay):
        raise ValueError("the columnar engine folds a full cut into a fresh, unfiltered replay only")


def _fold_frame(columns: FoldColumns) -> pl.DataFrame:
    return columns.frame()


def _plain_rows(frame: pl.DataFrame, poisoned: set[int]) -> pl.DataFrame:
    """The rows of the plain streams, each stream's in version order (which is its log order)."""
    opening = pl.col("kind").is_in([OPENED, INITIATED])
    streams = frame.group_by("entity").agg(
        in_place=pl.col("in_place").all(),
        partitions=pl.col("partition").n_unique(),
        in_order=(pl.col("version") == pl.int_range(1, pl.len() + 1, dtype=pl.Int64)).all(),
        openings=opening.sum(),
        opens=opening.first(),
    )
    plain = streams.filter(pl.col("in_place") & (pl.col("partitions") == 1) & pl.col("in_order")
                           & (pl.col("openings") == 1) & pl.col("opens")
                           & ~pl.col("entity").is_in(sorted(poisoned)))
    return frame.join(plain.select("entity"), on="entity", how="semi").sort(["entity", "version"])


def _cut_time(batch: DecodedBatch, frame: pl.DataFrame) -> Any:
    """The latest occurred_at of the events the reference would date the cut by (keyed, on their topic): the
    first such event in log order, as `Replay.feed` keeps it (its offset is kept as written)."""
    placed = frame.filter(pl.col("in_place"))
    if placed.height == 0:
        return None
    # The first record at the latest instant, by its index: `arg_max` does not promise the first of equal
    # maxima, and two equal instants may be written with different offsets (the differential test found it).
    latest = placed["occurred_us"].max()
    index = placed.filter(pl.col("occurred_us") == latest)["index"].min()
    assert isinstance(index, int)
    event = batch.events[index]
    assert event is not None
    return event.occurred_at


# --- per-stream layout ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Streams:
    """The plain rows of one aggregate type as Python lists, with where each stream's rows start and end."""

    entity: list[int]
    start: list[int]
    length: list[int]
    index: list[int]  # record index per row, streams one after the other, each in version order


def _layout(rows: pl.DataFrame) -> _Streams:
    spans = rows.with_row_index("row").group_by("entity", maintain_order=True).agg(
        start=pl.col("row").first(), length=pl.len())
    return _Streams(spans["entity"].to_list(), spans["start"].to_list(), spans["length"].to_list(),
                    rows["index"].to_list())


def _at_versions(rows: pl.DataFrame, codes: dict[str, int], versions: Mapping[str, int], shift: int,
                 columns: list[str]) -> dict[int, tuple[Any, ...]]:
    """Per entity with a row version v: the scan's row at version v + shift (`columns`), if the stream has one."""
    wanted = pl.DataFrame({"entity": [codes[k] for k in versions if k in codes],
                           "version": [v + shift for k, v in versions.items() if k in codes]},
                          schema={"entity": pl.Int64, "version": pl.Int64})
    found = rows.join(wanted, on=["entity", "version"], how="inner")
    return dict(zip(found["entity"].to_list(), found.select(columns).iter_rows(), strict=True))


def _codes(batch: DecodedBatch, entity_type: str) -> dict[str, int]:
    return batch.codes_of(entity_type)


def _event(batch: DecodedBatch, index: int) -> Event:
    event = batch.events[index]
    assert event is not None, "a plain stream's records all decoded"
    return event


# --- accounts -------------------------------------------------------------------------------------------
def _account_scan(rows: pl.DataFrame) -> pl.DataFrame:
    kind = pl.col("kind")
    signed = (pl.when(kind == CREDITED).then(pl.col("amount")).when(kind == DEBITED).then(-pl.col("amount"))
              .otherwise(0).cast(pl.Int128))
    status = (pl.when(kind.is_in([OPENED, REACTIVATED])).then(1).when(kind == SUSPENDED_KIND).then(2)
              .when(kind == CLOSED_KIND).then(3).otherwise(None).cast(pl.Int8))
    scan = rows.with_columns(
        balance=signed.cum_sum().over("entity"),
        low=pl.col("min_balance").forward_fill().over("entity").cast(pl.Int128),
        high=pl.col("max_balance").forward_fill().over("entity").cast(pl.Int128),
        status=status.forward_fill().over("entity"),
    )
    money = kind.is_in([CREDITED, DEBITED])
    return scan.with_columns(
        after_close=money & (pl.col("status").shift(1).over("entity") == 3).fill_null(False),
        broken=(pl.col("balance") < 0) | (pl.col("balance") < pl.col("low")) | (pl.col("balance") > pl.col("high"))
        | (pl.col("high") <= pl.col("low")),
    )


def _fold_accounts(replay: Replay, batch: DecodedBatch, rows: pl.DataFrame) -> None:
    if rows.height == 0:
        return
    scan = _account_scan(rows)
    streams = _layout(scan)
    heads = scan.group_by("entity", maintain_order=True).agg(
        pl.col("balance").last(), pl.col("low").last(), pl.col("high").last(), pl.col("status").last())
    codes = _codes(batch, "account")
    snapshots = _at_versions(scan, codes, replay.account_versions, 0, ["index", "balance", "low", "high", "status"])
    unapplied = _unapplied(replay, batch, scan, codes, replay.account_versions, "account")
    violations = _account_violations(batch, scan.filter(pl.col("after_close") | pl.col("broken")))
    topic = replay.topics.accounts
    for position, head in enumerate(heads.iter_rows()):
        code, balance, low, high, status = head
        start, length = streams.start[position], streams.length[position]
        indexes = streams.index[start:start + length]
        account = _account(batch, indexes, balance, low, high, ACCOUNT_STATUS[status])
        account.violations = violations.get(code, ((), None))[0]
        _file(replay, "account", account, topic, batch.records[indexes[0]].partition() or 0)
        replay.accounts[account.aggregate_id] = account
        broken = violations.get(code, ([], None))[1]
        if broken is not None:
            replay.invariant_breaks[account.aggregate_id] = broken
        snapshot = snapshots.get(code)
        if snapshot is not None:
            replay.account_snapshots[account.aggregate_id] = _account_state(batch, account, snapshot)
        if code in unapplied:
            replay.unapplied[("account", account.aggregate_id)] = unapplied[code]
    _count_money(replay, batch, scan)


def _account(batch: DecodedBatch, indexes: list[int], balance: int, low: int, high: int,
             status: str | None) -> AccountAggregate:
    opened = _event(batch, indexes[0])
    payload = opened.payload
    assert type(payload) is AccountOpened
    account = AccountAggregate(opened.aggregate_id)
    account.owner_id, account.currency = payload.owner_id, payload.currency
    account.balance_minor, account.min_balance_minor, account.max_balance_minor = balance, low, high
    account.status = status or ""
    _stand_at_head(batch, account, indexes)
    return account


def _stand_at_head(batch: DecodedBatch, aggregate: AccountAggregate | TransactionAggregate,
                   indexes: list[int]) -> None:
    events = batch.events
    ids = [events[i].event_id for i in indexes]  # type: ignore[union-attr]  # a plain stream's records decoded
    _keep_ids(aggregate, ids)
    aggregate.version = len(indexes)
    aggregate.updated_at = _event(batch, indexes[-1]).occurred_at
    aggregate._applying = len(indexes)  # the reference ends a fold with it at the head


def _keep_ids(aggregate: Aggregate, ids: list[str]) -> None:
    """Keep the applied ids as `Aggregate.apply` keeps them: a digest per version, the last id as text."""
    aggregate.event_digests = bytearray(b"".join(map(event_digest, ids)))
    aggregate.last_event_id = ids[-1]


def _file(replay: Replay, entity_type: str, aggregate: AccountAggregate | TransactionAggregate, topic: str,
          partition: int) -> None:
    aggregate.partition = partition
    replay.partition_of[(entity_type, aggregate.aggregate_id)] = (topic, partition)


def _account_state(batch: DecodedBatch, account: AccountAggregate, row: tuple[Any, ...]) -> AccountState:
    index, balance, low, high, status = row
    event = _event(batch, index)
    return AccountState(account.aggregate_id, account.owner_id, account.currency, balance, low, high,
                        ACCOUNT_STATUS[status] or "", event.aggregate_version, event.event_id, event.occurred_at)


def _account_violations(batch: DecodedBatch, flagged: pl.DataFrame
                        ) -> dict[int, tuple[list[str], InvariantBreak | None]]:
    """Replays `AccountAggregate._mutate`'s rules on the flagged rows only (the others record nothing): money
    after AccountClosed is recorded at every such event, a broken invariant only while nothing is recorded;
    the first event that recorded anything is the stream's invariant break."""
    found: dict[int, tuple[list[str], InvariantBreak | None]] = {}
    for code, index, after_close, broken, balance, low, high in flagged.select(
            ["entity", "index", "after_close", "broken", "balance", "low", "high"]).iter_rows():
        event = _event(batch, index)
        recorded, first = found.get(code, ([], None))
        before = len(recorded)
        if after_close:
            recorded.append(f"v{event.aggregate_version}: {event.event_type} {event.event_id} after AccountClosed")
        if broken and not recorded:
            recorded.append(f"v{event.aggregate_version}: {_broken_invariant(balance, low, high)}")
        if first is None and len(recorded) != before:
            first = InvariantBreak(event.aggregate_version, recorded[-1], event.event_id,
                                   position_of(batch.records[index]))
        found[code] = (recorded, first)
    return found


def _broken_invariant(balance: int, low: int, high: int) -> str:
    """`AccountAggregate.broken_invariant` of a state given by its numbers."""
    probe = AccountAggregate("")
    probe.balance_minor, probe.min_balance_minor, probe.max_balance_minor = balance, low, high
    return probe.broken_invariant() or "invariant"


def _count_money(replay: Replay, batch: DecodedBatch, scan: pl.DataFrame) -> None:
    """Sums per currency and reason, and the saga legs, of the plain accounts' money events."""
    money = scan.filter(pl.col("kind").is_in([CREDITED, DEBITED]))
    sums = money.group_by(["entity", "kind", "reason"]).agg(pl.col("amount").cast(pl.Int128).sum())
    currency = {code: replay.accounts[entity_id].currency for entity_id, code in _codes(batch, "account").items()
                if entity_id in replay.accounts}
    for code, kind, reason, amount in sums.iter_rows():
        side = replay.credits if kind == CREDITED else replay.debits
        side[currency[code]][REASONS[reason]] += amount
    legs = money.filter(pl.col("reason").is_in(SAGA_REASON_CODES)).sort("index")
    events, saga_money = batch.events, replay.saga_money
    for code, index in zip(legs["entity"].to_list(), legs["index"].to_list(), strict=True):
        event = events[index]
        assert event is not None
        payload = event.payload
        # `type() is`, not isinstance: a union isinstance was a third of this loop's time
        assert type(payload) is AccountCredited or type(payload) is AccountDebited
        if payload.transaction_id is not None:
            saga_money[payload.transaction_id].append(MoneyMove(
                event.aggregate_id, payload.reason, payload.amount_minor, currency[code], event.event_id,
                event.occurred_at))


def _unapplied(replay: Replay, batch: DecodedBatch, scan: pl.DataFrame, codes: dict[str, int],
               versions: Mapping[str, int], entity_type: str) -> dict[int, Any]:
    """The first event each row lacks (the one after its version; the first one with no row), as
    `Replay._apply_*` notes it: only when rows of this type were read."""
    if not replay.rows_read[entity_type]:
        return {}
    row_versions = {entity_id: versions.get(entity_id) or 0 for entity_id in codes}
    found = _at_versions(scan, codes, row_versions, 1, ["index"])
    return {code: (_event(batch, index).occurred_at, position_of(batch.records[index]))
            for code, (index,) in found.items()}


# --- transactions ---------------------------------------------------------------------------------------
def _saga_scan(rows: pl.DataFrame) -> pl.DataFrame:
    kind = pl.col("kind")
    status = (pl.when(kind == INITIATED).then(1).when(kind == COMPLETED_KIND).then(2).when(kind == FAILED_KIND)
              .then(3).when(kind == COMPENSATED_KIND).then(4).otherwise(None).cast(pl.Int8))
    scan = rows.with_columns(
        status=status.forward_fill().over("entity"),
        failed_at=pl.when(kind == FAILED_KIND).then(pl.col("index")).otherwise(None).forward_fill().over("entity"),
    )
    return scan.with_columns(status_before=pl.col("status").shift(1).over("entity"))


def _fold_transactions(replay: Replay, batch: DecodedBatch, rows: pl.DataFrame) -> None:
    if rows.height == 0:
        return
    scan = _saga_scan(rows)
    streams = _layout(scan)
    heads = scan.group_by("entity", maintain_order=True).agg(pl.col("status").last(), pl.col("failed_at").last())
    codes = _codes(batch, "transaction")
    snapshots = _at_versions(scan, codes, replay.transaction_versions, 0, ["index", "status", "failed_at"])
    unapplied = _unapplied(replay, batch, scan, codes, replay.transaction_versions, "transaction")
    moves = scan.filter((pl.col("kind") != INITIATED) & (pl.col("status_before") != 1))
    illegal: dict[int, list[str]] = {}
    for code, version, before, after in moves.select(["entity", "version", "status_before", "status"]).iter_rows():
        illegal.setdefault(code, []).append(f"v{version}: illegal move {SAGA_STATUS[before]} -> {SAGA_STATUS[after]}")
    topic = replay.topics.transactions
    for position, (code, status, failed_at) in enumerate(heads.iter_rows()):
        start, length = streams.start[position], streams.length[position]
        indexes = streams.index[start:start + length]
        saga = _saga(batch, indexes, SAGA_STATUS[status], failed_at)
        saga.violations = illegal.get(code, ())
        _file(replay, "transaction", saga, topic, batch.records[indexes[0]].partition() or 0)
        replay.transactions[saga.aggregate_id] = saga
        snapshot = snapshots.get(code)
        if snapshot is not None:
            replay.transaction_snapshots[saga.aggregate_id] = _saga_state(batch, saga, snapshot)
        if code in unapplied:
            replay.unapplied[("transaction", saga.aggregate_id)] = unapplied[code]


def _saga(batch: DecodedBatch, indexes: list[int], status: str | None, failed_at: int | None) -> TransactionAggregate:
    initiated = _event(batch, indexes[0])
    payload = initiated.payload
    assert type(payload) is TransactionInitiated
    saga = TransactionAggregate(initiated.aggregate_id)
    saga.source_account_id, saga.destination_account_id = payload.source_account_id, payload.destination_account_id
    saga.amount_minor, saga.currency = payload.amount_minor, payload.currency
    saga.status = status or ""
    saga.failure_reason = _failure_reason(batch, failed_at)
    saga.initiated_at = initiated.occurred_at
    _stand_at_head(batch, saga, indexes)
    return saga


def _failure_reason(batch: DecodedBatch, failed_at: int | None) -> str | None:
    if failed_at is None:
        return None
    payload = _event(batch, failed_at).payload
    assert type(payload) is TransactionFailed
    return payload.reason


def _saga_state(batch: DecodedBatch, saga: TransactionAggregate, row: tuple[Any, ...]) -> TransactionState:
    index, status, failed_at = row
    event = _event(batch, index)
    return TransactionState(saga.aggregate_id, saga.source_account_id, saga.destination_account_id,
                            saga.amount_minor, saga.currency, SAGA_STATUS[status] or "",
                            _failure_reason(batch, failed_at), event.aggregate_version, saga.initiated_at,
                            event.occurred_at)
