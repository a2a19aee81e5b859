"""Saga recovery against the real broker and PostgreSQL: plan, refuse on a race, append, reconcile clean."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from support.builders import EventFactory, project

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    TransactionCompleted,
    TransactionInitiated,
    decode_event,
)
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.services.reconcile import ReconcileOptions, reconcile_all
from billing_domain.services.saga_recovery import execute_plan, load_plan, plan_recovery
from billing_sandbox.projector import LiveProjector

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
NOW = T0 + timedelta(minutes=30)  # the run's clock, injected: a minute after tx-fresh began, 26+ after the rest
_event = EventFactory(T0)


def _clock() -> datetime:
    return NOW


def stuck_history() -> list[Event]:
    """Three stuck transfers (no money / debited / debited and credited) and one pending for a minute only."""
    return [
        _event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
        _event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
        _event("acc-a", 2, AccountCredited(10_000, None, "deposit"), 1),
        _event("tx-nomoney", 1, TransactionInitiated("acc-a", "acc-b", 100, "EUR"), 2),
        _event("tx-debited", 1, TransactionInitiated("acc-a", "acc-b", 200, "EUR"), 3),
        _event("acc-a", 3, AccountDebited(200, "tx-debited", "transfer_out"), 3, "tx-debited"),
        _event("tx-both", 1, TransactionInitiated("acc-a", "acc-b", 300, "EUR"), 4),
        _event("acc-a", 4, AccountDebited(300, "tx-both", "transfer_out"), 4, "tx-both"),
        _event("acc-b", 2, AccountCredited(300, "tx-both", "transfer_in"), 4, "tx-both"),
        _event("tx-fresh", 1, TransactionInitiated("acc-b", "acc-a", 50, "EUR"), 29),
        _event("acc-b", 3, AccountCredited(1_000, None, "deposit"), 30),  # the cut's time
    ]


@pytest.fixture
def seeded(event_store: KafkaEventStore, projection_store: ProjectionStore) -> ReconStore:
    events = stuck_history()
    event_store.append(events)
    project(events, projection_store)
    recon = ReconStore(projection_store.engine)
    recon.migrate()
    return recon


def _stream(event_store: KafkaEventStore, aggregate_id: str) -> list[Event]:
    return [decode_event(m.value(), m.key()) for batch in event_store.read_cut() for m in batch
            if m.key() == aggregate_id.encode()]


def test_the_plan_fails_compensates_completes_and_never_touches_a_fresh_saga(
        event_store: KafkaEventStore, projection_store: ProjectionStore, seeded: ReconStore) -> None:
    plan = plan_recovery(event_store, projection_store, seeded, reason="stuck since the outage", actor="alice",
                         clock=_clock)
    by_id = {a.transaction_id: a for a in plan.actions}
    assert set(by_id) == {"tx-nomoney", "tx-debited", "tx-both"}  # tx-fresh is pending, not stuck
    assert by_id["tx-nomoney"].action == "fail"
    [failed] = by_id["tx-nomoney"].appends
    assert (failed.event_type, failed.aggregate_version) == ("TransactionFailed", 2)
    assert failed.payload["reason"].startswith("recovered: stuck since ")
    refund, compensated = by_id["tx-debited"].appends
    assert (refund.event_type, refund.aggregate_id, refund.aggregate_version) == ("AccountCredited", "acc-a", 5)
    assert refund.payload == {"amount_minor": 200, "transaction_id": "tx-debited", "reason": "refund"}
    assert (compensated.event_type, compensated.aggregate_version) == ("TransactionCompensated", 2)
    assert [e.event_type for e in by_id["tx-both"].appends] == ["TransactionCompleted"]
    # a dry run appends nothing and is audited
    assert len(_stream(event_store, "tx-nomoney")) == 1
    [audit] = seeded.audit_records()
    assert (audit["operation"], audit["dry_run"], audit["outcome"]) == ("saga_recovery", True, "dry_run")

    asked = plan_recovery(event_store, projection_store, seeded, reason="r", actor="a", ids=["tx-fresh"], clock=_clock)
    [fresh] = asked.actions
    assert fresh.action == "refused" and "not stuck" in fresh.reason and fresh.appends == []
    with pytest.raises(ConfigurationError, match="reason"):
        plan_recovery(event_store, projection_store, seeded, reason=" ", actor="a", clock=_clock)


def test_a_saga_that_moved_since_the_plan_is_refused_and_nothing_is_appended(
        event_store: KafkaEventStore, projection_store: ProjectionStore, seeded: ReconStore) -> None:
    plan = plan_recovery(event_store, projection_store, seeded, reason="r", actor="alice", ids=["tx-debited"],
                         clock=_clock)
    # the engine finishes the transfer meanwhile
    engine_events = [_event("acc-b", 4, AccountCredited(200, "tx-debited", "transfer_in"), 31, "tx-debited"),
                     _event("tx-debited", 2, TransactionCompleted(), 31)]
    event_store.append(engine_events)
    reviewed = load_plan(seeded, plan.audit_id or 0)  # execute exactly what was reviewed
    result = execute_plan(event_store, projection_store, seeded, reviewed, reason="r", actor="alice")
    assert result.appended == 0
    assert result.outcome["tx-debited"].startswith("refused: moved since the plan")
    assert [e.event_id for e in _stream(event_store, "tx-debited")][1] == engine_events[1].event_id
    assert len(_stream(event_store, "tx-debited")) == 2 and len(_stream(event_store, "acc-a")) == 4
    assert seeded.audit_records()[0]["outcome"] == "refused"


def test_after_recovery_and_projection_the_sagas_reconcile_and_the_equation_holds(
        event_store: KafkaEventStore, projection_store: ProjectionStore, seeded: ReconStore) -> None:
    options = ReconcileOptions(clock=_clock)
    before = {f.key for f in reconcile_all(event_store, projection_store, options=options).findings}
    assert ("transaction", "tx-debited", "stuck") in before
    plan = plan_recovery(event_store, projection_store, seeded, reason="outage", actor="alice", clock=_clock)
    result = execute_plan(event_store, projection_store, seeded, plan, reason="outage", actor="alice")
    assert result.appended == 4
    assert set(result.outcome.values()) == {"appended"}
    refund = _stream(event_store, "acc-a")[-1]
    assert refund.correlation_id == "tx-debited" and refund.aggregate_version == 5
    assert isinstance(refund.payload, AccountCredited) and refund.payload.reason == "refund"

    projector = LiveProjector(event_store, projection_store.engine, group_id=f"p-{uuid.uuid4().hex[:6]}")
    try:
        projector.run_until_caught_up(timeout_s=60)
    finally:
        projector.close()
    report = reconcile_all(event_store, projection_store, options=options)
    recovered = {"tx-nomoney", "tx-debited", "tx-both"}
    assert not [f for f in report.findings if f.entity_id in recovered]
    assert all(identity.holds for identity in report.ledger)
    statuses = {k: v.status for k, v in projection_store.read_transactions().items()}
    assert statuses == {"tx-nomoney": "failed", "tx-debited": "compensated", "tx-both": "completed",
                        "tx-fresh": "pending"}
    assert seeded.audit_records()[0]["outcome"] == "applied"
