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

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from billing_domain.adapters.postgres.recon_store import SCHEMA, ReconStore
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.findings import SEVERITY_RANK, Finding, ReconciliationReport, Severity

NEW, OPEN, ESCALATED, RESOLVED, ACKNOWLEDGED, ACCEPTED = (
    "new", "open", "escalated", "resolved", "acknowledged", "accepted")
STATUSES = (NEW, OPEN, ESCALATED, ACKNOWLEDGED, ACCEPTED, RESOLVED)
FULL_SCOPE = "all"
Key = tuple[str, str, str]
_COLUMNS = ("entity_type", "entity_id", "kind", "status", "severity", "detail", "first_seen_run", "first_seen_at",
            "last_seen_run", "last_seen_at", "runs_seen", "resolved_run", "resolved_at", "note", "operator",
            "noted_at", "updated_run")


@dataclass(slots=True)
class LifecycleRow:
    entity_type: str
    entity_id: str
    kind: str
    status: str
    severity: str
    detail: str
    first_seen_run: str
    first_seen_at: datetime
    last_seen_run: str
    last_seen_at: datetime
    runs_seen: int
    resolved_run: str | None
    resolved_at: datetime | None
    note: str | None
    operator: str | None
    noted_at: datetime | None
    updated_run: str

    @property
    def key(self) -> Key:
        return (self.entity_type, self.entity_id, self.kind)

    @property
    def days_open(self) -> float:
        end = self.resolved_at if self.status == RESOLVED and self.resolved_at else datetime.now(UTC)
        return round((end - self.first_seen_at).total_seconds() / 86_400, 2)

    def to_json(self) -> dict[str, Any]:
        values = {c: getattr(self, c) for c in _COLUMNS}
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()} | {
            "days_open": self.days_open}


@dataclass(slots=True)
class LifecycleUpdate:
    """What one full run changed: the status of every identity it saw or resolved."""

    run_id: str
    applied: bool
    reason: str = ""
    statuses: dict[Key, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status in self.statuses.values():
            counts[status] += 1
        return counts

    def keys_with(self, status: str) -> list[Key]:
        return sorted(k for k, s in self.statuses.items() if s == status)


def on_full_reconciliation(recon_store: ReconStore, report: ReconciliationReport) -> LifecycleUpdate | None:
    """The hook for every caller of a reconciliation: call it after `save_report`. Ignores partial scopes."""
    if report.scope != FULL_SCOPE:
        return None
    return update_lifecycle(recon_store, report)


def update_lifecycle(recon_store: ReconStore, report: ReconciliationReport) -> LifecycleUpdate:
    """Apply one full run to the lifecycle table (idempotent per run; an older run than the last applied is skipped)."""
    finished = report.finished_at or datetime.now(UTC)
    current = _worst_per_key(report.findings)
    with recon_store.engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('billing_recon.lifecycle'))")
        if conn.execute(sa.text(f"SELECT 1 FROM {SCHEMA}.finding_lifecycle_applied WHERE run_id = :r"),
                        {"r": report.run_id}).scalar():
            return LifecycleUpdate(report.run_id, False, "already applied", _run_statuses(conn, report.run_id))
        latest = conn.execute(sa.text(f"SELECT max(finished_at) FROM {SCHEMA}.finding_lifecycle_applied")).scalar()
        if latest is not None and latest > finished:
            return LifecycleUpdate(report.run_id, False, "a newer run is already applied")
        existing = _load(conn, [k for k in current])
        rows, statuses = _transition(report.run_id, finished, current, existing, set(report.entity_types))
        _store(conn, report.run_id, finished, rows, statuses)
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
        status = ESCALATED if rose else before.status if before.status in (ACKNOWLEDGED, ACCEPTED) else OPEN
        keep_note = status in (ACKNOWLEDGED, ACCEPTED)
        rows.append(LifecycleRow(*key, status, f.severity.value, f.detail, before.first_seen_run,
                                 before.first_seen_at, run_id, at, before.runs_seen + 1, None, None,
                                 before.note if keep_note else None, before.operator if keep_note else None,
                                 before.noted_at if keep_note else None, run_id))
    for key, before in existing.items():
        if key not in current and before.status != RESOLVED and key[0] in entity_types:
            before.status, before.resolved_run, before.resolved_at, before.updated_run = RESOLVED, run_id, at, run_id
            rows.append(before)
    return rows, {r.key: r.status for r in rows}


