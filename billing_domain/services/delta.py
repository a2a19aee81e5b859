"""Delta reconciliation: diff again only the entities whose events or projection rows changed.

An incremental replay folds only the log's tail, but it still loads every checkpointed aggregate and
diffs every projection row, because a row can change without an event (a manual edit, a bug). The
delta run diffs only the set D of entities that can have changed since the checkpointed run:

- those the tail touched (their events, a poison event or a transfer's money on an account stream);
- those whose projection row was written or deleted since that run read it (`projection_changes`);
- the transfers pending at its cut, because `stuck` is judged by each run's clock;
- the entities that run found `lagging`: whether a row may still be behind, or a transfer in flight, is
  judged by the lag window at each run's own read, so that judgement is never carried over.

Every other entity has the same events and the same row as then, so its findings are the previous
report's: they are carried over. The accounting identities are kept as sums: the projection side from
one SQL aggregate, the events side from the memo the previous run left (per-currency head totals and
the few accounts whose row lags or names another currency), updated for D.

Nothing is guessed: without a readable memo, a stored previous report, a trusted checkpoint, the same
database server and a sane distance in transaction ids, or with a long tail, `try_delta` says why and
the caller replays incrementally as before. The memo is written by every complete run (full,
incremental or delta) that saves a checkpoint.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
from confluent_kafka import Message
from sqlalchemy.engine import Engine

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore, CheckpointView
from billing_domain.adapters.postgres.projection_changes import ProjectionSnapshot, ReadMark, projection_snapshot
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.checkpoint import CheckpointHeader, load_entities, load_ledger, topics_key
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.events import decode_event
from billing_domain.core.exceptions import CheckpointUnreadableError, EventDecodeError
from billing_domain.core.findings import Finding, Kind
from billing_domain.core.lag import LagJudge
from billing_domain.core.ledger import LedgerTotals, events_balance
from billing_domain.core.replay import Replay, poison_entity_id
from billing_domain.core.transactions import PENDING, TransactionState
from billing_domain.services import incremental

# A tail this large (in events per checkpointed entity) touches most entities anyway; the plain
# incremental replay streams it instead of holding it in memory.
MAX_TAIL_PER_ENTITY = 0.5
MIN_TAIL_LIMIT = 100_000


class DeltaMemo(msgspec.Struct, frozen=True):
    """What a complete run leaves with its checkpoint for the next run to diff only what changed."""

    run_id: str  # the stored report whose findings the next run carries over
    snapshot_xmin: int  # the `projection_changes.ReadMark` of this run's read of the projections
    database: str  # (both parts)
    account_ids: list[str]  # the projection rows this run read
    transaction_ids: list[str]
    pending: list[str]  # transfers pending at the cut
    head_total: dict[str, int]  # Σ account balances at their heads, per currency
    misattributed: dict[str, tuple[str, str, int]]  # account -> (row currency, account currency, row balance)
    lag: dict[str, tuple[str, int]]  # account -> (currency, head balance − balance at the row's version)
    accounts: int  # aggregates folded, for the report's stats
    transactions: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DeltaMemo)


def encode_memo(memo: DeltaMemo) -> bytes | None:
    """The memo's bytes; None when a sum in it passes 64 bits (valid amounts can add up to that): the next
    run then diffs every entity, and says there is no memo, instead of this one failing to save."""
    try:
        return _encoder.encode(memo)
    except OverflowError:
        return None


def decode_memo(blob: bytes) -> DeltaMemo:
    return _decoder.decode(blob)


@dataclass(frozen=True, slots=True)
class DeltaResult:
    """What `build_report` and `save_checkpoint` need besides the replay of D."""

    carried: list[Finding]
    totals: LedgerTotals
    memo: DeltaMemo  # for this run; its run_id is set when the checkpoint is saved


@dataclass(frozen=True, slots=True)
class DeltaReplay:
    replay: Replay
    cut: Cut
    account_rows: dict[str, AccountState]
    transaction_rows: dict[str, TransactionState]
    timings: dict[str, float]
    result: DeltaResult
    reason: str
    mark: ReadMark
    resumed_from: str | None  # the run whose checkpoint this continues


# --- the memo of a complete run ---------------------------------------------------------------------------
def memo_of(replay: Replay, account_rows: Mapping[str, AccountState], transaction_rows: Mapping[str, TransactionState],
            mark: ReadMark, run_id: str, judge: LagJudge) -> DeltaMemo:
    head: dict[str, int] = defaultdict(int)
    misattributed: dict[str, tuple[str, str, int]] = {}
    lag: dict[str, tuple[str, int]] = {}
    for account_id, account in replay.accounts.items():
        _account_sums(replay, judge, account_id, account, account_rows.get(account_id), head, misattributed, lag)
    return DeltaMemo(run_id, mark.xmin, mark.database, sorted(account_rows), sorted(transaction_rows),
                     sorted(t for t, saga in replay.transactions.items() if saga.status == PENDING),
                     dict(head), misattributed, lag, len(replay.accounts), len(replay.transactions))


def _account_sums(replay: Replay, judge: LagJudge, account_id: str, account: AccountAggregate,
                  row: AccountState | None, head: dict[str, int], misattributed: dict[str, tuple[str, str, int]],
                  lag: dict[str, tuple[str, int]]) -> None:
    """Add one account to the sums, as `ledger._balance_totals` counts it."""
    if account.version == 0:
        return
    head[account.currency] += account.balance_minor
    if row is not None and row.currency != account.currency:
        misattributed[account_id] = (row.currency, account.currency, row.balance_minor)
    counted = events_balance(replay, judge, account_id, account, row)
    if counted != account.balance_minor:  # (a lagging entity is always diffed again: see `_rejudged`)
        lag[account_id] = (account.currency, account.balance_minor - counted)


def totals_of(memo: DeltaMemo, row_sums: Mapping[str, tuple[int, int]]) -> LedgerTotals:
    """The identities' sums from SQL sums by row currency and the memo's exceptions."""
    projection = {currency: total for currency, (total, _) in row_sums.items()}
    rows = {currency: count for currency, (_, count) in row_sums.items()}
    for row_currency, account_currency, balance in memo.misattributed.values():
        projection[row_currency] -= balance
        rows[row_currency] -= 1
        projection[account_currency] = projection.get(account_currency, 0) + balance
        rows[account_currency] = rows.get(account_currency, 0) + 1
    events = dict(memo.head_total)
    for currency, difference in memo.lag.values():
        events[currency] -= difference
    return LedgerTotals({c: t for c, t in projection.items() if rows[c] > 0}, events, memo.head_total)


# --- the delta run --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Previous:
    header: CheckpointHeader
    memo: DeltaMemo
    findings: list[Finding]


@dataclass(frozen=True, slots=True)
class _RowChanges:
    ids: dict[str, set[str]]  # every projection id now, per entity type
    changed: dict[str, set[str]]  # written or deleted since the previous read
    row_sums: dict[str, tuple[int, int]]


def try_delta(event_store: KafkaEventStore, projections_engine: Engine, checkpoints: CheckpointStore,
              judge: LagJudge) -> DeltaReplay | str:
    """Replay and read only what changed since the checkpointed run; or the reason that cannot be done."""
    began = time.perf_counter()
    try:
        with checkpoints.reading() as view:  # the header, memo and states of one checkpoint
            previous = _previous_run(event_store, view, ReconStore(checkpoints.engine))
            if isinstance(previous, str):
                return previous
            start = incremental.start_after(event_store, previous.header)
            gathered = _gather(event_store, projections_engine, previous.memo, start, _rejudged(previous.findings))
            if isinstance(gathered, str):
                return gathered
            replay = Replay(event_store.topics,
                            account_versions={k: r.version for k, r in gathered.account_rows.items()},
                            transaction_versions={k: r.version for k, r in gathered.transaction_rows.items()})
            hydrated = _hydrate(replay, view, previous.header, gathered.accounts, gathered.transactions)
    except CheckpointUnreadableError as exc:
        return str(exc)
    read = time.perf_counter()
    older = incremental.rows_below_checkpoint(replay)
    for batch in gathered.batches:
        replay.feed(batch)
    incremental.fill_older_snapshots(event_store, replay, older, start)
    strays = sorted(i for t, i in replay.touched or ()
                    if i not in (gathered.accounts if t == "account" else gathered.transactions))
    if strays:  # the pre-scan missed an entity the replay changed: never carry a finding it may have changed
        return f"the tail changed entities the pre-scan did not name: {', '.join(strays[:5])}"
    memo = previous.memo
    memo_now = _next_memo(memo, replay, judge, gathered.account_rows, gathered.accounts, hydrated,
                          gathered.rows.ids, gathered.mark)
    carried = [f for f in previous.findings if f.kind != Kind.LAGGING and (
        (f.entity_type == "account" and f.entity_id not in gathered.accounts)
        or (f.entity_type == "transaction" and f.entity_id not in gathered.transactions))]
    timings = {"read_projections_s": gathered.read_s, "read_tail_s": read - began - gathered.read_s,
               "load_checkpoint_s": 0.0, "replay_s": time.perf_counter() - read}
    diffed = len(gathered.accounts) + len(gathered.transactions)
    reason = (f"delta from the checkpoint of run {memo.run_id}: {diffed:,} of "
              f"{memo_now.accounts + memo_now.transactions:,} entities diffed again, {len(carried):,} findings "
              "carried over")
    return DeltaReplay(replay, gathered.cut, gathered.account_rows, gathered.transaction_rows, timings,
                       DeltaResult(carried, totals_of(memo_now, gathered.rows.row_sums), memo_now), reason,
                       gathered.mark, previous.header.run_id)


def _previous_run(event_store: KafkaEventStore, view: CheckpointView, recon: ReconStore) -> _Previous | str:
    """The trusted checkpoint, its memo and the stored report of the run that wrote them."""
    key = topics_key(event_store.topics.all())
    header = view.header(key)
    if header is None or not header.has_delta_memo:
        return "no delta memo with the checkpoint"
    distrust = incremental.distrust(event_store, header)
    if distrust is not None:
        return distrust
    blob = view.delta_memo(key)
    if blob is None:
        return "the delta memo is gone"
    try:
        memo = decode_memo(blob)
    except msgspec.DecodeError as exc:  # written by another version of the memo
        return f"the delta memo is unreadable ({exc})"
    if not recon.run_exists(memo.run_id):
        return f"the report of run {memo.run_id} is not stored"
    return _Previous(header, memo, recon.findings(memo.run_id))


@dataclass(frozen=True, slots=True)
class _Gathered:
    """What changed, from one snapshot of the projections and then the log's tail."""

    mark: ReadMark
    rows: _RowChanges
    batches: list[list[Message]]
    cut: Cut
    accounts: set[str]  # D, the entities to diff again
    transactions: set[str]
    account_rows: dict[str, AccountState]
    transaction_rows: dict[str, TransactionState]
    read_s: float


