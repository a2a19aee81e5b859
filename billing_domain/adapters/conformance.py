"""Each adapter is its port: mypy checks the assignments below, so an adapter that drifts from its
Protocol fails `make test` at the type check, before any contract suite runs. Nothing calls this."""

from __future__ import annotations

from billing_domain import ports
from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.kafka.offsets import RecordScan
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore, CheckpointView
from billing_domain.adapters.postgres.lifecycle_store import LifecycleTransaction
from billing_domain.adapters.postgres.locks import AdvisoryLocks
from billing_domain.adapters.postgres.projection_changes import ProjectionSnapshot
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.adapters.slack import SlackNotifier


def adapters_implement_ports(events: KafkaEventStore, scan: RecordScan, projections: ProjectionStore,
                             snapshot: ProjectionSnapshot, locks: AdvisoryLocks, reports: ReconStore,
                             checkpoints: CheckpointStore, view: CheckpointView, notifier: SlackNotifier,
                             lifecycle_tx: LifecycleTransaction) -> None:
    event_log: ports.EventLog = events
    log_scan: ports.LogScan = scan
    cut_read: ports.CutRead = events.read_cut()
    projection_store: ports.ProjectionStore = projections
    projection_snapshot: ports.ProjectionSnapshot = snapshot
    lock_factory: ports.Locks = locks
    report_store: ports.ReportStore = reports
    checkpoint_store: ports.CheckpointStore = checkpoints
    checkpoint_view: ports.CheckpointView = view
    alerts: ports.Notifier = notifier
    lifecycle_store: ports.ReportsWithLifecycle = reports
    lifecycle_transaction: ports.LifecycleTransaction = lifecycle_tx
    audit_lookup: ports.AuditLookup = reports
    shadow_projections: ports.ShadowProjections = projections
    del (event_log, log_scan, cut_read, projection_store, projection_snapshot, lock_factory, report_store,
         checkpoint_store, checkpoint_view, alerts, lifecycle_store, lifecycle_transaction, audit_lookup,
         shadow_projections)
