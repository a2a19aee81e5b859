"""Shadow rebuild: every account and transaction rebuilt from one cut into shadow tables, diffed against the
live tables, and swapped in only on approval.

1. Under both rebuild advisory locks (so it never runs alongside a rebuild), replay the whole log (the live
   rows are read first, as every reconciliation does) and COPY the replayed state into
   `billing_recon.shadow_account_projection` / `shadow_transaction_projection` (the contract's columns).
   Entities whose stream is corrupt or whose events break a rule are left out: their live rows stay as they are.
2. Diff shadow against live with one full outer join per table: rows to insert, repair (same version, other
   content), catch up (live behind), keep (live newer: written by the live projector since the cut), reset
   (live claimed versions the log does not have), orphans and refused rows, and their counts.
3. On approval, swap in one short transaction: only the rows that differ are written, by a version-guarded
   upsert (`live.version < shadow.version`, or equal versions with other content), so a live write that
   arrived meanwhile is carried over, never lost and never moved back. Rows seen ahead of the log are reset
   by compare-and-set on the exact row seen; orphans are deleted only when asked.
4. Afterwards everything is reconciled again; the whole operation is audited (operation `shadow_rebuild`):
   a diff by one row (`dry_run`); a swap by a `pending` row with the diff, appended before the swap's
   transaction starts, and a completion row (`completes` = its id) after the verification. A pending row
   with no completion is a swap that was interrupted: it committed all of its diff or none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.findings import REBUILDABLE_KINDS, Kind
from billing_domain.core.operators import Operator, resolve
from billing_domain.ports import PENDING, AuditRecord, EventLog, ReportStore, ShadowPlan, ShadowProjections
from billing_domain.services.crashpoints import reached
from billing_domain.services.reconcile import ReplayOutcome, build_report, new_run_id, replay_all

OPERATION = "shadow_rebuild"
SAMPLE_ROWS = 200
__all__ = ["OPERATION", "SAMPLE_ROWS", "ShadowPlan", "ShadowResult", "build_shadow", "diff_markdown", "diff_shadow",
           "ensure_shadow_tables", "shadow_rebuild", "swap"]


@dataclass(slots=True)
class ShadowResult:
    run_id: str
    approved: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> action -> rows
    sample: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    kept_newer_live: dict[str, int] = field(default_factory=dict)
    remaining: list[dict[str, Any]] = field(default_factory=list)  # rebuildable findings left after the swap
    not_for_a_rebuild: list[dict[str, Any]] = field(default_factory=list)
    cut: dict[str, Any] = field(default_factory=dict)
    changed_ids: dict[str, list[str]] = field(default_factory=dict)  # table -> every id the swap may write
    audit_id: int | None = None  # the diff's row: the dry run's, or the pending row of a swap
    completion_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "approved": self.approved, "counts": self.counts, "sample": self.sample,
                "refused": self.refused, "written": self.written, "kept_newer_live": self.kept_newer_live,
                "remaining": self.remaining, "not_for_a_rebuild": self.not_for_a_rebuild, "audit_id": self.audit_id,
                "completion_id": self.completion_id}


def shadow_rebuild(event_store: EventLog, projections: ShadowProjections, recon_store: ReportStore, *,
                   reason: str, actor: str = "", operator: Operator | None = None, approve: bool = False,
                   delete_orphans: bool = False, run_id: str | None = None,
                   progress: Callable[[int], None] | None = None) -> ShadowResult:
    """Build the shadow, diff it, and (with `approve`) swap it in. Audited either way, under both rebuild locks
    from the replay to the last audit row."""
    if not reason or not reason.strip():
        raise ConfigurationError("reason: say why you rebuild (it goes to the audit trail); it is empty")
    who = resolve(operator, actor)
    result = ShadowResult(run_id or new_run_id("shadow"), approve)
    with projections.locks.rebuild("account"), projections.locks.rebuild("transaction"):
        reached("shadow.locked")
        try:
            plan = _build_and_diff(event_store, projections, result, progress)
            if not approve:
                result.audit_id = recon_store.write_audit(_audit(result, who, reason, "dry_run"))
                return result
            result.audit_id = recon_store.write_audit(_audit(result, who, reason, PENDING))
            reached("shadow.pending_audited")
            swap(projections, plan, result, delete_orphans=delete_orphans)
            reached("shadow.swapped")
            _verify(event_store, projections, result)
        except Exception as exc:
            recon_store.write_audit(_audit(result, who, reason, "failed", str(exc)))
            raise
        reached("shadow.verified")
        result.completion_id = recon_store.write_audit(_audit(result, who, reason, "applied" if not result.remaining
                                                              else "partial"))
        reached("shadow.audited")
    return result


def _build_and_diff(event_store: EventLog, projections: ShadowProjections, result: ShadowResult,
                    progress: Callable[[int], None] | None) -> ShadowPlan:
    ensure_shadow_tables(projections)
    outcome = replay_all(event_store, projections, progress=progress)
    result.cut = outcome.cut.to_json()
    plan = build_shadow(projections, outcome)
    result.refused = plan.refused
    diff_shadow(projections, plan, result)
    reached("shadow.diffed")
    return plan


def ensure_shadow_tables(projections: ShadowProjections) -> None:
    """The shadow tables beside the live ones (the migration makes them when both schemas share a database)."""
    projections.shadow.ensure()


def build_shadow(projections: ShadowProjections, outcome: ReplayOutcome) -> ShadowPlan:
    """Fill the (emptied) shadow tables with the replayed state of every trustworthy entity."""
    replay, plan = outcome.replay, ShadowPlan()
    corrupt = list(replay.corrupt)
    accounts = _plan_table(plan, "account", corrupt, replay.accounts, outcome.account_rows)
    transactions = _plan_table(plan, "transaction", corrupt, replay.transactions, outcome.transaction_rows)
    plan.shadow_rows = projections.shadow.fill(accounts, transactions)
    return plan


def _plan_table(plan: ShadowPlan, entity_type: str, corrupt: list[tuple[str, str]], aggregates: Mapping[str, Any],
                rows: Mapping[str, Any]) -> list[Any]:
    """One table's refused ids (with why), orphans and rows ahead of the log, into `plan`; the states to copy."""
    refused = {i: "refused: the event stream is corrupt" for (t, i) in corrupt if t == entity_type}
    refused |= {i: f"refused: the events break a rule ({a.violations[0]})" for i, a in aggregates.items()
                if a.violations and i not in refused}
    heads = {i: a.state() for i, a in sorted(aggregates.items()) if i not in refused and a.version > 0}
    plan.refused[entity_type] = refused
    plan.orphans[entity_type] = sorted(i for i in rows if i not in heads and i not in refused)
    plan.ahead[entity_type] = [(rows[i], heads[i]) for i in sorted(rows)
                               if i in heads and rows[i].version > heads[i].version]
    return list(heads.values())


