"""The finding lifecycle: a finding keeps its identity (entity_type, entity_id, kind) across runs.

After each full reconciliation (scope `all`) every identity gets a status:

- `new`: first seen in this run (or seen again after it was resolved);
- `open`: seen before and still there (first_seen, last_seen, days open);
- `escalated`: still there with a higher severity than in the previous run (an acknowledgement or
  acceptance made at the lower severity no longer holds);
- `acknowledged` / `accepted`: an operator said so, with a note; it stays so while the finding persists.
  Acknowledged means "someone is on it"; accepted means "known and tolerated": never alerted;
- `resolved`: absent from the latest full run.

Each full run is applied once, in order (an older run never overwrites a newer one), and the status each
identity had in that run is kept (`finding_lifecycle_run`), so the alert of a run speaks of that run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.findings import SEVERITY_RANK, Finding, ReconciliationReport, Severity
from billing_domain.core.lifecycle import (
    ACCEPTED,
    ACKNOWLEDGED,
    ESCALATED,
    NEW,
    NOTED,
    OPEN,
    RESOLVED,
    STATUSES,
    Key,
    LifecycleRow,
    RunLifecycle,
    count_statuses,
)
from billing_domain.ports import LifecycleStore, ReportsWithLifecycle

__all__ = ["ACCEPTED", "ACKNOWLEDGED", "ESCALATED", "FULL_SCOPE", "NEW", "OPEN", "RESOLVED", "STATUSES", "Key",
           "LifecycleRow", "LifecycleUpdate", "RunLifecycle", "acknowledge", "attention_key", "by_attention",
           "keys_of_finding_ids", "list_findings", "notes", "on_full_reconciliation", "run_lifecycle", "sync_latest",
           "update_lifecycle"]

FULL_SCOPE = "all"


@dataclass(slots=True)
class LifecycleUpdate:
    """What one full run changed: the status of every identity it saw or resolved."""

    run_id: str
    applied: bool
    reason: str = ""
    statuses: dict[Key, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return count_statuses(self.statuses)

    def keys_with(self, status: str) -> list[Key]:
        return sorted(k for k, s in self.statuses.items() if s == status)


def on_full_reconciliation(lifecycle: LifecycleStore, report: ReconciliationReport) -> LifecycleUpdate | None:
    """The hook for every caller of a reconciliation: call it after `save_report`. Ignores partial scopes."""
    if report.scope != FULL_SCOPE:
        return None
    return update_lifecycle(lifecycle, report)


def update_lifecycle(lifecycle: LifecycleStore, report: ReconciliationReport) -> LifecycleUpdate:
    """Apply one full run to the lifecycle table (idempotent per run; an older run than the last applied is skipped)."""
    finished = report.finished_at or datetime.now(UTC)
    current = _worst_per_key(report.findings)
    with lifecycle.lifecycle_transaction() as tx:
        applied = tx.applied_statuses(report.run_id)
        if applied is not None:
            return LifecycleUpdate(report.run_id, False, "already applied", applied)
        latest = tx.latest_applied_at()
        if latest is not None and latest > finished:
            return LifecycleUpdate(report.run_id, False, "a newer run is already applied")
        existing = tx.rows(list(current))
        rows, statuses = _transition(report.run_id, finished, current, existing, set(report.entity_types))
        tx.save_run(report.run_id, finished, rows, count_statuses(statuses))
    return LifecycleUpdate(report.run_id, True, statuses=statuses)


def _worst_per_key(findings: Iterable[Finding]) -> dict[Key, Finding]:
    worst: dict[Key, Finding] = {}
    for f in findings:
        if f.key not in worst or SEVERITY_RANK[f.severity] < SEVERITY_RANK[worst[f.key].severity]:
            worst[f.key] = f
    return worst


def _transition(run_id: str, at: datetime, current: dict[Key, Finding], existing: dict[Key, LifecycleRow],
                entity_types: set[str]) -> tuple[list[LifecycleRow], dict[Key, str]]:
    rows: list[LifecycleRow] = []
    for key, f in current.items():
        before = existing.get(key)
        if before is None or before.status == RESOLVED:
            rows.append(LifecycleRow(*key, NEW, f.severity.value, f.detail, run_id, at, run_id, at, 1, None, None,
                                     None, None, None, run_id))
            continue
        rose = SEVERITY_RANK[f.severity] < SEVERITY_RANK[Severity(before.severity)]
        status = ESCALATED if rose else before.status if before.status in NOTED else OPEN
        keep_note = status in NOTED
        rows.append(LifecycleRow(*key, status, f.severity.value, f.detail, before.first_seen_run,
                                 before.first_seen_at, run_id, at, before.runs_seen + 1, None, None,
                                 before.note if keep_note else None, before.operator if keep_note else None,
                                 before.noted_at if keep_note else None, run_id))
    for key, before in existing.items():
        if key not in current and before.status != RESOLVED and key[0] in entity_types:
            before.status, before.resolved_run, before.resolved_at, before.updated_run = RESOLVED, run_id, at, run_id
            rows.append(before)
    return rows, {r.key: r.status for r in rows}


# --- reads for alerts and operators ----------------------------------------------------------------
def run_lifecycle(lifecycle: LifecycleStore, run_id: str) -> RunLifecycle | None:
    """The lifecycle of one applied run, or None when that run was never applied."""
    return lifecycle.run_lifecycle(run_id)


def list_findings(lifecycle: LifecycleStore, status: str | None = None, limit: int = 1_000) -> list[LifecycleRow]:
    if status is not None and status not in STATUSES:
        raise ConfigurationError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    return lifecycle.lifecycle_rows(status, limit)


# The order a person reads the lifecycle in: what wants attention first (new, escalated, still open), then what
# an operator has seen to, then what is resolved; within a status the worst severity first, then the longest open.
ATTENTION_ORDER = (NEW, ESCALATED, OPEN, ACKNOWLEDGED, ACCEPTED, RESOLVED)
_ATTENTION_RANK = {status: rank for rank, status in enumerate(ATTENTION_ORDER)}
_SEVERITY_RANK = {severity.value: rank for severity, rank in SEVERITY_RANK.items()}


def attention_key(row: LifecycleRow) -> tuple[int, int, datetime, str, str, str]:
    """Status (new first), then severity (critical first), then first seen (longest open first), then identity."""
    return (_ATTENTION_RANK.get(row.status, len(ATTENTION_ORDER)),
            _SEVERITY_RANK.get(row.severity, len(_SEVERITY_RANK)), row.first_seen_at, *row.key)


def by_attention(rows: Iterable[LifecycleRow]) -> list[LifecycleRow]:
    """The rows in `attention_key` order (the store keeps them in first-seen order)."""
    return sorted(rows, key=attention_key)


def keys_of_finding_ids(lifecycle: LifecycleStore, finding_ids: Sequence[int]) -> list[Key]:
    """The identities of stored findings (billing_recon.finding.finding_id), for acknowledging by id."""
    found = lifecycle.finding_keys(finding_ids)
    missing = sorted(set(finding_ids) - set(found))
    if missing:
        raise ConfigurationError(f"ids: no stored finding with id {', '.join(map(str, missing[:10]))}")
    return sorted(set(found.values()))


def acknowledge(lifecycle: LifecycleStore, keys: Sequence[Key], *, note: str, operator: str,
                accept: bool = False) -> list[LifecycleRow]:
    """Mark open findings acknowledged (or accepted) with the operator's note; refuses unknown or resolved ones."""
    if not note or not note.strip():
        raise ConfigurationError("note: say why (it is kept with the finding); it is empty")
    if not operator or not operator.strip():
        raise ConfigurationError("operator: name who acknowledges; it is empty")
    if not keys:
        raise ConfigurationError("keys / ids: name at least one finding")
    status, action = (ACCEPTED, "accept") if accept else (ACKNOWLEDGED, "acknowledge")
    with lifecycle.lifecycle_transaction() as tx:
        found = tx.rows(keys)
        unknown = [k for k in keys if k not in found or found[k].status == RESOLVED]
        if unknown:
            raise ConfigurationError("keys: no open finding " + ", ".join("/".join(k) for k in unknown[:10]))
        tx.note(keys, status=status, action=action, note=note.strip(), operator=operator.strip(),
                at=datetime.now(UTC))
        updated = tx.rows(keys)
    return [updated[k] for k in keys]


def notes(lifecycle: LifecycleStore, key: Key) -> list[dict[str, Any]]:
    """Every acknowledge / accept ever recorded for one identity, oldest first."""
    return lifecycle.lifecycle_notes(key)


def sync_latest(recon_store: ReportsWithLifecycle) -> LifecycleUpdate | None:
    """Apply the newest stored full run if it was not applied yet (runs saved by callers without the hook)."""
    run_id = recon_store.latest_run_id()
    report = recon_store.stored_report(run_id) if run_id is not None else None
    if report is None or report.scope != FULL_SCOPE:
        return None
    return update_lifecycle(recon_store, report)