def _load(conn: sa.Connection, keys: Sequence[Key]) -> dict[Key, LifecycleRow]:
    """Every identity not resolved, and the resolved ones this run sees again."""
    result = conn.execute(sa.text(
        f"SELECT {', '.join(_COLUMNS)} FROM {SCHEMA}.finding_lifecycle WHERE status <> 'resolved' "
        "OR (entity_type, entity_id, kind) IN (SELECT * FROM unnest(CAST(:t AS text[]), CAST(:i AS text[]), "
        "CAST(:k AS text[])))"),
        {"t": [k[0] for k in keys], "i": [k[1] for k in keys], "k": [k[2] for k in keys]})
    return {(r[0], r[1], r[2]): LifecycleRow(*r) for r in result}


def _store(conn: sa.Connection, run_id: str, at: datetime, rows: list[LifecycleRow], statuses: dict[Key, str]) -> None:
    if rows:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[3:])
        conn.execute(sa.text(
            f"INSERT INTO {SCHEMA}.finding_lifecycle ({', '.join(_COLUMNS)}) VALUES "
            f"({', '.join(':' + c for c in _COLUMNS)}) ON CONFLICT (entity_type, entity_id, kind) DO UPDATE SET "
            + updates), [{c: getattr(r, c) for c in _COLUMNS} for r in rows])
        conn.execute(sa.text(
            f"INSERT INTO {SCHEMA}.finding_lifecycle_run VALUES (:run_id, :entity_type, :entity_id, :kind, :status, "
            ":severity)"), [{"run_id": run_id, "entity_type": r.entity_type, "entity_id": r.entity_id,
                             "kind": r.kind, "status": r.status, "severity": r.severity} for r in rows])
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses.values():
        counts[status] += 1
    conn.execute(sa.text(f"INSERT INTO {SCHEMA}.finding_lifecycle_applied (run_id, finished_at, counts) "
                         "VALUES (:r, :f, CAST(:c AS jsonb))"), {"r": run_id, "f": at, "c": _json(counts)})


def _run_statuses(conn: sa.Connection, run_id: str) -> dict[Key, str]:
    rows = conn.execute(sa.text(f"SELECT entity_type, entity_id, kind, status FROM {SCHEMA}.finding_lifecycle_run "
                                "WHERE run_id = :r"), {"r": run_id})
    return {(r[0], r[1], r[2]): r[3] for r in rows}


# --- reads for alerts and operators ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunLifecycle:
    """The status each identity had in one full run, with the severity it had then."""

    statuses: dict[Key, str]
    severities: dict[Key, str]


def run_lifecycle(recon_store: ReconStore, run_id: str) -> RunLifecycle | None:
    """The lifecycle of one applied run, or None when that run was never applied."""
    with recon_store.engine.connect() as conn:
        if not conn.execute(sa.text(f"SELECT 1 FROM {SCHEMA}.finding_lifecycle_applied WHERE run_id = :r"),
                            {"r": run_id}).scalar():
            return None
        rows = conn.execute(sa.text(f"SELECT entity_type, entity_id, kind, status, severity FROM "
                                    f"{SCHEMA}.finding_lifecycle_run WHERE run_id = :r"), {"r": run_id}).all()
    return RunLifecycle({(r[0], r[1], r[2]): r[3] for r in rows}, {(r[0], r[1], r[2]): r[4] for r in rows})


