"""Money per transfer: each saga's account events against its status, by the contract's rules.

completed ⇒ one transfer_out on the source and one transfer_in on the destination, each of the
amount; compensated ⇒ one transfer_out and one refund on the source, no transfer_in; failed ⇒
no money; pending ⇒ at most the transfer_out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from billing_domain.core.findings import Finding, Kind, minor_units
from billing_domain.core.lag import LagJudge
from billing_domain.core.replay import MoneyMove, Replay
from billing_domain.core.transactions import COMPENSATED, COMPLETED, FAILED, PENDING, TransactionAggregate

# A saga seen in flight has a few legs inside the window; past this many, only the two extreme views are tried.
MAX_RECENT_LEGS_COMBINED = 4


@dataclass(frozen=True, slots=True)
class SagaCheck:
    findings: list[Finding]
    # Transfers whose status and money disagree only by events inside the lag window: in flight across the
    # two topics' reads. The ledger counts their money as in flight too (see `ledger._in_flight`).
    seen_apart: frozenset[str]


def check_sagas(replay: Replay, judge: LagJudge) -> SagaCheck:
    """Every transfer's money against its status. A disagreement that some view of the two topics inside the
    lag window explains (the status before a recent change; without recent legs) is `lagging`, not a fault."""
    findings: list[Finding] = []
    seen_apart: set[str] = set()
    for transaction_id, saga in replay.transactions.items():
        if replay.is_corrupt("transaction", transaction_id) or saga.version == 0:
            continue
        finding = _judge_saga(saga, replay.saga_money.get(transaction_id, []), judge)
        if finding is not None:
            findings.append(finding)
            seen_apart.update([transaction_id] if finding.kind == Kind.LAGGING else [])
    for transaction_id, unordered in replay.saga_money.items():
        if transaction_id not in replay.transactions and not replay.is_corrupt("transaction", transaction_id):
            moves = _in_order(unordered)
            recent = all(judge.seen_apart(m.occurred_at) for m in moves)
            seen_apart.update([transaction_id] if recent else [])
            findings.append(_no_saga(transaction_id, moves, judge) if recent else Finding.of(
                "transaction", transaction_id, Kind.SAGA_MISMATCH,
                f"{len(moves)} account event(s) name this transaction, which has no events",
                expected={"status": None}, actual={"money": [_move_json(m) for m in moves]}))
    return SagaCheck(findings, frozenset(seen_apart))


def saga_findings(replay: Replay, judge: LagJudge) -> list[Finding]:
    return check_sagas(replay, judge).findings


def _judge_saga(saga: TransactionAggregate, moves: list[MoneyMove], judge: LagJudge) -> Finding | None:
    problems = saga_problems(saga, moves)
    if (problems or saga.violations) and len(moves) > 1:  # sorted only when reported: the finding
        moves = _in_order(moves)                          # must not depend on the read order
        problems = saga_problems(saga, moves) if problems else problems
    if problems and not saga.violations and _explained_by_lag(saga, moves, judge):
        return _in_flight_finding(saga, moves, judge)
    if saga.violations:
        problems.extend(saga.violations)
    return _finding(saga, moves, problems) if problems else None


def _explained_by_lag(saga: TransactionAggregate, moves: list[MoneyMove], judge: LagJudge) -> bool:
    """Does the money match the status in some view the two reads could have given? A status changed inside
    the window may have been read before (or after) its legs; a leg inside the window may be on one side only."""
    statuses = [saga.status]
    if saga.version > 1 and saga.updated_at is not None and judge.seen_apart(saga.updated_at):
        statuses.append(PENDING)  # the only status a legal move leaves
    settled = [m for m in moves if not judge.seen_apart(m.occurred_at)]
    recent = [m for m in moves if judge.seen_apart(m.occurred_at)]
    if not recent and len(statuses) == 1:
        return False
    subsets = ([list(c) for n in range(len(recent) + 1) for c in combinations(recent, n)]
               if len(recent) <= MAX_RECENT_LEGS_COMBINED else [[], recent])
    return any(not _status_problems(status, saga, settled + subset) for status in statuses for subset in subsets)


def _status_problems(status: str, saga: TransactionAggregate, moves: list[MoneyMove]) -> list[str]:
    """`saga_problems` as if the saga were at `status`."""
    if status == saga.status:
        return saga_problems(saga, moves)
    earlier = TransactionAggregate(saga.aggregate_id)
    for name in ("source_account_id", "destination_account_id", "amount_minor", "currency"):
        setattr(earlier, name, getattr(saga, name))
    earlier.status = status
    return saga_problems(earlier, moves)


def _in_flight_finding(saga: TransactionAggregate, moves: list[MoneyMove], judge: LagJudge) -> Finding:
    recent = [f"{m.reason} on {m.account_id} {judge.age(m.occurred_at)}" for m in moves
              if judge.seen_apart(m.occurred_at)]
    if saga.updated_at is not None and judge.seen_apart(saga.updated_at):
        recent.insert(0, f"status {saga.status} {judge.age(saga.updated_at)}")
    return Finding.of(
        "transaction", saga.aggregate_id, Kind.LAGGING,
        f"in flight: its status and money legs, read from two topics a moment apart, differ only by events "
        f"inside the {judge.window.total_seconds():g} s lag window ({', '.join(recent)})",
        expected={"status": saga.status}, actual={"money": [_move_json(m) for m in moves]})


def _no_saga(transaction_id: str, moves: list[MoneyMove], judge: LagJudge) -> Finding:
    legs = ", ".join(f"{m.reason} on {m.account_id} {judge.age(m.occurred_at)}" for m in moves)
    return Finding.of(
        "transaction", transaction_id, Kind.LAGGING,
        f"in flight: {len(moves)} account event(s) name this transaction, whose own events were not read yet; "
        f"all inside the {judge.window.total_seconds():g} s lag window ({legs})",
        expected={"status": None}, actual={"money": [_move_json(m) for m in moves]})


def _in_order(moves: list[MoneyMove]) -> list[MoneyMove]:
    """A transfer's legs sit on two accounts' streams, read in no fixed order: list them in one."""
    return sorted(moves, key=lambda m: (m.account_id, m.reason, m.event_id))


def saga_problems(saga: TransactionAggregate, moves: list[MoneyMove]) -> list[str]:
    """What is wrong with this saga's money for its status; empty when it matches."""
    wanted, got = _legs_for(saga), [(m.reason, m.account_id) for m in moves]
    # Counting legs only when they differ: building two Counters per saga was most of the saga check.
    # The Counters keep the order of `wanted` and `moves`, and so the order of the text.
    problems = [] if sorted(got) == sorted(wanted) else _leg_problems(saga, Counter(wanted), Counter(got))
    problems += [_amount_problem(m, saga) for m in moves if m.amount_minor != saga.amount_minor]
    problems += [f"{m.reason} on {m.account_id} in {m.currency}, transfer currency is {saga.currency}"
                 for m in moves if m.currency != saga.currency]
    return problems


