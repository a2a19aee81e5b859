"""Money per transfer: each saga's account events against its status, by the contract's rules.

completed ⇒ one transfer_out on the source and one transfer_in on the destination, each of the
amount; compensated ⇒ one transfer_out and one refund on the source, no transfer_in; failed ⇒
no money; pending ⇒ at most the transfer_out.
"""

from __future__ import annotations

from collections import Counter

from billing_domain.findings import Finding, Kind
from billing_domain.reconcile.replay import MoneyMove, Replay
from billing_domain.transactions import COMPENSATED, COMPLETED, FAILED, PENDING, TransactionAggregate


def saga_findings(replay: Replay) -> list[Finding]:
    findings = []
    for transaction_id, saga in replay.transactions.items():
        if replay.is_corrupt("transaction", transaction_id) or saga.version == 0:
            continue
        moves = replay.saga_money.get(transaction_id, [])
        problems = saga_problems(saga, moves)
        if (problems or saga.violations) and len(moves) > 1:  # sorted only when reported: the finding
            moves = _in_order(moves)                          # must not depend on the read order
            problems = saga_problems(saga, moves) if problems else problems
        if saga.violations:
            problems.extend(saga.violations)
        if problems:
            findings.append(_finding(saga, moves, problems))
    for transaction_id, unordered in replay.saga_money.items():
        if transaction_id not in replay.transactions and not replay.is_corrupt("transaction", transaction_id):
            moves = _in_order(unordered)
            findings.append(Finding.of(
                "transaction", transaction_id, Kind.SAGA_MISMATCH,
                f"{len(moves)} account event(s) name this transaction, which has no events",
                expected={"status": None}, actual={"money": [_move_json(m) for m in moves]}))
    return findings


def _in_order(moves: list[MoneyMove]) -> list[MoneyMove]:
    """A transfer's legs sit on two accounts' streams, read in no fixed order: list them in one."""
    return sorted(moves, key=lambda m: (m.account_id, m.reason, m.event_id))


def saga_problems(saga: TransactionAggregate, moves: list[MoneyMove]) -> list[str]:
    """What is wrong with this saga's money for its status; empty when it matches."""
    wanted, got = _legs_for(saga), [(m.reason, m.account_id) for m in moves]
    # Counting legs only when they differ: building two Counters per saga was most of the saga check.
    # The Counters keep the order of `wanted` and `moves`, and so the order of the text.
    problems = [] if sorted(got) == sorted(wanted) else _leg_problems(saga, Counter(wanted), Counter(got))
    problems += [f"{m.reason} of {m.amount_minor} on {m.account_id}, transfer amount is {saga.amount_minor}"
                 for m in moves if m.amount_minor != saga.amount_minor]
    problems += [f"{m.reason} on {m.account_id} in {m.currency}, transfer currency is {saga.currency}"
                 for m in moves if m.currency != saga.currency]
    return problems


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
            "currency": move.currency, "event_id": move.event_id}
