"""The finding lifecycle's values: the statuses an identity (entity_type, entity_id, kind) can have, and
the row kept for each identity across runs. The rules that move a row from one status to the next are
in `billing_domain.services.lifecycle`; the tables that keep the rows are behind `ports.LifecycleStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

NEW, OPEN, ESCALATED, RESOLVED, ACKNOWLEDGED, ACCEPTED = (
    "new", "open", "escalated", "resolved", "acknowledged", "accepted")
STATUSES = (NEW, OPEN, ESCALATED, ACKNOWLEDGED, ACCEPTED, RESOLVED)
# An operator's word on a finding that still stands (until it resolves or escalates).
NOTED = (ACKNOWLEDGED, ACCEPTED)
Key = tuple[str, str, str]  # (entity_type, entity_id, kind)


@dataclass(slots=True)
class LifecycleRow:
    """One identity's history: when it was first and last seen, its status, an operator's note."""

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
        values = {c: getattr(self, c) for c in LIFECYCLE_COLUMNS}
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()} | {
            "days_open": self.days_open}


# The row's fields in order (`LifecycleRow(*values)`), which are also the stored columns' names.
LIFECYCLE_COLUMNS = tuple(f.name for f in fields(LifecycleRow))


@dataclass(frozen=True, slots=True)
class RunLifecycle:
    """The status each identity had in one full run, with the severity it had then."""

    statuses: dict[Key, str]
    severities: dict[Key, str]


def count_statuses(statuses: dict[Key, str]) -> dict[str, int]:
    """How many identities have each status (every status named, zero included)."""
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses.values():
        counts[status] += 1
    return counts