def _amount_problem(move: MoneyMove, saga: TransactionAggregate) -> str:
    """`transfer_out of 500 on acc-1, transfer amount is 400, in EUR minor units` (each currency named where
    they differ: that is a problem of its own too)."""
    if move.currency == saga.currency:
        return (f"{move.reason} of {move.amount_minor} on {move.account_id}, transfer amount is {saga.amount_minor}, "
                f"{minor_units(saga.currency)}")
    return (f"{move.reason} of {move.amount_minor} {move.currency} on {move.account_id}, transfer amount is "
            f"{saga.amount_minor} {saga.currency}, {minor_units(None)}")


def _legs_for(saga: TransactionAggregate) -> list[tuple[str, str]]:
    """The (reason, account) legs the saga's status calls for (a pending one may have its transfer_out)."""
    legs = []
    if saga.status in (COMPLETED, COMPENSATED):
        legs.append(("transfer_out", saga.source_account_id))
    if saga.status == COMPLETED:
        legs.append(("transfer_in", saga.destination_account_id))
    if saga.status == COMPENSATED:
        legs.append(("refund", saga.source_account_id))
    return legs


def _leg_problems(saga: TransactionAggregate, wanted: Counter[tuple[str, str]],
                  got: Counter[tuple[str, str]]) -> list[str]:
    if saga.status == PENDING:
        extra = got - Counter({("transfer_out", saga.source_account_id): 1})
        return [f"{n} unexpected {reason} on {account} while pending" for (reason, account), n in extra.items()]
    problems = [f"missing {reason} on {account}" for (reason, account), n in (wanted - got).items() for _ in range(n)]
    problems += [f"unexpected {reason} on {account}" + (" (failed transfers move no money)"
                                                        if saga.status == FAILED else "")
                 for (reason, account), n in (got - wanted).items() for _ in range(n)]
    return problems


def _finding(saga: TransactionAggregate, moves: list[MoneyMove], problems: list[str]) -> Finding:
    return Finding.of(
        "transaction", saga.aggregate_id, Kind.SAGA_MISMATCH, f"{saga.status}: " + "; ".join(problems),
        expected={"status": saga.status, "amount_minor": saga.amount_minor, "source": saga.source_account_id,
                  "destination": saga.destination_account_id},
        actual={"money": [_move_json(m) for m in moves]})


def _move_json(move: MoneyMove) -> dict[str, object]:
    return {"account_id": move.account_id, "reason": move.reason, "amount_minor": move.amount_minor,
            "currency": move.currency, "event_id": move.event_id, "occurred_at": move.occurred_at.isoformat()}
