"""The finding lifecycle on the real PostgreSQL, and its alert through the Dagster daily run and sensor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from support.slack_standin import SlackStandin
from test_dagster_jobs import _sensor_context, run_job, seeded, slack  # noqa: F401 (fixtures)

from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.findings import Finding, Kind, ReconciliationReport, Severity
from billing_domain.services.alerts import lifecycle_alert
from billing_domain.services.lifecycle import (
    acknowledge,
    list_findings,
    notes,
    on_full_reconciliation,
    run_lifecycle,
)
from billing_pipelines.sensors import reconciliation_findings_sensor

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _f(entity_id: str, kind: Kind, severity: Severity | None = None) -> Finding:
    finding = Finding.of("transaction" if kind == Kind.STUCK else "account", entity_id, kind, f"{kind} {entity_id}")
    return finding if severity is None else Finding(finding.entity_type, entity_id, kind, severity, finding.detail)


def _run(recon: ReconStore, run_id: str, day: int, findings: list[Finding], scope: str = "all") -> Any:
    report = ReconciliationReport(run_id=run_id, scope=scope, started_at=T0 + timedelta(days=day),
                                  finished_at=T0 + timedelta(days=day, minutes=1), findings=findings)
    recon.save_report(report, source="test")
    return on_full_reconciliation(recon, report)


@pytest.fixture
def recon(engine: Engine) -> ReconStore:
    store = ReconStore(engine)
    store.migrate()
    return store


def test_runs_give_new_open_escalated_and_resolved(recon: ReconStore) -> None:
    first = _run(recon, "run-1", 0, [_f("a1", Kind.BALANCE_MISMATCH), _f("t1", Kind.STUCK),
                                     _f("a2", Kind.FIELD_MISMATCH)])
    assert first.counts()["new"] == 3
    second = _run(recon, "run-2", 1, [_f("a1", Kind.BALANCE_MISMATCH), _f("t1", Kind.STUCK, Severity.CRITICAL),
                                      _f("a3", Kind.ORPHAN_PROJECTION)])
    assert second.statuses == {("account", "a1", "balance_mismatch"): "open",
                               ("transaction", "t1", "stuck"): "escalated",
                               ("account", "a3", "orphan_projection"): "new",
                               ("account", "a2", "field_mismatch"): "resolved"}
    rows = {r.key: r for r in list_findings(recon)}
    a1 = rows[("account", "a1", "balance_mismatch")]
    assert (a1.first_seen_run, a1.last_seen_run, a1.runs_seen) == ("run-1", "run-2", 2)
    assert a1.first_seen_at == T0 + timedelta(minutes=1) and a1.days_open > 1
    assert rows[("account", "a2", "field_mismatch")].resolved_run == "run-2"
    assert [r.key for r in list_findings(recon, "resolved")] == [("account", "a2", "field_mismatch")]
    # a run is applied once, an older run never after a newer one, a partial scope never
    assert not _run(recon, "run-2", 1, []).applied
    assert not _run(recon, "run-0", -1, []).applied
    assert _run(recon, "run-x", 5, [], scope="accounts") is None
    # a resolved finding that comes back is new again
    third = _run(recon, "run-3", 2, [_f("a2", Kind.FIELD_MISMATCH)])
    assert third.statuses[("account", "a2", "field_mismatch")] == "new"


def test_acknowledged_and_accepted_findings_keep_operator_note_and_status(recon: ReconStore) -> None:
    _run(recon, "run-1", 0, [_f("a1", Kind.BALANCE_MISMATCH), _f("t1", Kind.STUCK), _f("a2", Kind.FIELD_MISMATCH)])
    [acked] = acknowledge(recon, [("account", "a1", "balance_mismatch")], note="ticket BILL-42", operator="alice")
    assert (acked.status, acked.operator, acked.note) == ("acknowledged", "alice", "ticket BILL-42")
    acknowledge(recon, [("transaction", "t1", "stuck")], note="known partner delay", operator="bob", accept=True)
    with pytest.raises(ConfigurationError, match="note"):
        acknowledge(recon, [("account", "a2", "field_mismatch")], note=" ", operator="bob")
    with pytest.raises(ConfigurationError, match="no open finding"):
        acknowledge(recon, [("account", "nope", "balance_mismatch")], note="n", operator="bob")

    second = _run(recon, "run-2", 1, [_f("a1", Kind.BALANCE_MISMATCH), _f("t1", Kind.STUCK),
                                      _f("a2", Kind.FIELD_MISMATCH)])
    assert second.statuses[("account", "a1", "balance_mismatch")] == "acknowledged"
    assert second.statuses[("transaction", "t1", "stuck")] == "accepted"
    assert second.statuses[("account", "a2", "field_mismatch")] == "open"
    rows = {r.key: r for r in list_findings(recon)}
    assert rows[("transaction", "t1", "stuck")].operator == "bob"
    [history] = notes(recon, ("transaction", "t1", "stuck"))
    assert (history["action"], history["operator"], history["note"]) == ("accept", "bob", "known partner delay")

    lifecycle = run_lifecycle(recon, "run-2")
    assert lifecycle is not None
    alert = lifecycle_alert("run-2", recon.findings("run-2"), lifecycle.statuses, lifecycle.severities, "http://ui")
    assert alert is not None
    assert "0 new, 1 still open, 0 escalated, 1 acknowledged, 1 accepted, 0 resolved" in alert.text
    assert "t1" not in str(alert.blocks) and "(NEW)" not in str(alert.blocks)
    # only accepted findings left: no message at all
    acknowledge(recon, [("account", "a1", "balance_mismatch"), ("account", "a2", "field_mismatch")], note="fine",
                operator="carol", accept=True)
    _run(recon, "run-3", 2, [_f("a1", Kind.BALANCE_MISMATCH), _f("t1", Kind.STUCK), _f("a2", Kind.FIELD_MISMATCH)])
    third = run_lifecycle(recon, "run-3")
    assert third is not None
    assert lifecycle_alert("run-3", recon.findings("run-3"), third.statuses, third.severities, "http://ui") is None


def test_the_daily_run_updates_the_lifecycle_and_alerts_only_new_findings(
        seeded: dict[str, Any], slack: SlackStandin) -> None:  # noqa: F811 (fixtures)
    first = run_job(seeded, "daily_reconciliation")
    recon: ReconStore = seeded["recon"]
    with seeded["projections"].engine.begin() as conn:  # the balance is put right between the runs
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor - 7 "
                             "WHERE account_id = 'acc-a'")
    result = run_job(seeded, "acknowledge_findings", {"ops": {"acknowledge_findings_op": {"config": {
        "keys": ["transaction/tx-2/stuck"], "note": "partner outage", "operator": "alice"}}}})
    assert result.success
    second = run_job(seeded, "daily_reconciliation")
    lifecycle = run_lifecycle(recon, second.run_id)
    assert lifecycle is not None
    assert lifecycle.statuses[("account", "acc-a", "balance_mismatch")] == "resolved"
    assert lifecycle.statuses[("account", "acc-c", "missing_projection")] == "open"
    assert lifecycle.statuses[("transaction", "tx-2", "stuck")] == "acknowledged"
    rows = {r.key: r for r in list_findings(recon)}
    assert rows[("account", "acc-c", "missing_projection")].first_seen_run == first.run_id

    with _sensor_context(seeded, second) as context:
        reconciliation_findings_sensor(context)
    [message] = slack.messages
    assert "0 new" in message["text"] and "1 acknowledged" in message["text"] and "resolved" in message["text"]
    assert "acc-c" not in str(message["blocks"])  # still open: counted, not named