def list_findings(recon_store: ReconStore, status: str | None = None, limit: int = 1_000) -> list[LifecycleRow]:
    if status is not None and status not in STATUSES:
        raise ConfigurationError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    with recon_store.engine.connect() as conn:
        rows = conn.execute(sa.text(
            f"SELECT {', '.join(_COLUMNS)} FROM {SCHEMA}.finding_lifecycle "
            + ("WHERE status = :s " if status else "") + "ORDER BY first_seen_at, entity_type, entity_id, kind "
            "LIMIT :n"), {"s": status, "n": limit}).all()
    return [LifecycleRow(*r) for r in rows]


def keys_of_finding_ids(recon_store: ReconStore, finding_ids: Sequence[int]) -> list[Key]:
    """The identities of stored findings (billing_recon.finding.finding_id), for acknowledging by id."""
    with recon_store.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT finding_id, entity_type, entity_id, kind FROM {SCHEMA}.finding "
                                    "WHERE finding_id = ANY(:ids)"), {"ids": list(finding_ids)}).all()
    missing = sorted(set(finding_ids) - {r[0] for r in rows})
    if missing:
        raise ConfigurationError(f"ids: no stored finding with id {', '.join(map(str, missing[:10]))}")
    return sorted({(r[1], r[2], r[3]) for r in rows})


def acknowledge(recon_store: ReconStore, keys: Sequence[Key], *, note: str, operator: str,
                accept: bool = False) -> list[LifecycleRow]:
    """Mark open findings acknowledged (or accepted) with the operator's note; refuses unknown or resolved ones."""
    if not note or not note.strip():
        raise ConfigurationError("note: say why (it is kept with the finding); it is empty")
    if not operator or not operator.strip():
        raise ConfigurationError("operator: name who acknowledges; it is empty")
    if not keys:
        raise ConfigurationError("keys / ids: name at least one finding")
    status, action = (ACCEPTED, "accept") if accept else (ACKNOWLEDGED, "acknowledge")
    with recon_store.engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('billing_recon.lifecycle'))")
        found = _load(conn, keys)
        unknown = [k for k in keys if k not in found or found[k].status == RESOLVED]
        if unknown:
            raise ConfigurationError("keys: no open finding " + ", ".join("/".join(k) for k in unknown[:10]))
        now = datetime.now(UTC)
        params = [{"t": k[0], "i": k[1], "k": k[2], "s": status, "n": note.strip(), "o": operator.strip(), "at": now,
                   "a": action} for k in keys]
        conn.execute(sa.text(f"UPDATE {SCHEMA}.finding_lifecycle SET status = :s, note = :n, operator = :o, "
                             "noted_at = :at WHERE entity_type = :t AND entity_id = :i AND kind = :k"), params)
        conn.execute(sa.text(f"INSERT INTO {SCHEMA}.finding_note (entity_type, entity_id, kind, action, note, "
                             "operator, recorded_at) VALUES (:t, :i, :k, :a, :n, :o, :at)"), params)
        updated = _load(conn, keys)
    return [updated[k] for k in keys]


def notes(recon_store: ReconStore, key: Key) -> list[dict[str, Any]]:
    """Every acknowledge / accept ever recorded for one identity, oldest first."""
    with recon_store.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT recorded_at, action, note, operator FROM {SCHEMA}.finding_note WHERE "
                                    "entity_type = :t AND entity_id = :i AND kind = :k ORDER BY note_id"),
                            {"t": key[0], "i": key[1], "k": key[2]}).mappings().all()
    return [dict(r) for r in rows]


def sync_latest(recon_store: ReconStore) -> LifecycleUpdate | None:
    """Apply the newest stored full run if it was not applied yet (runs saved by callers without the hook)."""
    run_id = recon_store.latest_run_id()
    if run_id is None:
        return None
    with recon_store.engine.connect() as conn:
        run = conn.execute(sa.text(f"SELECT scope, started_at, finished_at FROM {SCHEMA}.recon_run "
                                   "WHERE run_id = :r"), {"r": run_id}).one()
    if run[0] != FULL_SCOPE:
        return None
    report = ReconciliationReport(run_id=run_id, scope=run[0], started_at=run[1], finished_at=run[2],
                                  findings=recon_store.findings(run_id))
    return update_lifecycle(recon_store, report)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
