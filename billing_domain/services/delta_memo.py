"""The delta memo: what a complete run leaves with its checkpoint so that the next run diffs only what changed.

It names the run whose report the next run carries findings over from, where that run's read of the
projections stood (`ReadMark`), the ids it read, the transfers pending at its cut, and the accounting
identities' events side as sums: per-currency head totals and the few accounts whose row lags or names
another currency. `services.delta` reads it; `services.reconcile.save_checkpoint` writes it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import msgspec

from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.lag import LagJudge
from billing_domain.core.ledger import LedgerTotals, events_balance
from billing_domain.core.replay import Replay
from billing_domain.core.transactions import PENDING, TransactionState
from billing_domain.ports import ReadMark


class DeltaMemo(msgspec.Struct, frozen=True):
    """What a complete run leaves with its checkpoint for the next run to diff only what changed."""

    run_id: str  # the stored report whose findings the next run carries over
    snapshot_xmin: int  # the `ReadMark` of this run's read of the projections
    database: str  # (both parts)
    account_ids: list[str]  # the projection rows this run read
    transaction_ids: list[str]
    pending: list[str]  # transfers pending at the cut
    head_total: dict[str, int]  # Σ account balances at their heads, per currency
    misattributed: dict[str, tuple[str, str, int]]  # account -> (row currency, account currency, row balance)
    lag: dict[str, tuple[str, int]]  # account -> (currency, head balance − balance at the row's version)
    accounts: int  # aggregates folded, for the report's stats
    transactions: int

    @property
    def mark(self) -> ReadMark:
        return ReadMark(self.snapshot_xmin, self.database)


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


def memo_of(replay: Replay, account_rows: Mapping[str, AccountState], transaction_rows: Mapping[str, TransactionState],
            mark: ReadMark, run_id: str, judge: LagJudge) -> DeltaMemo:
    """The memo of a run that diffed every entity."""
    head: dict[str, int] = defaultdict(int)
    misattributed: dict[str, tuple[str, str, int]] = {}
    lag: dict[str, tuple[str, int]] = {}
    for account_id, account in replay.accounts.items():
        account_sums(replay, judge, account_id, account, account_rows.get(account_id), head, misattributed, lag)
    return DeltaMemo(run_id, mark.xmin, mark.database, sorted(account_rows), sorted(transaction_rows),
                     pending_of(replay), dict(head), misattributed, lag, len(replay.accounts),
                     len(replay.transactions))


def pending_of(replay: Replay) -> list[str]:
    return sorted(t for t, saga in replay.transactions.items() if saga.status == PENDING)


def account_sums(replay: Replay, judge: LagJudge, account_id: str, account: AccountAggregate,
                 row: AccountState | None, head: dict[str, int], misattributed: dict[str, tuple[str, str, int]],
                 lag: dict[str, tuple[str, int]]) -> None:
    """Add one account to the sums, as `ledger._balance_totals` counts it."""
    if account.version == 0:
        return
    head[account.currency] += account.balance_minor
    if row is not None and row.currency != account.currency:
        misattributed[account_id] = (row.currency, account.currency, row.balance_minor)
    counted = events_balance(replay, judge, account_id, account, row)
    if counted != account.balance_minor:  # (a lagging entity is always diffed again: see `delta.rejudged`)
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
