"""Saga recovery: finish transfers stuck in `pending`, by the contract's saga rules.

For each stuck saga (pending longer than the threshold at the cut's time, as the reconciliation
defines `stuck`), the events decide:

- no money moved                        -> `TransactionFailed` ("recovered: stuck since ...");
- source debited, destination not credited -> `AccountCredited` (reason `refund`) on the source,
  then `TransactionCompensated` (if the refund is already there, only the latter);
- source debited and destination credited -> `TransactionCompleted`;
- anything else (amounts off, money on the wrong account, a corrupt stream...) is refused: a human decides.

`plan_recovery` reads and decides; it writes nothing but its audit row. `execute_plan` re-reads every
stream the plan relies on (the saga's and the source account's, the destination's for a completion) and
refuses a saga whose stream moved since the plan (version or last event id differ): the engine may have
finished it meanwhile. Only then does it append, through the event log's `append`, refunds first and saga
events second. Every plan, execution and refusal is audited (operation `saga_recovery`).

The appends go to Kafka, which no PostgreSQL transaction covers, so the audit is in two rows: a `pending`
row naming every event (with its event id) is appended before the first event is sent, and a completion row
(`completes` = its id) after the read-back. A pending row with no completion is a recovery that was
interrupted: some or all of its events may be in the log (look them up by event id), none that it does not name.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from billing_domain.config import DEFAULT_STUCK_AFTER
from billing_domain.core.accounts import CLOSED, AccountAggregate
from billing_domain.core.diff import is_stuck
from billing_domain.core.events import (
    SCHEMA_VERSION,
    AccountCredited,
    Event,
    Payload,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
)
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.operators import Operator, resolve
from billing_domain.core.replay import MoneyMove, Replay
from billing_domain.core.transactions import PENDING, TransactionAggregate
from billing_domain.ports import PENDING as AUDIT_PENDING
from billing_domain.ports import AuditLookup, AuditRecord, EventLog, ProjectionStore, ReportStore
from billing_domain.services.crashpoints import reached
from billing_domain.services.reconcile import ReconcileOptions, new_run_id, replay_all, utc_now

OPERATION = "saga_recovery"
Action = Literal["fail", "compensate", "finish_compensation", "complete", "refused", "deferred"]
WRITING_ACTIONS = ("fail", "compensate", "finish_compensation", "complete")


@dataclass(frozen=True, slots=True)
class StreamMark:
    """Where one stream stood when the plan was made; execution refuses if it moved."""

    aggregate_type: str
    aggregate_id: str
    version: int
    last_event_id: str | None
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    event_type: str
    payload: dict[str, Any]


@dataclass(slots=True)
class SagaAction:
    transaction_id: str
    action: Action
    reason: str
    pending_since: str | None = None
    amount_minor: int = 0
    currency: str = ""
    source_account_id: str = ""
    destination_account_id: str = ""
    marks: list[StreamMark] = field(default_factory=list)
    appends: list[PlannedEvent] = field(default_factory=list)
    outcome: str = ""


@dataclass(slots=True)
class RecoveryPlan:
    run_id: str
    planned_at: str
    cut_time: str | None
    stuck_after_minutes: float
    actions: list[SagaAction] = field(default_factory=list)
    audit_id: int | None = None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for action in self.actions:
            counts[action.action] = counts.get(action.action, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "planned_at": self.planned_at, "cut_time": self.cut_time,
                "stuck_after_minutes": self.stuck_after_minutes, "audit_id": self.audit_id,
                "counts": self.counts(), "actions": [asdict(a) for a in self.actions]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecoveryPlan:
        actions = [SagaAction(**{**a, "marks": [StreamMark(**m) for m in a["marks"]],
                                 "appends": [PlannedEvent(**e) for e in a["appends"]]}) for a in data["actions"]]
        return cls(data["run_id"], data["planned_at"], data.get("cut_time"), data["stuck_after_minutes"], actions,
                   data.get("audit_id"))


@dataclass(slots=True)
class RecoveryResult:
    plan: RecoveryPlan
    executed: bool
    appended: int = 0
    audit_id: int | None = None  # the execution's last row: its completion (or its refusal)
    pending_id: int | None = None  # the row naming every event before the first was sent

    @property
    def outcome(self) -> dict[str, str]:
        return {a.transaction_id: a.outcome or a.action for a in self.plan.actions}

    @property
    def refused(self) -> dict[str, str]:
        return {a.transaction_id: a.outcome or a.reason for a in self.plan.actions
                if a.action == "refused" or a.outcome.startswith("refused")}

    def to_json(self) -> dict[str, Any]:
        return {"executed": self.executed, "appended": self.appended, "audit_id": self.audit_id,
                "outcome": self.outcome, "plan": self.plan.to_json()}


def validate_request(reason: str, actor: str = "", max_sagas: int | None = None,
                     operator: Operator | None = None) -> Operator:
    """Refuse a request that cannot be right; the operator it names (a bare `actor` is self-declared)."""
    if not reason or not reason.strip():
        raise ConfigurationError("reason: say why you recover these sagas (it goes to the audit trail); it is empty")
    who = resolve(operator, actor)
    if max_sagas is not None and max_sagas < 1:
        raise ConfigurationError(f"max: {max_sagas} is not a positive number of sagas")
    return who


# --- planning -------------------------------------------------------------------------------------
def plan_recovery(event_store: EventLog, projections: ProjectionStore, recon_store: ReportStore, *,
                  reason: str, actor: str = "", operator: Operator | None = None, ids: Sequence[str] = (),
                  max_sagas: int | None = None,
                  stuck_after: timedelta = DEFAULT_STUCK_AFTER, run_id: str | None = None,
                  clock: Callable[[], datetime] = utc_now) -> RecoveryPlan:
    """Replay one cut, find the stuck sagas (of `ids`, if given) and decide each one. Audited as a dry run."""
    who = validate_request(reason, actor, max_sagas, operator)
    outcome = replay_all(event_store, projections, options=ReconcileOptions(stuck_after=stuck_after, clock=clock))
    replay = outcome.replay
    plan = RecoveryPlan(run_id or new_run_id("saga-recovery"), datetime.now(UTC).isoformat(),
                        replay.cut_time.isoformat() if replay.cut_time else None, stuck_after.total_seconds() / 60)
    wanted = set(ids)
    for transaction_id in sorted(wanted - set(replay.transactions)):
        plan.actions.append(SagaAction(transaction_id, "refused", "refused: no transaction with this id has events"))
    stuck = [s for s in replay.transactions.values() if (not wanted or s.aggregate_id in wanted)]
    stuck.sort(key=lambda s: (s.initiated_at or datetime.min.replace(tzinfo=UTC), s.aggregate_id))
    acted = 0
    for saga in stuck:
        if not is_stuck(saga, stuck_after, outcome.judge.read_at):
            if wanted:  # asked for by id: say why it is left alone
                plan.actions.append(SagaAction(saga.aggregate_id, "refused",
                                               f"refused: not stuck ({saga.status or 'corrupt'}); never touched"))
            continue
        action = decide(replay, saga)
        if action.action in WRITING_ACTIONS and max_sagas is not None and acted >= max_sagas:
            action.action, action.reason, action.appends = "deferred", f"over max={max_sagas}; next run", []
        acted += action.action in WRITING_ACTIONS
        plan.actions.append(action)
    plan.audit_id = recon_store.write_audit(_audit(plan, who, reason, dry_run=True, outcome="dry_run"))
    return plan


def decide(replay: Replay, saga: TransactionAggregate) -> SagaAction:
    """What the events say this stuck saga needs. Pure: reads the replay only."""
    tx = saga.aggregate_id
    action = SagaAction(tx, "refused", "", saga.initiated_at.isoformat() if saga.initiated_at else None,
                        saga.amount_minor, saga.currency, saga.source_account_id, saga.destination_account_id)
    source = replay.accounts.get(saga.source_account_id)
    destination = replay.accounts.get(saga.destination_account_id)
    problem = _untrustworthy(replay, saga, source, destination)
    if problem:
        action.reason = f"refused: {problem}"
        return action
    assert source is not None and destination is not None
    moves = replay.saga_money.get(tx, [])
    money = _money_shape(saga, moves)
    if money is None:
        action.reason = "refused: its money fits no recovery (" + ", ".join(
            f"{m.reason} {m.amount_minor} {m.currency} on {m.account_id}" for m in moves) + "); a human decides"
        return action
    action.marks = [_mark(replay, "transaction", saga), _mark(replay, "account", source)]
    since = saga.initiated_at.strftime("%Y-%m-%dT%H:%M:%SZ") if saga.initiated_at else "?"
    if money == ():
        action.action, action.reason = "fail", "no money moved"
        action.appends = [_saga_event(saga, TransactionFailed(f"recovered: stuck since {since}"))]
    elif money == ("transfer_out",):
        refused = _refund_refused(source, saga.amount_minor)
        if refused:
            action.reason = f"refused: the source was debited but cannot take the refund ({refused})"
            return action
        action.action, action.reason = "compensate", "source debited, destination not credited: refund the source"
        action.appends = [PlannedEvent("account", source.aggregate_id, source.version + 1, "AccountCredited",
                                       {"amount_minor": saga.amount_minor, "transaction_id": tx, "reason": "refund"}),
                          _saga_event(saga, TransactionCompensated())]
    elif money == ("refund", "transfer_out"):
        action.action, action.reason = "finish_compensation", "source debited and already refunded"
        action.appends = [_saga_event(saga, TransactionCompensated())]
    else:  # ("transfer_in", "transfer_out")
        action.action, action.reason = "complete", "source debited and destination credited"
        action.marks.append(_mark(replay, "account", destination))
        action.appends = [_saga_event(saga, TransactionCompleted())]
    return action


def _untrustworthy(replay: Replay, saga: TransactionAggregate, source: AccountAggregate | None,
                   destination: AccountAggregate | None) -> str | None:
    if replay.is_corrupt("transaction", saga.aggregate_id) or saga.violations:
        return "the saga's stream is corrupt or made an illegal move"
    for role, account_id, account in (("source", saga.source_account_id, source),
                                      ("destination", saga.destination_account_id, destination)):
        if account is None or account.version == 0:
            return f"the {role} account {account_id} has no events"
        if replay.is_corrupt("account", account_id) or account.violations:
            return f"the {role} account {account_id} has a corrupt stream or breaks a rule"
    return None


def _money_shape(saga: TransactionAggregate, moves: list[MoneyMove]) -> tuple[str, ...] | None:
    """The sorted reasons of the saga's money, when every move is where and what it must be; else None."""
    place = {"transfer_out": saga.source_account_id, "refund": saga.source_account_id,
             "transfer_in": saga.destination_account_id}
    for move in moves:
        if move.amount_minor != saga.amount_minor or move.currency != saga.currency \
                or place.get(move.reason) != move.account_id:
            return None
    shape = tuple(sorted(m.reason for m in moves))
    return shape if shape in ((), ("transfer_out",), ("refund", "transfer_out"), ("transfer_in", "transfer_out")) \
        else None