def _rejudged(findings: list[Finding]) -> dict[str, set[str]]:
    """The entities whose previous findings said `lagging`: judged again at this run's read, never carried."""
    ids: dict[str, set[str]] = {"account": set(), "transaction": set()}
    for finding in findings:
        if finding.kind == Kind.LAGGING and finding.entity_type in ids:
            ids[finding.entity_type].add(finding.entity_id)
    return ids


def _gather(event_store: KafkaEventStore, projections_engine: Engine, memo: DeltaMemo,
            start: dict[TopicPartitionKey, int], rejudged: dict[str, set[str]]) -> _Gathered | str:
    began = time.perf_counter()
    # Rows first, then the log (see service.py): a row can then only be behind the events we read.
    with projection_snapshot(projections_engine) as snapshot:
        rows = _row_changes(snapshot, memo)
        if isinstance(rows, str):
            return rows
        read_s = time.perf_counter() - began
        limit = max(MIN_TAIL_LIMIT, int(MAX_TAIL_PER_ENTITY * (memo.accounts + memo.transactions)))
        tail = _read_tail(event_store, start, limit)
        if isinstance(tail, str):
            return tail
        batches, cut = tail
        touched = _touched(event_store, batches)
        accounts = touched["account"] | rows.changed["account"] | rejudged["account"]
        transactions = (touched["transaction"] | rows.changed["transaction"] | set(memo.pending)
                        | rejudged["transaction"])
        return _Gathered(snapshot.mark, rows, batches, cut, accounts, transactions,
                         snapshot.read_accounts(sorted(accounts & rows.ids["account"])),
                         snapshot.read_transactions(sorted(transactions & rows.ids["transaction"])), read_s)


