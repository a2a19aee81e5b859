"""Finding kinds and severities (fixed by the contract) and the reconciliation report."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

from billing_domain.core.cut import Cut


class Kind(StrEnum):
    MISSING_PROJECTION = "missing_projection"
    ORPHAN_PROJECTION = "orphan_projection"
    BALANCE_MISMATCH = "balance_mismatch"
    FIELD_MISMATCH = "field_mismatch"
    VERSION_AHEAD = "version_ahead"
    LAGGING = "lagging"
    INVARIANT_VIOLATION = "invariant_violation"
    STREAM_CORRUPT = "stream_corrupt"
    STUCK = "stuck"
    SAGA_MISMATCH = "saga_mismatch"
    ACCOUNTING_EQUATION = "accounting_equation"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_OF: dict[Kind, Severity] = {
    Kind.MISSING_PROJECTION: Severity.CRITICAL,
    Kind.ORPHAN_PROJECTION: Severity.WARNING,
    Kind.BALANCE_MISMATCH: Severity.CRITICAL,
    Kind.FIELD_MISMATCH: Severity.WARNING,
    Kind.VERSION_AHEAD: Severity.CRITICAL,
    Kind.LAGGING: Severity.INFO,
    Kind.INVARIANT_VIOLATION: Severity.CRITICAL,
    Kind.STREAM_CORRUPT: Severity.CRITICAL,
    Kind.STUCK: Severity.WARNING,
    Kind.SAGA_MISMATCH: Severity.CRITICAL,
    Kind.ACCOUNTING_EQUATION: Severity.CRITICAL,
}
SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def minor_units(currency: str | None) -> str:
    """What a finding text's amounts count: `in EUR minor units` (integer cents; money is never a float)."""
    return f"in {currency} minor units" if currency else "in minor units"


# What a rebuild of the projections can put right; the rest is in the events themselves.
REBUILDABLE_KINDS = frozenset({Kind.MISSING_PROJECTION, Kind.BALANCE_MISMATCH, Kind.FIELD_MISMATCH,
                               Kind.VERSION_AHEAD, Kind.LAGGING})


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong (or, for `lagging`, merely behind), with what the events and the projection say."""

    entity_type: str  # account | transaction | ledger
    entity_id: str
    kind: Kind
    severity: Severity
    detail: str
    expected: dict[str, Any] | None = None  # what the events say
    actual: dict[str, Any] | None = None  # what the projection says
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    event_id: str | None = None

    @classmethod
    def of(cls, entity_type: str, entity_id: str, kind: Kind, detail: str, **kwargs: Any) -> Finding:
        return cls(entity_type, entity_id, kind, SEVERITY_OF[kind], detail, **kwargs)

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity across runs: the same entity with the same kind is the same finding."""
        return (self.entity_type, self.entity_id, self.kind.value)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def merge_lagging(findings: list[Finding]) -> list[Finding]:
    """The findings sorted by key, with one `lagging` finding per entity: a transfer can be behind both in
    its row and in what its two topics showed, and each part says why."""
    merged: list[Finding] = []
    lagging_at: dict[tuple[str, str, str], int] = {}
    for finding in sorted(findings, key=lambda f: f.key):
        at = lagging_at.get(finding.key) if finding.kind == Kind.LAGGING else None
        if at is None:
            if finding.kind == Kind.LAGGING:
                lagging_at[finding.key] = len(merged)
            merged.append(finding)
            continue
        seen = merged[at]
        merged[at] = replace(seen, detail=f"{seen.detail}; {finding.detail}",
                             expected=(seen.expected or {}) | (finding.expected or {}),
                             actual=(seen.actual or {}) | (finding.actual or {}))
    return merged


@dataclass(slots=True)
class LedgerIdentity:
    """One accounting identity for one currency, as computed for the report."""

    currency: str
    identity: str
    description: str
    left: int
    right: int

    @property
    def holds(self) -> bool:
        return self.left == self.right


@dataclass(slots=True)
class ReconciliationReport:
    run_id: str
    scope: str  # "all", "account:<id>", "transaction:<id>", "as-of ..."
    started_at: datetime
    finished_at: datetime | None = None
    cut: Cut = field(default_factory=Cut)
    findings: list[Finding] = field(default_factory=list)
    ledger: list[LedgerIdentity] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    entity_types: tuple[str, ...] = ("account", "transaction", "ledger")

    def counts_by_kind(self) -> dict[str, int]:
        counts = Counter(f.kind.value for f in self.findings)
        return {kind.value: counts.get(kind.value, 0) for kind in Kind}

    def counts_by_severity(self) -> dict[str, int]:
        counts = Counter(f.severity.value for f in self.findings)
        return {severity.value: counts.get(severity.value, 0) for severity in Severity}

    @property
    def is_clean(self) -> bool:
        """No finding other than `info` (a lagging projection is not corruption)."""
        return all(f.severity == Severity.INFO for f in self.findings)

    def worst(self, limit: int = 20) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (SEVERITY_RANK[f.severity], f.kind.value, f.entity_id))[:limit]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scope": self.scope,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "cut": self.cut.to_json(),
            "summary": {"by_kind": self.counts_by_kind(), "by_severity": self.counts_by_severity(),
                        "total": len(self.findings)},
            "ledger": [asdict(i) | {"holds": i.holds} for i in self.ledger],
            "stats": self.stats,
            "findings": [f.to_json() for f in self.findings],
        }

    def to_json_bytes(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self.to_json()), indent=2)