def _refund_refused(source: AccountAggregate, amount: int) -> str | None:
    if source.status == CLOSED:
        return "the account is closed"
    if source.balance_minor + amount > source.max_balance_minor:
        return f"balance {source.balance_minor} + {amount} would exceed max balance {source.max_balance_minor}"
    return None


def _mark(replay: Replay, aggregate_type: str, aggregate: AccountAggregate | TransactionAggregate) -> StreamMark:
    topic, partition = replay.partition_of[(aggregate_type, aggregate.aggregate_id)]
    return StreamMark(aggregate_type, aggregate.aggregate_id, aggregate.version, aggregate.last_event_id, topic,
                      partition)


def _saga_event(saga: TransactionAggregate, payload: Payload) -> PlannedEvent:
    return PlannedEvent("transaction", saga.aggregate_id, saga.version + 1, type(payload).__name__,
                        {k: getattr(payload, k) for k in payload.__struct_fields__})


# --- execution ------------------------------------------------------------------------------------
def execute_plan(event_store: EventLog, projections: ProjectionStore, recon_store: ReportStore,
                 plan: RecoveryPlan, *, reason: str, actor: str = "", operator: Operator | None = None
                 ) -> RecoveryResult:
    """Re-read the plan's streams, refuse the sagas whose streams moved, append the rest. Audited: a pending row
    with every event to append first, a completion after the read-back."""
    who = validate_request(reason, actor, operator=operator)
    result = RecoveryResult(plan, executed=True)
    todo = [a for a in plan.actions if a.action in WRITING_ACTIONS]
    if not todo:
        result.audit_id = recon_store.write_audit(_audit(plan, who, reason, dry_run=False, outcome="nothing_to_do"))
        return result
    with projections.locks.saga_recovery():
        reached("saga.locked")
        _refuse_moved(event_store, todo)
        ready = [a for a in todo if a.outcome == "appending"]
        if not ready:  # every saga moved since the plan: nothing will be sent
            result.audit_id = recon_store.write_audit(_audit(plan, who, reason, dry_run=False, outcome="refused"))
            return result
        events = _events(ready)  # their ids are in the pending row before any is sent
        result.pending_id = pending = recon_store.write_audit(_audit(plan, who, reason, dry_run=False,
                                                                     outcome=AUDIT_PENDING))
        reached("saga.pending_audited")
        try:
            result.appended = _append(event_store, ready, events)
            _verify(event_store, ready)
        except Exception as exc:
            recon_store.write_audit(_audit(plan, who, reason, dry_run=False, outcome="failed", error=str(exc),
                                           completes=pending))
            raise
        reached("saga.verified")
        appended = [a for a in todo if a.outcome == "appended"]
        outcome = "applied" if len(appended) == len(todo) else "partial"
        result.audit_id = recon_store.write_audit(_audit(plan, who, reason, dry_run=False, outcome=outcome,
                                                         completes=pending))
        reached("saga.audited")
    return result