def _row_changes(snapshot: ProjectionSnapshot, memo: DeltaMemo) -> _RowChanges | str:
    why_not = snapshot.why_not_comparable(ReadMark(memo.snapshot_xmin, memo.database))
    if why_not is not None:
        return why_not
    ids = {"account": snapshot.ids("account"), "transaction": snapshot.ids("transaction")}
    changed = {t: snapshot.changed_ids(t, memo.snapshot_xmin) for t in ids}
    changed["account"] |= set(memo.account_ids) - ids["account"]
    changed["transaction"] |= set(memo.transaction_ids) - ids["transaction"]
    return _RowChanges(ids, changed, snapshot.balance_sums())


@dataclass(frozen=True, slots=True)
class _Hydrated:
    accounts: set[str]  # the aggregates the checkpoint held before the tail
    transactions: set[str]
    old_heads: dict[str, tuple[str, int]]  # account -> (currency, balance) at the checkpoint


def _hydrate(replay: Replay, view: CheckpointView, header: CheckpointHeader, accounts: set[str],
             transactions: set[str]) -> _Hydrated:
    """Load the checkpointed state of just these entities, and the ledger sums, into `replay`."""
    wanted = [("account", a) for a in accounts] + [(k, t) for t in transactions for k in ("transaction", "money")]
    load_entities(replay, view.entity_rows(header.topics, wanted))
    load_ledger(replay, header.ledger)
    replay.touched = set()
    return _Hydrated(set(replay.accounts), set(replay.transactions),
                     {a: (account.currency, account.balance_minor) for a, account in replay.accounts.items()
                      if account.version > 0})


