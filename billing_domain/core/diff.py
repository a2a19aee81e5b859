"""Lag-aware diff of the projections against the replayed state.

A projection row at version v is compared with the events' state at v: right at v but behind
the log is `lagging` (info), wrong at v is a mismatch, above the log is `version_ahead`.
Entities whose stream is corrupt get only their `stream_corrupt` finding: there is no
trustworthy expected state to compare with.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from billing_domain.core.accounts import AccountState
from billing_domain.core.aggregate import Aggregate, state_json
from billing_domain.core.findings import Finding, Kind, minor_units
from billing_domain.core.lag import LagJudge
from billing_domain.core.replay import Replay
from billing_domain.core.transactions import PENDING, TransactionAggregate, TransactionState

ACCOUNT_FIELDS = ("owner_id", "currency", "min_balance_minor", "max_balance_minor", "status")
TRANSACTION_FIELDS = ("source_account_id", "destination_account_id", "amount_minor", "currency", "status")
# One C-level tuple comparison per row; the fields are named only for a row that differs.
_account_fields = operator.attrgetter(*ACCOUNT_FIELDS)
_transaction_fields = operator.attrgetter(*TRANSACTION_FIELDS)


def diff_accounts(replay: Replay, rows: Mapping[str, AccountState], judge: LagJudge) -> list[Finding]:
    findings: list[Finding] = []
    for account_id, row in rows.items():
        findings.extend(_diff_account(replay, account_id, row, judge))
    for account_id, account in replay.accounts.items():
        if account_id not in rows and account.version > 0 and not replay.is_corrupt("account", account_id):
            findings.append(_missing_row(replay, judge, "account", account, account.state()))
    for account_id, broken in replay.invariant_breaks.items():
        folded = replay.accounts.get(account_id)
        findings.append(Finding.of(
            "account", account_id, Kind.INVARIANT_VIOLATION,  # the rule reads "v30: balance -1304 is negative"
            f"{broken.rule}, {minor_units(folded.currency if folded else None)}" if "balance" in broken.rule
            else broken.rule,
            expected={"rule": broken.rule, "version": broken.version}, actual=None,
            topic=broken.position.topic, partition=broken.position.partition, offset=broken.position.offset,
            event_id=broken.event_id))
    return findings


def _diff_account(replay: Replay, account_id: str, row: AccountState, judge: LagJudge) -> list[Finding]:
    if replay.is_corrupt("account", account_id):
        return []
    account = replay.accounts.get(account_id)
    expected, why_not = _state_at_row("account", account_id, row, account, replay.account_at)
    if why_not is not None:
        return [why_not]
    assert account is not None and expected is not None
    findings = []
    if expected.balance_minor != row.balance_minor:
        findings.append(Finding.of(
            "account", account_id, Kind.BALANCE_MISMATCH,
            f"balance {row.balance_minor} at v{row.version}, events say {expected.balance_minor} "
            f"(difference {row.balance_minor - expected.balance_minor}), {minor_units(expected.currency)}",
            expected={"balance_minor": expected.balance_minor, "version": row.version},
            actual={"balance_minor": row.balance_minor, "version": row.version}))
    differing = [] if _account_fields(expected) == _account_fields(row) else [
        f for f in ACCOUNT_FIELDS if getattr(expected, f) != getattr(row, f)]
    if differing:
        findings.append(_field_mismatch("account", account_id, row.version, expected, row, differing))
    if not findings and row.version < account.version:
        findings.append(_behind(replay, judge, "account", account_id, row.version, account.version))
    return findings


def diff_transactions(replay: Replay, rows: Mapping[str, TransactionState],
                      stuck_after: timedelta, judge: LagJudge) -> list[Finding]:
    findings: list[Finding] = []
    for transaction_id, row in rows.items():
        findings.extend(_diff_transaction(replay, transaction_id, row, judge))
    for transaction_id, saga in replay.transactions.items():
        if replay.is_corrupt("transaction", transaction_id) or saga.version == 0:
            continue
        if transaction_id not in rows:
            findings.append(_missing_row(replay, judge, "transaction", saga, saga.state()))
        stuck = _stuck(replay, saga, stuck_after, judge.read_at)
        if stuck:
            findings.append(stuck)
    return findings


def _diff_transaction(replay: Replay, transaction_id: str, row: TransactionState, judge: LagJudge) -> list[Finding]:
    if replay.is_corrupt("transaction", transaction_id):
        return []
    saga = replay.transactions.get(transaction_id)
    expected, why_not = _state_at_row("transaction", transaction_id, row, saga, replay.transaction_at)
    if why_not is not None:
        return [why_not]
    assert saga is not None and expected is not None
    differing = [] if _transaction_fields(expected) == _transaction_fields(row) else [
        f for f in TRANSACTION_FIELDS if getattr(expected, f) != getattr(row, f)]
    if expected.failure_reason is not None and expected.failure_reason != row.failure_reason:
        differing.append("failure_reason")
    if differing:
        return [_field_mismatch("transaction", transaction_id, row.version, expected, row, differing)]
    if row.version < saga.version:
        return [_behind(replay, judge, "transaction", transaction_id, row.version, saga.version)]
    return []


def _state_at_row(entity_type: str, entity_id: str, row: Any, head: Any,
                  at: Callable[[str, int], Any]) -> tuple[Any, Finding | None]:
    """The events' state at the row's own version, or the finding that says why there is none."""
    if head is None or head.version == 0:
        return None, Finding.of(entity_type, entity_id, Kind.ORPHAN_PROJECTION, "projection row with no events",
                                expected=None, actual=state_json(row))
    if row.version > head.version:
        return None, Finding.of(entity_type, entity_id, Kind.VERSION_AHEAD,
                                f"projection at v{row.version}, the log ends at v{head.version}",
                                expected=state_json(head.state()), actual=state_json(row))
    expected = at(entity_id, row.version)
    if expected is None:
        return None, Finding.of(entity_type, entity_id, Kind.FIELD_MISMATCH,
                                f"projection version {row.version} is not a version of this stream",
                                expected={"version": head.version}, actual={"version": row.version})
    return expected, None


def is_stuck(saga: TransactionAggregate, stuck_after: timedelta, now: datetime) -> bool:
    """The one definition of `stuck`: pending for longer than `stuck_after` at `now`, the run's clock when
    it read the projections. Not the cut's newest event: a quiet engine (after a crash, say) stops time."""
    if saga.status != PENDING or saga.initiated_at is None:
        return False
    return now - saga.initiated_at > stuck_after