def _refuse_moved(event_store: EventLog, todo: Sequence[SagaAction]) -> None:
    """Mark each action `appending`, or refused if a stream it relies on moved since the plan."""
    current = _reread(event_store, todo)
    for action in todo:
        moved = [f"{m.aggregate_type} {m.aggregate_id} v{m.version} -> v{current.get(m.aggregate_id, (0, None))[0]}"
                 for m in action.marks if current.get(m.aggregate_id) != (m.version, m.last_event_id)]
        action.outcome = ("refused: moved since the plan (" + "; ".join(moved) + ")") if moved else "appending"


def _reread(event_store: EventLog, actions: Sequence[SagaAction]) -> dict[str, tuple[int, str | None]]:
    """Each watched stream's (version, last event id) now, reading only the partitions that hold them."""
    marks = [m for a in actions for m in a.marks]  # they include every stream the actions append to
    ids = {m.aggregate_id for m in marks}
    partitions = {(m.topic, m.partition) for m in marks}
    replay = Replay(event_store.topics, only_ids=ids)
    for batch in event_store.read_cut(partitions=partitions):
        replay.feed(batch)
    aggregates: dict[str, AccountAggregate | TransactionAggregate] = {**replay.accounts, **replay.transactions}
    return {i: (a.version, a.last_event_id) for i, a in aggregates.items()}


