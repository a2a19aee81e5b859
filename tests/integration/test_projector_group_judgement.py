"""With the projector's consumer group known, its committed offsets decide exactly what it has applied (issue 13).

A real consumer group on the real broker: our `LiveProjector` applies a recent history and commits its
offsets. Then one row loses its last write and one row disappears. By the window alone both are too recent
to tell from lag; by the group's offsets both are faults, however recent. Events the group has not reached
yet stay `lagging`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from support.builders import EventFactory

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.events import AccountCredited, AccountDebited, AccountOpened, Event, TransactionCompleted
from billing_domain.core.events import TransactionInitiated as Initiated
from billing_domain.core.findings import Kind, ReconciliationReport
from billing_domain.services.reconcile import ReconcileOptions, reconcile_all
from billing_sandbox.projector import LiveProjector


def _recent_history(event: EventFactory) -> list[Event]:
    return [event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
            event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
            event("acc-a", 2, AccountCredited(5_000, None, "deposit")),
            event("tx-1", 1, Initiated("acc-a", "acc-b", 700, "EUR")),
            event("acc-a", 3, AccountDebited(700, "tx-1", "transfer_out"), 0, "tx-1"),
            event("acc-b", 2, AccountCredited(700, "tx-1", "transfer_in"), 0, "tx-1"),
            event("tx-1", 2, TransactionCompleted(), 0, "tx-1")]


def _kinds(report: ReconciliationReport) -> dict[str, set[Kind]]:
    found: dict[str, set[Kind]] = {}
    for finding in report.findings:
        found.setdefault(finding.entity_id, set()).add(finding.kind)
    return found


def test_a_row_missing_an_event_the_group_committed_is_a_fault_however_recent(
        event_store: KafkaEventStore, engine: Engine, projection_store: ProjectionStore) -> None:
    group = f"projector-{uuid.uuid4().hex[:8]}"
    event = EventFactory(datetime.now(UTC) - timedelta(seconds=5))  # well inside the 60 s window
    event_store.append(_recent_history(event))
    projector = LiveProjector(event_store, engine, group_id=group)
    try:
        projector.run_until_caught_up()
    finally:
        projector.close()
    with engine.begin() as conn:  # acc-a loses its last write (v3, the transfer_out); tx-1's row is gone
        conn.exec_driver_sql("UPDATE billing.account_projection SET version = 2, balance_minor = 5000 "
                             "WHERE account_id = 'acc-a'")
        conn.exec_driver_sql("DELETE FROM billing.transaction_projection WHERE transaction_id = 'tx-1'")

    by_window = _kinds(reconcile_all(event_store, projection_store))
    assert by_window["acc-a"] == {Kind.LAGGING} and by_window["tx-1"] == {Kind.LAGGING}

    by_group = reconcile_all(event_store, projection_store, options=ReconcileOptions(projector_group=group))
    kinds = _kinds(by_group)
    assert kinds["acc-a"] == {Kind.FIELD_MISMATCH}
    assert kinds["tx-1"] == {Kind.MISSING_PROJECTION}
    [lost] = [f for f in by_group.findings if f.entity_id == "acc-a"]
    assert f"projector group {group} committed" in lost.detail and lost.offset is not None
    assert by_group.stats["projector_group"] == group and by_group.stats["projector_offsets_read"] is True

    # Events the group has not reached yet (no projector runs now) are merely not applied: lagging.
    later = EventFactory(datetime.now(UTC))
    event_store.append([later("acc-b", 3, AccountCredited(10, None, "deposit")),
                        later("acc-c", 1, AccountOpened("owner-c", "EUR", 0, 1_000))])
    after = _kinds(reconcile_all(event_store, projection_store, options=ReconcileOptions(projector_group=group)))
    assert after["acc-b"] == {Kind.LAGGING} and after["acc-c"] == {Kind.LAGGING}
    assert after["acc-a"] == {Kind.FIELD_MISMATCH}


def test_a_group_that_never_committed_leaves_the_window_to_decide(
        event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    event = EventFactory(datetime.now(UTC) - timedelta(seconds=5))
    event_store.append(_recent_history(event))  # nothing projected at all, and the group name is unknown
    report = reconcile_all(event_store, projection_store,
                           options=ReconcileOptions(projector_group=f"nobody-{uuid.uuid4().hex[:8]}"))
    assert report.stats["projector_offsets_read"] is False
    assert {f.kind for f in report.findings if f.entity_type != "ledger"} == {Kind.LAGGING}