def _stuck(replay: Replay, saga: TransactionAggregate, stuck_after: timedelta, now: datetime) -> Finding | None:
    if not is_stuck(saga, stuck_after, now):
        return None
    assert saga.initiated_at is not None
    minutes = (now - saga.initiated_at).total_seconds() / 60
    cut_time = replay.cut_time.isoformat() if replay.cut_time else None
    return Finding.of("transaction", saga.aggregate_id, Kind.STUCK,
                      f"pending for {minutes:.1f} min when the projections were read at {now:%Y-%m-%d %H:%M:%S} UTC "
                      f"(threshold {stuck_after.total_seconds() / 60:g} min)",
                      expected={"status": "completed|failed|compensated",
                                "within_minutes": stuck_after.total_seconds() / 60},
                      actual={"status": PENDING, "initiated_at": saga.initiated_at.isoformat(),
                              "pending_minutes": round(minutes, 1), "judged_at": now.isoformat(),
                              "cut_time": cut_time})


def _field_mismatch(entity_type: str, entity_id: str, version: int, expected: Any, row: Any,
                    fields: list[str]) -> Finding:
    return Finding.of(entity_type, entity_id, Kind.FIELD_MISMATCH,
                      f"{', '.join(fields)} differ at v{version}",
                      expected={f: getattr(expected, f) for f in fields} | {"version": version},
                      actual={f: getattr(row, f) for f in fields} | {"version": version})


def _missing_row(replay: Replay, judge: LagJudge, entity_type: str, head: Aggregate, state: Any) -> Finding:
    """No row: `lagging` while its first event may not be applied yet, else `missing_projection`."""
    unapplied = replay.unapplied.get((entity_type, head.aggregate_id))
    if unapplied is not None and judge.not_projected_yet(unapplied):
        occurred_at, position = unapplied
        return Finding.of(entity_type, head.aggregate_id, Kind.LAGGING,
                          f"not projected yet: its first event occurred {judge.age(occurred_at)} "
                          f"({judge.basis()}); events up to v{head.version}",
                          expected={"version": head.version, "first_event_at": occurred_at.isoformat()},
                          actual=None, topic=position.topic, partition=position.partition, offset=position.offset)
    return Finding.of(entity_type, head.aggregate_id, Kind.MISSING_PROJECTION,
                      f"events up to v{head.version}, no projection row"
                      + (f"; its first event occurred {judge.age(unapplied[0])}" if unapplied else ""),
                      expected=state_json(state), actual=None)


def _behind(replay: Replay, judge: LagJudge, entity_type: str, entity_id: str, version: int, head: int) -> Finding:
    """A row right for its version but behind the log: `lagging`, unless the projector's group has committed
    past the event it lacks, which the row should then hold (a lost write)."""
    unapplied = replay.unapplied.get((entity_type, entity_id))
    behind = f"behind by {head - version} event(s)"
    if unapplied is None:
        return Finding.of(entity_type, entity_id, Kind.LAGGING,
                          f"projection at v{version} is right for its version, {behind}",
                          expected={"version": head}, actual={"version": version})
    occurred_at, position = unapplied
    if judge.applied is not None and not judge.may_be_unapplied(occurred_at, position):
        return Finding.of(entity_type, entity_id, Kind.FIELD_MISMATCH,
                          f"version differs: projection at v{version} lacks v{version + 1} at {position}, which "
                          f"projector group {judge.group} committed (offset "
                          f"{judge.applied.get((position.topic, position.partition), 0)})",
                          expected={"version": head}, actual={"version": version}, topic=position.topic,
                          partition=position.partition, offset=position.offset)
    return Finding.of(entity_type, entity_id, Kind.LAGGING,
                      f"projection at v{version} is right for its version, {behind}; the first it lacks, "
                      f"v{version + 1}, occurred {judge.age(occurred_at)}",
                      expected={"version": head, "first_unapplied_at": occurred_at.isoformat()},
                      actual={"version": version}, topic=position.topic, partition=position.partition,
                      offset=position.offset)

