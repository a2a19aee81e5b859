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
one SQL aggregate, the events side from the memo the previous run left (`delta_memo`), updated for D.

Nothing is guessed. Whether a delta run is done at all is decided before anything is read
(`read_plan`: a readable memo, a stored previous report, a trusted checkpoint, the same database server
and a sane distance in transaction ids, a short tail). Once the tail is read, two things can still
stop it, and `fold_delta` says so with `NotPossible`: a checkpointed state of D that does not decode,
and an entity the replay changed that the pre-scan of the tail did not name. The caller then diffs
every entity with the tail it already holds (`read_path`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from billing_domain.core.accounts import AccountState
from billing_domain.core.checkpoint import CheckpointHeader, load_entities, load_ledger
from billing_domain.core.cut import Cut
from billing_domain.core.events import decode_event
from billing_domain.core.exceptions import CheckpointUnreadableError, EventDecodeError
from billing_domain.core.findings import Finding, Kind
from billing_domain.core.lag import LagJudge
from billing_domain.core.records import LogRecord, Topics
from billing_domain.core.replay import Replay, poison_entity_id
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import CheckpointView, EventLog, ProjectionSnapshot, ReadMark, ReportStore
from billing_domain.services import incremental
from billing_domain.services.delta_memo import DeltaMemo, account_sums, decode_memo, pending_of, totals_of
from billing_domain.services.outcome import DeltaResult, ReplayOutcome
from billing_domain.services.read_plan import ReplayMode


@dataclass(frozen=True, slots=True)
class NotPossible:
    """Why no delta run: seen before the tail is read (the plan then says so), or once it is read (the caller
    then diffs every entity with the tail it holds)."""

    reason: str
    checkpoint_usable: bool = True  # False: a checkpointed state does not decode, so replay the whole log


@dataclass(frozen=True, slots=True)
class HeldTail:
    """The log's tail after the checkpoint, read once and held: D is known only once it is read."""

    batches: list[Sequence[LogRecord]]
    cut: Cut
    read_s: float


# --- before the tail is read ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Previous:
    """The trusted checkpoint, its memo and the findings of the stored report the memo names."""

    header: CheckpointHeader
    memo: DeltaMemo
    findings: list[Finding]


def previous_run(view: CheckpointView, reports: ReportStore | None,
                 header: CheckpointHeader) -> Previous | NotPossible:
    """The memo with this (trusted) checkpoint and the stored report of the run that wrote them; or why not."""
    blob = view.delta_memo(header.topics)
    if blob is None:
        return NotPossible("the delta memo is gone")
    try:
        memo = decode_memo(blob)
    except msgspec.DecodeError as exc:  # written by another version of the memo
        return NotPossible(f"the delta memo is unreadable ({exc})")
    if reports is None:
        return NotPossible("no report store to carry the previous run's findings over from")
    if not reports.run_exists(memo.run_id):
        return NotPossible(f"the report of run {memo.run_id} is not stored")
    return Previous(header, memo, reports.findings(memo.run_id))


@dataclass(frozen=True, slots=True)
class RowChanges:
    ids: dict[str, set[str]]  # every projection id now, per entity type
    changed: dict[str, set[str]]  # written or deleted since the previous read
    row_sums: dict[str, tuple[int, int]]
    read_s: float


def row_changes(snapshot: ProjectionSnapshot, memo: DeltaMemo) -> RowChanges:
    """The rows now and those changed since the memo's read (the plan checked the two reads compare)."""
    began = time.perf_counter()
    ids = {"account": snapshot.ids("account"), "transaction": snapshot.ids("transaction")}
    changed = {t: snapshot.changed_ids(t, memo.snapshot_xmin) for t in ids}
    changed["account"] |= set(memo.account_ids) - ids["account"]
    changed["transaction"] |= set(memo.transaction_ids) - ids["transaction"]
    return RowChanges(ids, changed, snapshot.balance_sums(), time.perf_counter() - began)


# --- once the tail is read ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Hydrated:
    accounts: set[str]  # the aggregates the checkpoint held before the tail
    transactions: set[str]
    old_heads: dict[str, tuple[str, int]]  # account -> (currency, balance) at the checkpoint


@dataclass(slots=True)
class Folded:
    """The replay of D fed with the tail; its older snapshots are filled by `finish_delta`."""

    replay: Replay
    account_rows: dict[str, AccountState]
    transaction_rows: dict[str, TransactionState]
    accounts: set[str]  # D
    transactions: set[str]
    hydrated: _Hydrated
    older: set[str]  # rows below the checkpoint: their older state comes from the start of the log
    mark: ReadMark
    timings: dict[str, float] = field(default_factory=dict)


def fold_delta(topics: Topics, view: CheckpointView, snapshot: ProjectionSnapshot, previous: Previous,
               changes: RowChanges, tail: HeldTail) -> Folded | NotPossible:
    """Name D from the tail and the rows, read D's rows, load D's checkpointed states and feed the tail."""
    began = time.perf_counter()
    touched, rejudged = touched_by(topics, tail.batches), _rejudged(previous.findings)
    accounts = touched["account"] | changes.changed["account"] | rejudged["account"]
    transactions = (touched["transaction"] | changes.changed["transaction"] | set(previous.memo.pending)
                    | rejudged["transaction"])
    # From the snapshot taken before the tail was read: a row can only be behind the events read.
    account_rows = snapshot.read_accounts(sorted(accounts & changes.ids["account"]))
    transaction_rows = snapshot.read_transactions(sorted(transactions & changes.ids["transaction"]))
    read_rows = time.perf_counter()
    replay = Replay(topics, account_versions={k: r.version for k, r in account_rows.items()},
                    transaction_versions={k: r.version for k, r in transaction_rows.items()})
    try:
        hydrated = _hydrate(replay, view, previous.header, accounts, transactions)
    except CheckpointUnreadableError as exc:
        return NotPossible(str(exc), checkpoint_usable=False)
    loaded = time.perf_counter()
    older = incremental.rows_below_checkpoint(replay)
    for batch in tail.batches:
        replay.feed(batch)
    strays = sorted(i for t, i in replay.touched or () if i not in (accounts if t == "account" else transactions))
    if strays:  # the pre-scan missed an entity the replay changed: never carry a finding it may have changed
        return NotPossible(f"the tail changed entities the pre-scan did not name: {', '.join(strays[:5])}")
    timings = {"read_projections_s": changes.read_s + read_rows - began, "read_tail_s": tail.read_s,
               "load_checkpoint_s": loaded - read_rows, "replay_s": time.perf_counter() - loaded}
    return Folded(replay, account_rows, transaction_rows, accounts, transactions, hydrated, older, snapshot.mark,
                  timings)


def finish_delta(event_log: EventLog, folded: Folded, previous: Previous, changes: RowChanges, tail: HeldTail,
                 judge: LagJudge) -> ReplayOutcome:
    """Fill the older snapshots, update the memo for D and carry every other finding over."""
    began = time.perf_counter()
    replay = folded.replay
    incremental.fill_older_snapshots(event_log, replay, folded.older, dict(tail.cut.start))
    memo = previous.memo
    memo_now = _next_memo(memo, folded, judge, changes.ids)
    carried = [f for f in previous.findings if f.kind != Kind.LAGGING and (
        (f.entity_type == "account" and f.entity_id not in folded.accounts)
        or (f.entity_type == "transaction" and f.entity_id not in folded.transactions))]
    timings = folded.timings | {"replay_s": folded.timings["replay_s"] + time.perf_counter() - began}
    diffed = len(folded.accounts) + len(folded.transactions)
    reason = (f"delta from the checkpoint of run {memo.run_id}: {diffed:,} of "
              f"{memo_now.accounts + memo_now.transactions:,} entities diffed again, {len(carried):,} findings "
              "carried over")
    return ReplayOutcome(replay, tail.cut, folded.account_rows, folded.transaction_rows, timings, ReplayMode.DELTA,
                         reason, folded.mark, DeltaResult(carried, totals_of(memo_now, changes.row_sums), memo_now),
                         resumed_from=previous.header.run_id, judge=judge)


def _rejudged(findings: list[Finding]) -> dict[str, set[str]]:
    """The entities whose previous findings said `lagging`: judged again at this run's read, never carried."""
    ids: dict[str, set[str]] = {"account": set(), "transaction": set()}
    for finding in findings:
        if finding.kind == Kind.LAGGING and finding.entity_type in ids:
            ids[finding.entity_type].add(finding.entity_id)
    return ids


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


def touched_by(topics: Topics, batches: list[Sequence[LogRecord]]) -> dict[str, set[str]]:
    """The entities the tail can change, named as the replay names them: each event's key and aggregate, the
    transfer a money event names, the entity a poison event is reported under. `fold_delta` checks the
    replay's own record against this afterwards."""
    touched: dict[str, set[str]] = {"account": set(), "transaction": set()}
    for batch in batches:
        for record in batch:
            topic_type = "account" if record.topic() == topics.accounts else "transaction"
            key = record.key()
            if key is not None:
                touched[topic_type].add(key.decode("utf-8", "replace"))
            try:
                event = decode_event(record.value(), key)
            except EventDecodeError as exc:
                touched[topic_type].add(poison_entity_id(exc, record))
                continue
            touched["account" if event.aggregate_type == "account" else "transaction"].add(event.aggregate_id)
            transaction_id = getattr(event.payload, "transaction_id", None)
            if transaction_id is not None:
                touched["transaction"].add(transaction_id)
    return touched


def _next_memo(memo: DeltaMemo, folded: Folded, judge: LagJudge, ids: Mapping[str, set[str]]) -> DeltaMemo:
    """The memo updated for D: the other accounts kept their head, row and exceptions."""
    replay, accounts, hydrated = folded.replay, folded.accounts, folded.hydrated
    head: dict[str, int] = defaultdict(int, memo.head_total)
    for currency, balance in hydrated.old_heads.values():
        head[currency] -= balance
    misattributed = {a: v for a, v in memo.misattributed.items() if a not in accounts}
    lag = {a: v for a, v in memo.lag.items() if a not in accounts}
    for account_id in accounts:
        account = replay.accounts.get(account_id)
        if account is not None:
            account_sums(replay, judge, account_id, account, folded.account_rows.get(account_id), head,
                         misattributed, lag)
    return DeltaMemo("", folded.mark.xmin, folded.mark.database, sorted(ids["account"]), sorted(ids["transaction"]),
                     pending_of(replay), dict(head), misattributed, lag,
                     memo.accounts + len(set(replay.accounts) - hydrated.accounts),
                     memo.transactions + len(set(replay.transactions) - hydrated.transactions))
