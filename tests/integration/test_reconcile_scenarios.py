"""Hand-built histories with one fault each: the reconciliation names exactly that fault."""

from __future__ import annotations

from support.builders import HISTORY_START, EventFactory, project, transfer_history

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    TransactionCompleted,
    TransactionInitiated,
)
from billing_domain.services.reconcile import reconcile_all

_event = EventFactory(HISTORY_START, id_prefix="evt")


def _kinds(event_store: KafkaEventStore, projections: ProjectionStore) -> set[tuple[str, str, str]]:
    return {f.key for f in reconcile_all(event_store, projections).findings}


def test_a_clean_history_has_no_findings(event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    events = transfer_history(_event)
    event_store.append(events)
    project(events, projection_store)
    report = reconcile_all(event_store, projection_store)
    assert report.findings == []
    assert all(identity.holds for identity in report.ledger)
    assert report.stats["events_read"] == len(events)


def test_a_corrupted_balance_is_a_balance_mismatch_and_breaks_identity_one(
        event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    events = transfer_history(_event)
    event_store.append(events)
    project(events, projection_store)
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 "
                             "WHERE account_id = 'acc-a'")
    assert _kinds(event_store, projection_store) == {
        ("account", "acc-a", "balance_mismatch"), ("ledger", "EUR:balances_match_events", "accounting_equation")}


def test_a_projection_behind_the_log_is_only_lagging(event_store: KafkaEventStore,
                                                      projection_store: ProjectionStore) -> None:
    events = transfer_history(_event)
    project(events, projection_store)
    later = _event("acc-a", 4, AccountCredited(100, None, "deposit"), minutes=4)
    event_store.append([*events, later])
    assert _kinds(event_store, projection_store) == {("account", "acc-a", "lagging")}


def test_poison_redelivery_gap_and_ahead_rows(event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    events = transfer_history(_event)
    event_store.append(events)
    project(events, projection_store)
    event_store.append(events[:3])  # redelivered: ignored
    event_store.append_raw([RawRecord(event_store.topics.accounts, b"acc-b", b"{not json")])
    event_store.append([_event("acc-a", 6, AccountCredited(1, None, "deposit"))])  # v4 and v5 missing
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.transaction_projection SET version = 5 WHERE transaction_id = 'tx-1'")
    report = reconcile_all(event_store, projection_store)
    assert {f.key for f in report.findings} == {
        ("account", "acc-b", "stream_corrupt"), ("account", "acc-a", "stream_corrupt"),
        ("transaction", "tx-1", "version_ahead")}
    poison = next(f for f in report.findings if f.entity_id == "acc-b")
    assert poison.topic == event_store.topics.accounts and poison.offset is not None
    assert report.stats["duplicates_ignored"] == 3


def test_stuck_and_saga_mismatch(event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    events = [*transfer_history(_event),
              _event("tx-2", 1, TransactionInitiated("acc-a", "acc-b", 100, "EUR"), minutes=4),
              _event("acc-a", 4, AccountDebited(100, "tx-2", "transfer_out"), minutes=4, correlation="tx-2"),
              _event("tx-3", 1, TransactionInitiated("acc-b", "acc-a", 50, "EUR"), minutes=20),
              _event("acc-b", 3, AccountDebited(50, "tx-3", "transfer_out"), minutes=20, correlation="tx-3"),
              _event("tx-3", 2, TransactionCompleted(), minutes=21)]
    event_store.append(events)
    project(events, projection_store)
    assert _kinds(event_store, projection_store) == {
        ("transaction", "tx-2", "stuck"), ("transaction", "tx-3", "saga_mismatch"),
        ("ledger", "EUR:transfers_conserve_money", "accounting_equation")}


def test_rebuild_repairs_what_it_may_and_refuses_corrupt_streams(
        event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    from billing_domain.adapters.postgres.recon_store import ReconStore
    from billing_domain.services.rebuild import RebuildSelection, rebuild

    recon = ReconStore(projection_store.engine)
    recon.migrate()
    events = transfer_history(_event)
    event_store.append(events)
    project(events, projection_store)
    event_store.append_raw([RawRecord(event_store.topics.accounts, b"acc-b", b"{not json")])
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = 1, version = 9 "
                             "WHERE account_id = 'acc-a'")
        conn.exec_driver_sql("DELETE FROM billing.transaction_projection")
    report = reconcile_all(event_store, projection_store)
    recon.save_report(report, source="test")

    dry = rebuild(event_store, projection_store, recon, entity_type="account", selection=RebuildSelection(),
                  dry_run=True, reason="test", actor="tester")
    assert {c.entity_id: c.action for c in dry.changes} == {"acc-a": "reset_ahead", "acc-b": "refused"}
    assert projection_store.read_accounts()["acc-a"].version == 9  # dry run wrote nothing

    done = rebuild(event_store, projection_store, recon, entity_type="account", selection=RebuildSelection(),
                   dry_run=False, reason="test", actor="tester")
    assert done.outcome["acc-a"] == "fixed"
    assert done.outcome["acc-b"].startswith("refused")
    txs = rebuild(event_store, projection_store, recon, entity_type="transaction",
                  selection=RebuildSelection(ids=("tx-1",)), dry_run=False, reason="test", actor="tester")
    assert txs.outcome == {"tx-1": "fixed"}
    after = {f.key for f in reconcile_all(event_store, projection_store).findings}
    assert after == {("account", "acc-b", "stream_corrupt")}
    audits = recon.audit_operations()  # each write's pending row merged with its completion
    assert [a["outcome"] for a in audits] == ["applied", "applied", "dry_run"]
    assert [a["outcome"] for a in recon.audit_records()] == ["applied", "pending", "applied", "pending", "dry_run"]
    assert audits[1]["before"]["acc-a"]["version"] == 9 and audits[1]["after"]["acc-a"]["version"] == 3


def test_a_parallel_replay_reports_exactly_what_a_single_pass_does(
        event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    from billing_domain.services.reconcile import ReconcileOptions

    events = [*transfer_history(_event),
              _event("tx-2", 1, TransactionInitiated("acc-b", "acc-a", 100, "EUR"), minutes=4),
              _event("acc-b", 3, AccountDebited(100, "tx-2", "transfer_out"), minutes=4, correlation="tx-2"),
              _event("tx-2", 2, TransactionCompleted(), minutes=5)]
    event_store.append(events)
    project(events, projection_store)
    event_store.append_raw([RawRecord(event_store.topics.transactions, b"tx-9", b"[1]")])
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = 3 WHERE account_id = 'acc-b'")

    single = reconcile_all(event_store, projection_store)
    parallel = reconcile_all(event_store, projection_store, options=ReconcileOptions(workers=2))

    assert {f.key for f in parallel.findings} == {f.key for f in single.findings} == {
        ("account", "acc-b", "balance_mismatch"), ("transaction", "tx-2", "saga_mismatch"),
        ("transaction", "tx-9", "stream_corrupt"), ("ledger", "EUR:balances_match_events", "accounting_equation"),
        ("ledger", "EUR:transfers_conserve_money", "accounting_equation")}
    assert parallel.ledger == single.ledger
    assert parallel.cut.end == single.cut.end
    assert parallel.stats["events_read"] == single.stats["events_read"]
