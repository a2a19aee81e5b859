"""The `LifecycleStore` port's contract, on PostgreSQL and on the fake, through the lifecycle service.

What the finding lifecycle relies on: a run is applied once and never after a newer one, the status each
identity had in a run is kept, rows are listed oldest first, an operator's note stays with its finding and in
its history, and a transaction that raises leaves nothing behind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from support.lifecycle_fake import InMemoryLifecycleStore

from billing_domain.adapters.postgres.lifecycle_store import PostgresLifecycleStore
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.findings import Finding, Kind, ReconciliationReport, Severity
from billing_domain.core.lifecycle import LifecycleRow
from billing_domain.ports import LifecycleStore
from billing_domain.services.lifecycle import (
    LifecycleUpdate,
    acknowledge,
    list_findings,
    notes,
    run_lifecycle,
    update_lifecycle,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
A1 = ("account", "a1", "balance_mismatch")
A2 = ("account", "a2", "field_mismatch")
T1 = ("transaction", "t1", "stuck")


def _finding(key: tuple[str, str, str], severity: Severity = Severity.WARNING) -> Finding:
    return Finding(key[0], key[1], Kind(key[2]), severity, f"{key[2]} {key[1]}")


def _apply(store: LifecycleStore, run_id: str, day: int, findings: list[Finding]) -> LifecycleUpdate:
    report = ReconciliationReport(run_id=run_id, scope="all", started_at=T0 + timedelta(days=day),
                                  finished_at=T0 + timedelta(days=day, minutes=1), findings=findings)
    return update_lifecycle(store, report)


class LifecycleStoreContract:
    """Every `LifecycleStore` does this; `store` is an empty one."""

    @pytest.fixture
    def store(self) -> LifecycleStore:
        raise NotImplementedError

    def test_a_run_is_applied_once_and_the_statuses_it_gave_are_kept(self, store: LifecycleStore) -> None:
        assert run_lifecycle(store, "run-1") is None
        first = _apply(store, "run-1", 0, [_finding(A1), _finding(T1, Severity.CRITICAL)])
        assert first.applied and first.statuses == {A1: "new", T1: "new"}
        again = _apply(store, "run-1", 0, [])
        assert (again.applied, again.reason, again.statuses) == (False, "already applied", first.statuses)
        lifecycle = run_lifecycle(store, "run-1")
        assert lifecycle is not None
        assert lifecycle.statuses == first.statuses
        assert lifecycle.severities == {A1: "warning", T1: "critical"}

    def test_a_run_older_than_the_last_applied_is_skipped(self, store: LifecycleStore) -> None:
        _apply(store, "run-2", 1, [_finding(A1)])
        older = _apply(store, "run-1", 0, [_finding(A2)])
        assert (older.applied, older.reason) == (False, "a newer run is already applied")
        assert run_lifecycle(store, "run-1") is None

    def test_an_empty_first_run_is_applied_with_no_statuses(self, store: LifecycleStore) -> None:
        assert _apply(store, "run-1", 0, []).applied
        assert run_lifecycle(store, "run-1") is not None
        assert _apply(store, "run-1", 0, []).statuses == {}

    def test_findings_move_from_new_to_open_escalated_and_resolved(self, store: LifecycleStore) -> None:
        _apply(store, "run-1", 0, [_finding(A1), _finding(T1), _finding(A2)])
        second = _apply(store, "run-2", 1, [_finding(A1), _finding(T1, Severity.CRITICAL)])
        assert second.statuses == {A1: "open", T1: "escalated", A2: "resolved"}
        rows = {r.key: r for r in list_findings(store)}
        assert (rows[A1].first_seen_run, rows[A1].last_seen_run, rows[A1].runs_seen) == ("run-1", "run-2", 2)
        assert rows[A1].first_seen_at == T0 + timedelta(minutes=1)
        assert (rows[A2].resolved_run, rows[A2].resolved_at) == ("run-2", T0 + timedelta(days=1, minutes=1))
        assert _apply(store, "run-3", 2, [_finding(A2)]).statuses[A2] == "new"  # back after it was resolved

    def test_rows_are_listed_oldest_first_by_status_up_to_the_limit(self, store: LifecycleStore) -> None:
        _apply(store, "run-1", 0, [_finding(T1), _finding(A2)])
        _apply(store, "run-2", 1, [_finding(T1), _finding(A2), _finding(A1)])
        assert [r.key for r in list_findings(store)] == [A2, T1, A1]
        assert [r.key for r in list_findings(store, "new")] == [A1]
        assert [r.key for r in list_findings(store, limit=1)] == [A2]
        with pytest.raises(ConfigurationError, match="status"):
            list_findings(store, "closed")

    def test_a_note_stays_with_its_finding_and_in_its_history(self, store: LifecycleStore) -> None:
        _apply(store, "run-1", 0, [_finding(A1), _finding(T1)])
        [acked] = acknowledge(store, [A1], note=" ticket BILL-42 ", operator="alice")
        assert (acked.status, acked.note, acked.operator) == ("acknowledged", "ticket BILL-42", "alice")
        acknowledge(store, [A1], note="tolerated", operator="bob", accept=True)
        assert [(n["action"], n["note"], n["operator"]) for n in notes(store, A1)] == [
            ("acknowledge", "ticket BILL-42", "alice"), ("accept", "tolerated", "bob")]
        assert notes(store, T1) == []
        second = _apply(store, "run-2", 1, [_finding(A1), _finding(T1)])
        assert second.statuses == {A1: "accepted", T1: "open"}
        assert {r.key: r.note for r in list_findings(store)} == {A1: "tolerated", T1: None}

    def test_a_resolved_or_unknown_finding_cannot_be_acknowledged(self, store: LifecycleStore) -> None:
        _apply(store, "run-1", 0, [_finding(A1)])
        _apply(store, "run-2", 1, [])
        with pytest.raises(ConfigurationError, match="no open finding account/a1"):
            acknowledge(store, [A1], note="n", operator="o")
        with pytest.raises(ConfigurationError, match="no open finding"):
            acknowledge(store, [A2], note="n", operator="o")
        assert notes(store, A1) == []

    def test_a_transaction_that_raises_writes_nothing(self, store: LifecycleStore) -> None:
        row = LifecycleRow(*A1, "new", "warning", "d", "run-x", T0, "run-x", T0, 1, None, None, None, None, None,
                           "run-x")
        with pytest.raises(RuntimeError), store.lifecycle_transaction() as tx:
            tx.save_run("run-x", T0, [row], {"new": 1})
            raise RuntimeError("the caller failed after writing")
        assert run_lifecycle(store, "run-x") is None and list_findings(store) == []

    def test_rows_of_a_transaction_are_the_unresolved_and_the_resolved_asked_for(self, store: LifecycleStore) -> None:
        _apply(store, "run-1", 0, [_finding(A1), _finding(A2)])
        _apply(store, "run-2", 1, [_finding(A1)])
        with store.lifecycle_transaction() as tx:
            assert set(tx.rows([])) == {A1}
            assert set(tx.rows([A2, T1])) == {A1, A2}
            assert tx.latest_applied_at() == T0 + timedelta(days=1, minutes=1)

    def test_a_row_read_is_a_value_changed_only_by_saving_it(self, store: LifecycleStore) -> None:
        _apply(store, "run-1", 0, [_finding(A1)])
        with store.lifecycle_transaction() as tx:
            tx.rows([])[A1].status = "resolved"  # as the service does before it saves
        assert [r.status for r in list_findings(store)] == ["new"]
        list_findings(store)[0].status = "resolved"
        assert [r.status for r in list_findings(store)] == ["new"]


class TestPostgresLifecycleStore(LifecycleStoreContract):
    @pytest.fixture
    def store(self, contract_engine: Engine) -> LifecycleStore:
        return PostgresLifecycleStore(contract_engine)


class TestInMemoryLifecycleStore(LifecycleStoreContract):
    @pytest.fixture
    def store(self) -> LifecycleStore:
        return InMemoryLifecycleStore()