def _events(actions: Sequence[SagaAction]) -> dict[tuple[str, int], Event]:
    """The events to append, each with its event id, which is also written into the action's plan."""
    now = datetime.now(UTC)
    events = {(a.transaction_id, i): _event(e, a.transaction_id, now) for a in actions
              for i, e in enumerate(a.appends)}
    for action in actions:
        action.appends = [PlannedEvent(e.aggregate_type, e.aggregate_id, e.aggregate_version, e.event_type,
                                       e.payload | {"event_id": events[(action.transaction_id, i)].event_id})
                          for i, e in enumerate(action.appends)]
    return events


def _append(event_store: EventLog, actions: Sequence[SagaAction], events: dict[tuple[str, int], Event]
            ) -> int:
    """Refunds first, confirmed, then the saga events: a saga is never compensated before its refund exists.

    Each event goes to the partition its stream was read on (the plan's marks), not where our producer's
    partitioner would put the key: the engine's client may hash keys otherwise (kafkajs: murmur2)."""
    refunds = [e for e in events.values() if e.aggregate_type == "account"]
    sagas = [e for e in events.values() if e.aggregate_type == "transaction"]
    placed = {(m.aggregate_type, m.aggregate_id): m.partition for a in actions for m in a.marks}
    appended = event_store.append(refunds, partitions=placed) if refunds else 0
    reached("saga.refunds_appended")
    appended += event_store.append(sagas, partitions=placed) if sagas else 0
    reached("saga.sagas_appended")
    for action in actions:
        action.outcome = "appended"
    return appended