def diff_shadow(projections: ShadowProjections, plan: ShadowPlan, result: ShadowResult) -> None:
    """Counts per action and the first rows that would change, per table."""
    for entity_type, diff in projections.shadow.diff(plan, SAMPLE_ROWS).items():
        result.counts[entity_type] = diff.counts
        result.sample[entity_type] = diff.sample
        result.changed_ids[entity_type] = diff.changed_ids


def swap(projections: ShadowProjections, plan: ShadowPlan, result: ShadowResult, *, delete_orphans: bool) -> None:
    """Apply the shadow to the live tables in one transaction; a live row of a higher version always wins."""
    for entity_type, swapped in projections.shadow.swap(plan, delete_orphans=delete_orphans).items():
        result.written[entity_type] = swapped.written
        result.kept_newer_live[entity_type] = swapped.kept_newer_live


def _verify(event_store: EventLog, projections: ShadowProjections, result: ShadowResult) -> None:
    """Reconcile again: what a rebuild can fix and is still wrong, and what no rebuild may fix."""
    outcome = replay_all(event_store, projections)
    report = build_report(outcome, run_id=result.run_id, scope="verify:shadow", started_at=datetime.now(UTC),
                          entity_types=("account", "transaction"))
    fixable = REBUILDABLE_KINDS - {Kind.LAGGING}
    result.remaining = [f.to_json() for f in report.findings if f.kind in fixable]
    result.not_for_a_rebuild = [f.to_json() for f in report.findings
                                if f.kind not in fixable and f.kind != Kind.LAGGING]


def diff_markdown(result: ShadowResult, limit: int = 50) -> str:
    """The diff as markdown: counts per table and action, then the first rows that would change."""
    lines = ["| table | action | rows |", "| --- | --- | --- |"]
    lines += [f"| {t} | {a} | {n} |" for t, counts in result.counts.items() for a, n in counts.items()]
    rows = [(t, r) for t, sample in result.sample.items() for r in sample][:limit]
    if rows:
        lines += ["", "| table | id | action | live | shadow |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {t} | `{r['id']}` | {r['action']} | {_differing(r['live'], r['shadow'])} |" for t, r in rows]
    if result.approved:
        lines += ["", f"written: {result.written}; live rows newer than the shadow kept: {result.kept_newer_live}; "
                  f"still to repair after the swap: {len(result.remaining)}"]
    return "\n".join(lines)


def _differing(live: dict[str, Any] | None, shadow: dict[str, Any] | None) -> str:
    if live is None or shadow is None:
        return "(no row) | row" if live is None else "row | (no row)"
    keys = [c for c in shadow if live.get(c) != shadow.get(c) and c not in ("updated_at", "last_event_id")]
    return (", ".join(f"{c}={live.get(c)}" for c in keys) or "same") + " | " + (
        ", ".join(f"{c}={shadow.get(c)}" for c in keys) or "same")


def _audit(result: ShadowResult, operator: Operator, reason: str, outcome: str, error: str | None = None
           ) -> AuditRecord:
    """The diff (its first rows' before and after, its counts); a completion or failure also names the pending row
    it completes (the diff stays in that row)."""
    completes = result.audit_id if outcome != PENDING else None
    changed = [] if completes is not None else [
        (t, r) for t, sample in result.sample.items() for r in sample if r["action"] != "unchanged"]
    return AuditRecord(
        operator=operator, reason=reason, operation=OPERATION, dry_run=not result.approved, entity_type="all",
        completes=completes, entity_ids=[f"{t}:{i}" for t, ids in result.changed_ids.items() for i in ids],
        outcome=outcome, run_id=result.run_id, cut=result.cut,
        before={f"{t}:{r['id']}": r["live"] for t, r in changed},
        after={f"{t}:{r['id']}": r["shadow"] for t, r in changed},
        details={"counts": result.counts, "written": result.written, "kept_newer_live": result.kept_newer_live,
                 "refused": result.refused, "remaining": result.remaining[:SAMPLE_ROWS],
                 **({"error": error} if error else {})})
