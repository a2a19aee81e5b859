"""The accounting equation, per currency, from the events and from the projections.

1. balances_match_events: Σ projection balances = Σ of the events' balances, each account taken
   at its projection's own version (lag-aware; an account with no row counts on the events side
   at its head, or at nothing while it is not projected yet (see lag.py); rows with no events on
   the projection side).
2. transfers_conserve_money (events): Σ transfer_out = Σ transfer_in + Σ refund + in flight.
3. ledger_balances (events): Σ balances + in flight = deposits + adjustments in − withdrawals
   − fees − adjustments out. It follows from 2 for any fold; it is reported as a finding only if
   it fails on its own, which would mean the fold itself is wrong.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.findings import Finding, Kind, LedgerIdentity, minor_units
from billing_domain.core.lag import LagJudge
from billing_domain.core.replay import Replay
from billing_domain.core.transactions import PENDING

BALANCES_MATCH_EVENTS = "balances_match_events"
TRANSFERS_CONSERVE_MONEY = "transfers_conserve_money"
LEDGER_BALANCES = "ledger_balances"


def ledger_identities(replay: Replay, rows: Mapping[str, AccountState], judge: LagJudge,
                      seen_apart: Collection[str] = ()) -> list[LedgerIdentity]:
    projection_total, events_total = _balance_totals(replay, rows, judge)
    head_total: dict[str, int] = defaultdict(int)
    for account in replay.accounts.values():
        if account.version > 0:
            head_total[account.currency] += account.balance_minor
    return identities_from_totals(LedgerTotals(projection_total, events_total, head_total), replay, seen_apart)


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """The per-currency sums the identities compare, besides the replay's credits, debits and in-flight money."""

    projection: Mapping[str, int]  # Σ projection balances (each row in its account's currency)
    events: Mapping[str, int]  # Σ event balances at each row's version
    head: Mapping[str, int]  # Σ event balances at each account's head


def identities_from_totals(totals: LedgerTotals, replay: Replay,
                           seen_apart: Collection[str] = ()) -> list[LedgerIdentity]:
    """`seen_apart`: the transfers the saga check found in flight across the two topics' reads
    (`sagas.SagaCheck`); their money counts as in flight, as a pending transfer's does."""
    in_flight = _in_flight(replay, seen_apart)
    currencies = sorted(set(totals.projection) | set(totals.events) | set(replay.credits) | set(replay.debits))
    identities = []
    for currency in currencies:
        credits, debits = replay.credits.get(currency, {}), replay.debits.get(currency, {})
        identities.append(LedgerIdentity(
            currency, BALANCES_MATCH_EVENTS, "Σ projection balances = Σ event balances at each row's version",
            totals.projection.get(currency, 0), totals.events.get(currency, 0)))
        identities.append(LedgerIdentity(
            currency, TRANSFERS_CONSERVE_MONEY, "Σ transfer_out = Σ transfer_in + Σ refund + in flight",
            debits.get("transfer_out", 0),
            credits.get("transfer_in", 0) + credits.get("refund", 0) + in_flight.get(currency, 0)))
        identities.append(LedgerIdentity(
            currency, LEDGER_BALANCES,
            "Σ balances + in flight = deposits + adjustments in − withdrawals − fees − adjustments out",
            totals.head.get(currency, 0) + in_flight.get(currency, 0),
            credits.get("deposit", 0) + credits.get("adjustment", 0) - debits.get("withdrawal", 0)
            - debits.get("fee", 0) - debits.get("adjustment", 0)))
    return identities


def ledger_findings(identities: list[LedgerIdentity]) -> list[Finding]:
    broken = {(i.currency, i.identity) for i in identities if not i.holds}
    findings = []
    for identity in identities:
        if identity.holds:
            continue
        if identity.identity == LEDGER_BALANCES and (identity.currency, TRANSFERS_CONSERVE_MONEY) in broken:
            continue  # a consequence of identity 2, already reported
        findings.append(Finding.of(
            "ledger", f"{identity.currency}:{identity.identity}", Kind.ACCOUNTING_EQUATION,
            f"{identity.currency}: {identity.description} does not hold: {identity.left} ≠ {identity.right} "
            f"(difference {identity.left - identity.right}), {minor_units(identity.currency)}",
            expected={"right": identity.right, "identity": identity.description},
            actual={"left": identity.left, "difference": identity.left - identity.right}))
    return findings


def _balance_totals(replay: Replay, rows: Mapping[str, AccountState],
                    judge: LagJudge) -> tuple[dict[str, int], dict[str, int]]:
    projection_total: dict[str, int] = defaultdict(int)
    events_total: dict[str, int] = defaultdict(int)
    for account_id, row in rows.items():
        account = replay.accounts.get(account_id)
        currency = account.currency if account is not None and account.version > 0 else row.currency
        projection_total[currency] += row.balance_minor
    for account_id, account in replay.accounts.items():
        if account.version == 0:
            continue
        events_total[account.currency] += events_balance(replay, judge, account_id, account, rows.get(account_id))
    return projection_total, events_total


def events_balance(replay: Replay, judge: LagJudge, account_id: str, account: AccountAggregate,
                   row: AccountState | None) -> int:
    """What identity 1 counts for one account on the events side: its balance at its row's version; with no
    row, nothing while it is not projected yet (the projection side has nothing either), else its head."""
    if row is None:
        return 0 if judge.not_projected_yet(replay.unapplied.get(("account", account_id))) else account.balance_minor
    at_row = replay.account_at(account_id, row.version)
    return at_row.balance_minor if at_row is not None else account.balance_minor


def _in_flight(replay: Replay, seen_apart: Collection[str]) -> dict[str, int]:
    """Money debited from the source of a pending transfer and not yet credited or refunded; and the money
    of transfers seen in flight across the two topics' reads (their status and legs a moment apart)."""
    in_flight: dict[str, int] = defaultdict(int)
    for transaction_id, moves in replay.saga_money.items():
        saga = replay.transactions.get(transaction_id)
        pending = saga is not None and saga.status == PENDING
        if not pending and transaction_id not in seen_apart:
            continue
        for move in moves:
            in_flight[move.currency] += move.amount_minor if move.reason == "transfer_out" else -move.amount_minor
    return in_flight
