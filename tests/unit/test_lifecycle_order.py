"""The finding lifecycle in the order an operator reads it (issue 18.7): what wants attention first (new,
escalated, open, then acknowledged, accepted, resolved), the worst severity first within a status, then the
longest open; not the store's first-seen order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing_domain.core.lifecycle import LifecycleRow
from billing_domain.services.lifecycle import by_attention

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _row(entity_id: str, status: str, severity: str, days_ago: float) -> LifecycleRow:
    seen = T0 - timedelta(days=days_ago)
    return LifecycleRow("account", entity_id, "balance_mismatch", status, severity, "detail", "run-0", seen,
                        "run-1", T0, 1, None, None, None, None, None, "run-1")


def test_new_and_critical_first_then_the_longest_open() -> None:
    stored = [  # the store's order: first seen
        _row("old-open-warning", "open", "warning", 30),
        _row("old-acked-critical", "acknowledged", "critical", 20),
        _row("open-critical-10d", "open", "critical", 10),
        _row("open-critical-12d", "open", "critical", 12),
        _row("resolved", "resolved", "critical", 9),
        _row("escalated", "escalated", "critical", 8),
        _row("accepted", "accepted", "info", 7),
        _row("new-info", "new", "info", 0),
        _row("new-critical", "new", "critical", 0),
    ]
    assert [r.entity_id for r in by_attention(stored)] == [
        "new-critical", "new-info", "escalated", "open-critical-12d", "open-critical-10d", "old-open-warning",
        "old-acked-critical", "accepted", "resolved"]


def test_an_unknown_status_or_severity_sorts_last_rather_than_failing() -> None:
    rows = [_row("odd", "someday", "fatal", 1), _row("known", "open", "info", 1)]
    assert [r.entity_id for r in by_attention(rows)] == ["known", "odd"]