def _read_tail(event_store: KafkaEventStore, start: dict[TopicPartitionKey, int],
               limit: int) -> tuple[list[list[Message]], Cut] | str:
    # No progress callback: the tail is short, and a fallback would count it twice.
    reader = event_store.read_cut(start=start)
    batches: list[list[Message]] = []
    held = 0
    for batch in reader:
        batches.append(batch)
        held += len(batch)
        if held > limit:
            return f"the tail holds more than {limit:,} events"
    return batches, reader.cut


def _touched(event_store: KafkaEventStore, batches: list[list[Message]]) -> dict[str, set[str]]:
    """The entities the tail can change, named as the replay names them: each event's key and aggregate, the
    transfer a money event names, the entity a poison event is reported under. `try_delta` checks the
    replay's own record against this afterwards."""
    accounts_topic = event_store.topics.accounts
    touched: dict[str, set[str]] = {"account": set(), "transaction": set()}
    for batch in batches:
        for message in batch:
            topic_type = "account" if message.topic() == accounts_topic else "transaction"
            key = message.key()
            if key is not None:
                touched[topic_type].add(key.decode("utf-8", "replace"))
            try:
                event = decode_event(message.value(), key)
            except EventDecodeError as exc:
                touched[topic_type].add(poison_entity_id(exc, message))
                continue
            touched["account" if event.aggregate_type == "account" else "transaction"].add(event.aggregate_id)
            transaction_id = getattr(event.payload, "transaction_id", None)
            if transaction_id is not None:
                touched["transaction"].add(transaction_id)
    return touched


def _next_memo(memo: DeltaMemo, replay: Replay, judge: LagJudge, account_rows: Mapping[str, AccountState],
               accounts: set[str], hydrated: _Hydrated, ids: Mapping[str, set[str]], mark: ReadMark) -> DeltaMemo:
    """The memo updated for D: the other accounts kept their head, row and exceptions."""
    head: dict[str, int] = defaultdict(int, memo.head_total)
    for currency, balance in hydrated.old_heads.values():
        head[currency] -= balance
    misattributed = {a: v for a, v in memo.misattributed.items() if a not in accounts}
    lag = {a: v for a, v in memo.lag.items() if a not in accounts}
    for account_id in accounts:
        account = replay.accounts.get(account_id)
        if account is not None:
            _account_sums(replay, judge, account_id, account, account_rows.get(account_id), head, misattributed,
                          lag)
    pending = sorted(t for t, saga in replay.transactions.items() if saga.status == PENDING)
    return DeltaMemo("", mark.xmin, mark.database, sorted(ids["account"]), sorted(ids["transaction"]), pending,
                     dict(head), misattributed, lag, memo.accounts + len(set(replay.accounts) - hydrated.accounts),
                     memo.transactions + len(set(replay.transactions) - hydrated.transactions))
