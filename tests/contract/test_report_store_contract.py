"""The `ReportStore` port's contract: stored reports and the audit trail, on PostgreSQL and on the fake.

What `run_reconciliation`, the readers of reports (CLI, API, alerts) and the audited operations rely on: a run's
findings kept under its run id as stored (values as JSON), a second save replacing only its own scope's
findings, the newest finished full run found per scope, and an append-only audit whose pending records merge
with their completion.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest
from sqlalchemy.engine import Engine
from support.fakes import InMemoryReportStore

from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.cut import Cut
from billing_domain.core.findings import Finding, Kind, LedgerIdentity, ReconciliationReport
from billing_domain.core.operators import Operator
from billing_domain.ports import PENDING, AuditLookup, AuditRecord, ReportStore

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPERATOR = Operator("ada", "cli_option")


def finding(entity_type: str, entity_id: str, kind: Kind = Kind.BALANCE_MISMATCH, **values: object) -> Finding:
    return Finding.of(entity_type, entity_id, kind, f"{kind.value} on {entity_id}", **values)


def report(run_id: str, findings: list[Finding], *, scope: str = "all", finished: datetime | None = AT,
           entity_types: tuple[str, ...] = ("account", "transaction", "ledger")) -> ReconciliationReport:
    cut = Cut({("t.account-events", 0): 0}, {("t.account-events", 0): 4})
    return ReconciliationReport(run_id, scope, started_at=AT - timedelta(minutes=1), finished_at=finished, cut=cut,
                                findings=findings, ledger=[LedgerIdentity("EUR", "balanced", "credits = debits", 5, 5)],
                                stats={"accounts": 2}, entity_types=entity_types)


def audit(operation: str = "rebuild_accounts", *, outcome: str = "applied", completes: int | None = None,
          details: dict[str, object] | None = None) -> AuditRecord:
    return AuditRecord(operator=OPERATOR, reason="repair after the incident", operation=operation, dry_run=False,
                       entity_type="account", entity_ids=["acc-a", "acc-b"], outcome=outcome, run_id="run-1",
                       cut={"t:0": {"start": 0, "end": 4}}, before={"acc-a": {"balance_minor": 1}},
                       after={"acc-a": {"balance_minor": 2}}, details=details, completes=completes)


class ReportStoreContract:
    """Every `ReportStore` does this; `store` holds no report (its audit may hold other tests' records)."""

    @pytest.fixture
    def store(self) -> ReportStore:
        raise NotImplementedError

    # --- reports ------------------------------------------------------------------------------------------
    def test_a_runs_findings_are_kept_under_its_run_id_in_order(self, store: ReportStore) -> None:
        findings = [finding("account", "acc-b"), finding("account", "acc-a", Kind.VERSION_AHEAD),
                    finding("transaction", "tx-1", Kind.STUCK, topic="t", partition=1, offset=7, event_id="e-7")]
        store.save_report(report("run-1", findings), source="cli")
        store.save_report(report("run-2", [finding("account", "acc-z")]), source="cli")
        assert store.run_exists("run-1") and not store.run_exists("run-3")
        assert store.findings("run-1") == findings
        assert store.findings("run-1", "transaction") == findings[2:]
        assert store.findings("run-3") == []

    def test_a_findings_values_are_stored_as_json(self, store: ReportStore) -> None:
        stored = finding("account", "acc-a", expected={"balance_minor": 5, "at": AT}, actual={"balance_minor": 4})
        store.save_report(report("run-1", [stored]), source="dagster")
        [back] = store.findings("run-1")
        assert back.expected == {"balance_minor": 5, "at": AT.isoformat()}  # a datetime comes back as its ISO text
        assert back.actual == {"balance_minor": 4}
        assert (back.kind, back.severity) == (stored.kind, stored.severity)

    def test_a_second_save_under_a_run_id_replaces_only_its_scopes_findings(self, store: ReportStore) -> None:
        store.save_report(report("run-1", [finding("account", "acc-a"), finding("transaction", "tx-1")]),
                          source="dagster")
        store.save_report(report("run-1", [finding("account", "acc-b")], entity_types=("account",)),
                          source="dagster")
        assert [(f.entity_type, f.entity_id) for f in store.findings("run-1")] == [
            ("transaction", "tx-1"), ("account", "acc-b")]
        store.save_report(report("run-1", [], entity_types=("transaction",)), source="dagster")  # now clean
        assert [f.entity_id for f in store.findings("run-1")] == ["acc-b"]

    def test_the_latest_run_is_the_newest_finished_full_run_of_the_scope(self, store: ReportStore) -> None:
        assert store.latest_run_id() is None
        store.save_report(report("old", [], finished=AT), source="cli")
        store.save_report(report("new", [], finished=AT + timedelta(hours=1)), source="cli")
        store.save_report(report("unfinished", [], finished=None), source="cli")
        store.save_report(report("one-entity", [], scope="account:acc-a", finished=AT + timedelta(hours=3)),
                          source="cli")
        assert store.latest_run_id() == "new"
        store.save_report(report("accounts-only", [], scope="accounts", finished=AT + timedelta(hours=2)),
                          source="dagster")
        assert store.latest_run_id() == "new"
        assert store.latest_run_id("account") == "accounts-only"
        assert store.latest_run_id("transaction") == "new"

    def test_saving_a_run_again_moves_it_to_its_new_finish(self, store: ReportStore) -> None:
        store.save_report(report("a", [], finished=AT), source="cli")
        store.save_report(report("b", [], finished=AT + timedelta(hours=1)), source="cli")
        store.save_report(report("a", [], finished=AT + timedelta(hours=2)), source="cli")
        assert store.latest_run_id() == "a"

    # --- audit --------------------------------------------------------------------------------------------
    def test_an_audit_record_is_appended_and_read_back_newest_first(self, store: ReportStore) -> None:
        first = store.write_audit(audit(details={"rows": 2}))
        second = store.write_audit(audit("rebuild_transactions", outcome="refused"))
        assert second > first
        newest, older = store.audit_records(2)
        assert (newest["audit_id"], older["audit_id"]) == (second, first)
        assert len(store.audit_records(1)) == 1
        assert older["actor"] == "ada" and older["operator_auth"] == "cli_option"
        assert (older["operation"], older["outcome"], older["run_id"], older["dry_run"]) == (
            "rebuild_accounts", "applied", "run-1", False)
        assert older["entity_ids"] == ["acc-a", "acc-b"]
        assert older["cut"] == {"t:0": {"start": 0, "end": 4}}
        assert (older["before"], older["after"]) == ({"acc-a": {"balance_minor": 1}}, {"acc-a": {"balance_minor": 2}})
        assert older["details"] == {"rows": 2, "operator": OPERATOR.to_json()}
        assert older["completes"] is None and isinstance(older["recorded_at"], datetime)

    def test_a_pending_record_and_its_completion_are_one_operation(self, store: ReportStore) -> None:
        pending = store.write_audit(audit(outcome=PENDING, details={"plan": [1, 2]}))
        done = store.write_audit(audit(outcome="applied", completes=pending, details={"written": 2}))
        interrupted = store.write_audit(audit("rebuild_transactions", outcome=PENDING))
        newest, operation = store.audit_operations(2)
        assert (newest["audit_id"], newest["outcome"]) == (interrupted, PENDING)
        assert operation["audit_id"] == pending and operation["completion_id"] == done
        assert operation["outcome"] == "applied"
        assert operation["details"] == {"plan": [1, 2], "written": 2, "operator": OPERATOR.to_json()}

    def test_the_operation_of_a_run_reads_back_by_its_run_id(self, store: ReportStore) -> None:
        """The admin API's `/runs/{id}`: a rebuild run's plan and outcome, by the Dagster run's id."""
        run, other = f"run-{uuid.uuid4().hex}", f"run-{uuid.uuid4().hex}"
        pending = store.write_audit(replace(audit(outcome=PENDING, details={"plan": 1}), run_id=run))
        store.write_audit(replace(audit(outcome="dry_run"), run_id=other))
        done = store.write_audit(replace(audit(outcome="applied", completes=pending, details={"written": 2}),
                                         run_id=run))
        operation = store.audit_operation(run)
        assert operation is not None
        assert (operation["audit_id"], operation["completion_id"], operation["outcome"]) == (pending, done, "applied")
        assert operation["details"] == {"plan": 1, "written": 2, "operator": OPERATOR.to_json()}
        assert operation["before"] == {"acc-a": {"balance_minor": 1}}
        assert store.audit_operation(other)["outcome"] == "dry_run"  # type: ignore[index]
        assert store.audit_operation(f"run-{uuid.uuid4().hex}") is None

    def test_only_a_pending_record_of_the_same_operation_can_be_completed(self, store: ReportStore) -> None:
        applied = store.write_audit(audit(outcome="applied"))
        pending = store.write_audit(audit(outcome=PENDING))
        before = store.audit_records(1)[0]["audit_id"]
        with pytest.raises(Exception):  # noqa: B017  the port names no error type (see the report)
            store.write_audit(audit(outcome="applied", completes=applied))
        with pytest.raises(Exception):  # noqa: B017
            store.write_audit(audit("rebuild_transactions", outcome="applied", completes=pending))
        assert store.audit_records(1)[0]["audit_id"] == before  # nothing appended


class ReadBack(ReportStore, AuditLookup, Protocol):
    """The reads of `ports.ReportsWithLifecycle` and `ports.AuditLookup` beyond `ReportStore`."""

    def stored_report(self, run_id: str) -> ReconciliationReport | None: ...


class ReadBackContract:
    """A stored run and an audit record read back by their ids (the lifecycle sync, the saga recovery's plan)."""

    @pytest.fixture
    def store(self) -> ReadBack:
        raise NotImplementedError

    def test_a_stored_run_reads_back_with_its_scope_times_and_findings(self, store: ReadBack) -> None:
        findings = [finding("account", "acc-a"), finding("transaction", "tx-1", Kind.STUCK)]
        store.save_report(report("run-1", findings, scope="accounts"), source="api")
        back = store.stored_report("run-1")
        assert back is not None
        assert (back.run_id, back.scope, back.started_at, back.finished_at) == (
            "run-1", "accounts", AT - timedelta(minutes=1), AT)
        assert back.findings == findings
        assert store.stored_report("run-2") is None

    def test_an_audit_record_reads_back_by_its_id(self, store: ReadBack) -> None:
        audit_id = store.write_audit(audit("saga_recovery", outcome="dry_run", details={"plan": {"actions": []}}))
        row = store.audit_record(audit_id)
        assert row is not None and row == store.audit_records(1)[0]
        assert (row["operation"], row["details"]["plan"]) == ("saga_recovery", {"actions": []})
        assert store.audit_record(audit_id + 1_000) is None


class TestPostgresReportStore(ReportStoreContract, ReadBackContract):
    @pytest.fixture
    def store(self, contract_engine: Engine) -> ReadBack:
        store: ReadBack = ReconStore(contract_engine)
        return store


class TestInMemoryReportStore(ReportStoreContract, ReadBackContract):
    @pytest.fixture
    def store(self) -> ReadBack:
        store: ReadBack = InMemoryReportStore()
        return store
