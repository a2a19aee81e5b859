"""The ledger as of a point in time: a stop-cut of the log, the balances and the events' own findings there.

"As of `at`" means every event whose own `occurred_at` is at or before `at`. Per partition that is
a prefix of the log, ending before the first event that occurred after `at` (the engine appends in
commit order). The broker can only give a starting point at or before it (ListOffsets by time
answers at batch granularity on the embedded broker), so the exact stop is found by reading
forward from there and looking at the events' own timestamps.

Projections only ever move forward: reconciling an old point against today's rows says nothing,
and a rebuild "to" an old point is only ever planned, never written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from billing_domain.config import DEFAULT_STUCK_AFTER
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.diff import diff_accounts, diff_transactions
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.findings import Finding, Kind, ReconciliationReport
from billing_domain.core.lag import LagJudge
from billing_domain.core.ledger import BALANCES_MATCH_EVENTS, ledger_findings, ledger_identities
from billing_domain.core.records import occurred_at_of
from billing_domain.core.replay import Replay
from billing_domain.core.sagas import saga_findings
from billing_domain.ports import EventLog, ProjectionStore
from billing_domain.services.rebuild import EntityType, RebuildResult, plan_changes
from billing_domain.services.reconcile import (
    ReconcileOptions,
    ReplayMode,
    ReplayOutcome,
    collector_paused,
    new_run_id,
    replay_all,
)

ProgressCallback = Callable[[int], None]
# How far the broker's message timestamps may run behind the events' occurred_at (producer clocks).
# The search starts this much before `at` and looks this far past the stop for late events.
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
CSV_COLUMNS = ("account_id", "owner_id", "currency", "status", "version", "balance_minor")
AS_OF_KINDS = frozenset({Kind.STREAM_CORRUPT, Kind.INVARIANT_VIOLATION, Kind.SAGA_MISMATCH, Kind.STUCK,
                         Kind.ACCOUNTING_EQUATION})
AsOf = datetime | Mapping[TopicPartitionKey, int]


# --- the stop-cut ------------------------------------------------------------------------------------
@dataclass(slots=True)
class AsOfCut:
    """Per partition of both topics, the offset to stop before; with the time it stands for, if any."""

    stop: dict[TopicPartitionKey, int]
    at: datetime | None = None
    scanned: int = 0  # messages read to find the stop
    # events after the stop that occurred at or before `at` (out of commit order, within the clock skew)
    late_events: dict[TopicPartitionKey, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return format_utc(self.at) if self.at is not None else "offsets " + ",".join(
            f"{t}:{p}={o}" for (t, p), o in sorted(self.stop.items()))

    @property
    def events(self) -> int:
        """How many messages the cut holds (every partition is read from its start)."""
        return sum(self.stop.values())


def cut_at(event_store: EventLog, at: datetime, *, clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> AsOfCut:
    """The stop-cut for `at`: per partition, the offset of the first event that occurred after `at`
    (the partition's exact end if none did)."""
    at = require_utc(at)
    partitions = event_store.all_partitions()
    starts = event_store.starting_offsets_for_time(partitions, _epoch_ms(at - clock_skew))
    cut = AsOfCut({}, at)
    scan = event_store.scan(starts)
    horizon = at + clock_skew
    for message in scan:
        tp = (message.topic() or "", message.partition() or 0)
        occurred = occurred_at_of(message.value())
        if occurred is None:
            continue  # an undecodable message: the replay reports it where it falls
        if tp not in cut.stop:
            if occurred > at:
                cut.stop[tp] = message.offset() or 0
        elif occurred <= at:
            cut.late_events[tp] = cut.late_events.get(tp, 0) + 1
        if occurred > horizon:
            scan.finish(tp)
    for tp, end in scan.ends.items():  # no event after `at` before the partition's end: the cut ends there
        cut.stop.setdefault(tp, end)
    cut.scanned = scan.read
    return cut


def cut_at_offsets(event_store: EventLog, offsets: Mapping[TopicPartitionKey, int]) -> AsOfCut:
    """A stop-cut given as explicit offsets: one for every partition of both topics, none negative."""
    partitions = set(event_store.all_partitions())
    unknown = sorted(set(offsets) - partitions)
    missing = sorted(partitions - set(offsets))
    if unknown:
        raise ConfigurationError(f"offsets: no such partition {', '.join(f'{t}:{p}' for t, p in unknown)}")
    if missing:
        raise ConfigurationError(f"offsets: give a stop offset for every partition; missing "
                                 f"{', '.join(f'{t}:{p}' for t, p in missing)}")
    negative = sorted(tp for tp, o in offsets.items() if o < 0)
    if negative:
        raise ConfigurationError(f"offsets: negative offset for {', '.join(f'{t}:{p}' for t, p in negative)}")
    return AsOfCut(dict(offsets))


def resolve(event_store: EventLog, as_of: AsOf, *, clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> AsOfCut:
    return (cut_at(event_store, as_of, clock_skew=clock_skew) if isinstance(as_of, datetime)
            else cut_at_offsets(event_store, as_of))


def replay_to(event_store: EventLog, cut: AsOfCut, progress: ProgressCallback | None = None) -> ReplayOutcome:
    """Fold the log up to the stop-cut, on its own (no projection rows: they only exist for today)."""
    replay = Replay(event_store.topics)
    with collector_paused():
        reader = event_store.read_cut(stop=cut.stop, on_batch=progress)
        for batch in reader:
            replay.feed(batch)
    if cut.at is not None:
        # "stuck" is judged at the as-of time (not at the newest event before it), never in the future.
        replay.cut_time = min(cut.at, datetime.now(UTC))
    return ReplayOutcome(replay, reader.cut, {}, {}, mode=ReplayMode.FULL, mode_reason=f"as of {cut.label}")


# --- balances ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AccountBalance:
    account_id: str
    owner_id: str
    currency: str
    status: str
    version: int
    balance_minor: int


@dataclass(slots=True)
class AsOfBalances:
    """Every opened account's balance as of a point, and the totals per currency (minor units)."""

    as_of: str
    at: datetime | None
    cut: Cut
    accounts: list[AccountBalance]
    corrupt_accounts: list[str] = field(default_factory=list)  # their balances cannot be trusted
    events_read: int = 0
    late_events: int = 0

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for account in self.accounts:
            totals[account.currency] = totals.get(account.currency, 0) + account.balance_minor
        return dict(sorted(totals.items()))

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for account in self.accounts:
            counts[account.currency] = counts.get(account.currency, 0) + 1
        return dict(sorted(counts.items()))

    def to_csv(self) -> str:
        """One row per account, sorted by id; money as integer minor units."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for a in self.accounts:
            writer.writerow((a.account_id, a.owner_id, a.currency, a.status, a.version, a.balance_minor))
        return out.getvalue()

    def write_csv(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_csv(), encoding="utf-8")
        return path

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of, "cut": self.cut.to_json(), "totals_minor": self.totals(),
                "accounts_by_currency": self.counts(), "corrupt_accounts": self.corrupt_accounts,
                "events_read": self.events_read, "late_events": self.late_events,
                "accounts": [_balance_json(a) for a in self.accounts]}


def balances_from(outcome: ReplayOutcome, cut: AsOfCut) -> AsOfBalances:
    replay = outcome.replay
    rows = [AccountBalance(a.aggregate_id, a.owner_id, a.currency, a.status, a.version, a.balance_minor)
            for _, a in sorted(replay.accounts.items()) if a.version > 0]
    corrupt = sorted(entity_id for kind, entity_id in replay.corrupt if kind == "account")
    return AsOfBalances(cut.label, cut.at, outcome.cut, rows, corrupt, replay.events_read,
                        sum(cut.late_events.values()))


def balances_as_of(event_store: EventLog, at: AsOf, *, progress: ProgressCallback | None = None,
                   clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> AsOfBalances:
    """Each account's balance, currency, version and status as of `at` (a UTC time or a stop-cut)."""
    cut = resolve(event_store, at, clock_skew=clock_skew)
    return balances_from(replay_to(event_store, cut, progress), cut)


# --- the events' own findings ------------------------------------------------------------------------
def report_from(outcome: ReplayOutcome, cut: AsOfCut, *, run_id: str, started_at: datetime,
                stuck_after: timedelta = DEFAULT_STUCK_AFTER) -> ReconciliationReport:
    """What the events themselves say was wrong at that point: corrupt streams, broken invariants,
    sagas whose money does not match, stuck transfers, and the events-only ledger identities."""
    replay = outcome.replay
    # As of a point in time, "now" is that point (pending for longer than the threshold by then), and both
    # topics are cut at it by the events' own times: no lag window.
    judge = LagJudge.strict(replay.cut_time or cut.at or outcome.judge.read_at)
    findings: list[Finding] = [c.finding() for c in replay.corrupt.values()]
    findings += [f for f in diff_accounts(replay, {}, judge) if f.kind == Kind.INVARIANT_VIOLATION]
    findings += saga_findings(replay, judge)
    findings += [f for f in diff_transactions(replay, {}, stuck_after, judge) if f.kind == Kind.STUCK]
    # Identity 1 compares projections, which exist only for today; 2 and 3 are the events' own.
    identities = [i for i in ledger_identities(replay, {}, judge) if i.identity != BALANCES_MATCH_EVENTS]
    findings += ledger_findings(identities)
    stats = {**outcome.timings, "events_read": replay.events_read, "duplicates_ignored": replay.duplicates,
             "accounts": len(replay.accounts), "transactions": len(replay.transactions),
             "cut_scanned": cut.scanned, "late_events": sum(cut.late_events.values()),
             "as_of": cut.label, "cut_time": replay.cut_time.isoformat() if replay.cut_time else None}
    return ReconciliationReport(run_id=run_id, scope=f"as-of {cut.label}", started_at=started_at,
                                finished_at=datetime.now(UTC), cut=outcome.cut,
                                findings=sorted(findings, key=lambda f: f.key), ledger=identities, stats=stats)


def reconcile_as_of(event_store: EventLog, at: AsOf, *, run_id: str | None = None,
                    stuck_after: timedelta = DEFAULT_STUCK_AFTER, progress: ProgressCallback | None = None,
                    clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> ReconciliationReport:
    """The report (scope "as-of <ts>") of the events' own findings as of `at`."""
    started_at = datetime.now(UTC)
    cut = resolve(event_store, at, clock_skew=clock_skew)
    return report_from(replay_to(event_store, cut, progress), cut, run_id=run_id or new_run_id("as-of"),
                       started_at=started_at, stuck_after=stuck_after)


# --- rebuild "up to": planned only -------------------------------------------------------------------
def plan_rebuild_as_of(event_store: EventLog, projections: ProjectionStore, at: AsOf, *,
                       entity_type: EntityType, dry_run: bool = True, delete_orphans: bool = False,
                       progress: ProgressCallback | None = None,
                       clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> RebuildResult:
    """What a rebuild of `entity_type` projections up to `at` would change (`rebuild.plan_changes`).

    Only ever a dry run: the live projector and the daily reconciliation hold the projections at the
    head of the log, so writing an older state would be undone at once and look like corruption."""
    if not dry_run:
        raise ConfigurationError("dry_run: a projection is never rebuilt to an older state")
    if entity_type not in ("account", "transaction"):
        raise ConfigurationError(f"entity_type: {entity_type!r} is not 'account' or 'transaction'")
    cut = resolve(event_store, at, clock_skew=clock_skew)
    outcome = replay_all(event_store, projections, options=ReconcileOptions(stop=cut.stop), progress=progress)
    result = RebuildResult(entity_type, True, new_run_id("rebuild-as-of"),
                           changes=plan_changes(outcome, entity_type, delete_orphans))
    result.outcome = {c.entity_id: f"would {c.action}" for c in result.changes}
    return result


# --- time helpers ------------------------------------------------------------------------------------
def require_utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ConfigurationError(f"at: {at.isoformat()} has no time zone; give UTC, e.g. 2026-01-31T23:59:59Z")
    return at.astimezone(UTC)


def parse_utc(text: str) -> datetime:
    """An RFC 3339 time with a zone (`Z` or an offset), as UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigurationError(f"at: {text!r} is not an RFC 3339 time like 2026-01-31T23:59:59Z") from exc
    return require_utc(parsed)


def month_end(month: str) -> datetime:
    """The last instant (to the microsecond, the events' precision) of a month "YYYY-MM", UTC."""
    try:
        first = date.fromisoformat(f"{month.strip()}-01")
    except ValueError as exc:
        raise ConfigurationError(f"month: {month!r} is not a month like 2026-01") from exc
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return datetime(following.year, following.month, 1, tzinfo=UTC) - timedelta(microseconds=1)


def format_utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _epoch_ms(at: datetime) -> int:
    return max(int(at.timestamp() * 1000), 0)


def _balance_json(a: AccountBalance) -> dict[str, Any]:
    return {"account_id": a.account_id, "owner_id": a.owner_id, "currency": a.currency, "status": a.status,
            "version": a.version, "balance_minor": a.balance_minor}
