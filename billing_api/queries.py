"""The reads behind the endpoints: the same domain services the CLI calls, shaped for JSON answers.

Every read that stores a report goes through `run_reconciliation`. Full replays (reconcile-all, the
accounting equation) resume from the replay checkpoint and write the next one, so they run one at a
time; `stuck` is read-only; reading one entity runs alongside them.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from billing_api.errors import ApiError
from billing_api.schemas import (
    AccountingEquation,
    EntityReconciliation,
    FindingOut,
    LedgerIdentityOut,
    RebuildChangeOut,
    RebuildOutcome,
    ReconcileAllSummary,
    StuckTransactions,
)
from billing_domain.bootstrap import Services
from billing_domain.core.exceptions import UnknownEntityError
from billing_domain.core.findings import Finding, Kind, ReconciliationReport, Severity
from billing_domain.services.reconcile import ReconcileOptions, ReplayOutcome, new_run_id
from billing_domain.services.run_reconciliation import ReconciliationRequest, is_known, run_reconciliation
from billing_domain.services.single import reconcile_entity

SOURCE = "api"  # billing_recon.recon_run.source
FULL_REPLAY_WAIT_S = 600.0
MAX_CHANGES_SHOWN = 100  # a rebuild's entities in a `/runs/{id}` answer; the Dagster UI and the audit have more
REBUILD_OPERATIONS = ("rebuild_accounts", "rebuild_transactions")


def finding_out(finding: Finding) -> FindingOut:
    return FindingOut.model_validate(finding.to_json())


class Reads:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._full_replay = threading.Lock()

    # --- one entity ---------------------------------------------------------------------------------
    def reconcile_one(self, entity_type: str, entity_id: str) -> EntityReconciliation:
        request = ReconciliationRequest(new_run_id(SOURCE), SOURCE, f"{entity_type}:{entity_id}", (entity_type,),
                                        entity=(entity_type, entity_id))
        try:
            report = run_reconciliation(self.services.run_stores(), request, self._options()).report
        except UnknownEntityError:
            raise ApiError(404, "not_found", f"no {entity_type} {entity_id!r}: no events and no projection row"
                           ) from None
        return EntityReconciliation(entity_type=entity_type, entity_id=entity_id, match=report.is_clean,
                                    issues=[finding_out(f) for f in report.findings], run_id=report.run_id,
                                    replay_mode=str(report.stats.get("replay_mode", "full")))

    # --- a rebuild run, read back ------------------------------------------------------------------
    def rebuild_of_run(self, run_id: str) -> RebuildOutcome | None:
        """What a rebuild run did (or, a dry run, would do), from the audit record it wrote under its run id."""
        operation = self.services.recon_store.audit_operation(run_id)
        if operation is None or operation["operation"] not in REBUILD_OPERATIONS:
            return None
        return rebuild_outcome(operation)

    def exists(self, entity_type: str, entity_id: str) -> bool:
        """Known to the log or to the projections (a cheap row look-up first, then the entity's events)."""
        projections = self.services.projections
        rows: dict[str, Any] = (projections.read_accounts([entity_id]) if entity_type == "account"
                                else projections.read_transactions([entity_id]))
        return bool(rows) or is_known(self._entity_report(entity_type, entity_id), entity_type)

    def _entity_report(self, entity_type: str, entity_id: str) -> ReconciliationReport:
        s = self.services
        return reconcile_entity(s.event_store, s.projections, entity_type, entity_id, run_id=new_run_id(SOURCE),
                                options=self._options(), checkpoints=s.checkpoints)

    # --- full replays -------------------------------------------------------------------------------
    def reconcile_type(self, entity_type: str) -> ReconcileAllSummary:
        """Every account (with the ledger identities, as `billing-recon reconcile accounts`) or every transfer."""
        entity_types = ("account", "ledger") if entity_type == "account" else ("transaction",)
        report, outcome = self._full(f"{entity_type}s", entity_types, self._options(), save=True)
        rows = outcome.account_rows if entity_type == "account" else outcome.transaction_rows
        folded = outcome.replay.accounts if entity_type == "account" else outcome.replay.transactions
        own = [f for f in report.findings if f.entity_type == entity_type]
        everyone = set(rows) | set(folded) | {f.entity_id for f in own}
        wrong = {f.entity_id for f in own if f.severity != Severity.INFO}
        behind = {f.entity_id for f in own if f.kind == Kind.LAGGING} - wrong
        counts = {k: v for k, v in report.counts_by_kind().items() if v}
        return ReconcileAllSummary(entity_type=entity_type, run_id=report.run_id, total=len(everyone),
                                   matches=len(everyone) - len(wrong), mismatches=len(wrong), lagging=len(behind),
                                   by_kind=counts, findings=[finding_out(f) for f in report.findings],
                                   replay_mode=outcome.mode)

    def accounting_equation(self) -> AccountingEquation:
        report, _ = self._full("ledger", ("ledger",), self._options(), save=True)
        identities = [LedgerIdentityOut(currency=i.currency, identity=i.identity, description=i.description,
                                        left=i.left, right=i.right, holds=i.holds) for i in report.ledger]
        return AccountingEquation(run_id=report.run_id, holds=all(i.holds for i in identities),
                                  identities=identities, findings=[finding_out(f) for f in report.findings])

    def stuck(self, minutes: float | None = None) -> StuckTransactions:
        """Pending longer than `minutes`, or than the settings' threshold (BILLING_STUCK_AFTER_MINUTES)."""
        overrides = {} if minutes is None else {"stuck_after": timedelta(minutes=minutes)}
        options = ReconcileOptions.from_settings(self.services.settings, **overrides)
        minutes = options.stuck_after.total_seconds() / 60
        report, outcome = self._full("stuck", ("transaction",), options, save=False)
        stuck = [finding_out(f) for f in report.findings if f.kind == Kind.STUCK]
        cut_time = outcome.replay.cut_time
        return StuckTransactions(threshold_minutes=minutes, count=len(stuck), transactions=stuck,
                                 judged_at=outcome.judge.read_at.isoformat(),
                                 cut_time=cut_time.isoformat() if cut_time else None)

    def _full(self, scope: str, entity_types: tuple[str, ...], options: ReconcileOptions, *, save: bool
              ) -> tuple[ReconciliationReport, ReplayOutcome]:
        if not self._full_replay.acquire(timeout=FULL_REPLAY_WAIT_S):
            raise ApiError(503, "busy", "another full reconciliation is still running; retry later")
        try:
            request = ReconciliationRequest(new_run_id(SOURCE), SOURCE, scope, entity_types, record=save)
            run = run_reconciliation(self.services.run_stores(), request, options)
        finally:
            self._full_replay.release()
        assert run.outcome is not None  # a whole-log run always has its replay
        return run.report, run.outcome

    def _options(self) -> ReconcileOptions:
        return ReconcileOptions.from_settings(self.services.settings)


def rebuild_outcome(operation: dict[str, Any], limit: int = MAX_CHANGES_SHOWN) -> RebuildOutcome:
    """A rebuild's audited operation (its plan merged with its completion) as the API answers it."""
    details: dict[str, Any] = operation.get("details") or {}
    before: dict[str, Any] = operation.get("before") or {}
    after: dict[str, Any] = operation.get("after") or {}
    outcomes: dict[str, str] = details.get("outcome") or {}
    actions: dict[str, str] = details.get("actions") or {}
    ids = sorted(set(before) | set(after))  # the audit keeps the rows of every entity that is not unchanged
    changes = [RebuildChangeOut(entity_id=i, action=actions.get(i), outcome=outcomes.get(i, ""),
                                before=before.get(i), after=after.get(i)) for i in ids[:limit]]
    return RebuildOutcome(
        audit_id=operation["audit_id"], completion_id=operation.get("completion_id"),
        operation=operation["operation"], entity_type=operation["entity_type"], dry_run=operation["dry_run"],
        outcome=operation["outcome"], summary=str(details.get("summary", "")), counts=details.get("counts") or {},
        written=int(details.get("written") or 0), refused=details.get("refused") or {},
        kept=details.get("kept") or {}, changes=changes, changes_total=len(ids), changes_shown=len(changes),
        error=details.get("error"))