def _verify(event_store: EventLog, actions: Sequence[SagaAction]) -> None:
    """Read back: each appended event must sit at its version; another writer at that version is a conflict."""
    if not actions:
        return
    current = _reread(event_store, actions)
    for action in actions:
        for planned in action.appends:
            version, last = current.get(planned.aggregate_id, (0, None))
            if version < planned.aggregate_version:
                action.outcome = f"appended, not yet readable on {planned.aggregate_id}"
            elif version == planned.aggregate_version and last != planned.payload.get("event_id"):
                action.outcome = (f"conflict: another event took v{planned.aggregate_version} of "
                                  f"{planned.aggregate_id}; reconcile it")


def _event(planned: PlannedEvent, transaction_id: str, now: datetime) -> Event:
    payload_types: dict[str, type[Payload]] = {"AccountCredited": AccountCredited,
                                               "TransactionFailed": TransactionFailed,
                                               "TransactionCompensated": TransactionCompensated,
                                               "TransactionCompleted": TransactionCompleted}
    fields = {k: v for k, v in planned.payload.items() if k != "event_id"}
    return Event(str(uuid.uuid4()), planned.event_type, SCHEMA_VERSION, planned.aggregate_type,  # type: ignore[arg-type]
                 planned.aggregate_id, planned.aggregate_version, now, transaction_id,
                 payload_types[planned.event_type](**fields))


def load_plan(recon_store: AuditLookup, audit_id: int) -> RecoveryPlan:
    """The plan a dry run stored in audit row `audit_id`, to execute exactly what was reviewed."""
    row = recon_store.audit_record(audit_id)
    details = (row or {}).get("details") or {}
    if row is None or row["operation"] != OPERATION or not row["dry_run"] or "plan" not in details:
        raise ConfigurationError(f"plan: audit #{audit_id} is not a saga recovery dry run")
    plan = RecoveryPlan.from_json(details["plan"])
    plan.audit_id = audit_id
    return plan


def _audit(plan: RecoveryPlan, operator: Operator, reason: str, *, dry_run: bool, outcome: str,
           error: str | None = None, completes: int | None = None) -> AuditRecord:
    acting = [a for a in plan.actions if a.action in WRITING_ACTIONS]
    return AuditRecord(
        operator=operator, reason=reason, operation=OPERATION, dry_run=dry_run, entity_type="transaction",
        completes=completes, entity_ids=[a.transaction_id for a in plan.actions], outcome=outcome, run_id=plan.run_id,
        before={a.transaction_id: {"status": PENDING, "marks": [asdict(m) for m in a.marks]} for a in acting},
        after={a.transaction_id: {"action": a.action, "events": [asdict(e) for e in a.appends]} for a in acting},
        details={"plan": plan.to_json(), "outcome": {a.transaction_id: a.outcome or a.action for a in plan.actions},
                 **({"error": error} if error else {})})
