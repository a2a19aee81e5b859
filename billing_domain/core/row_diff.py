"""Which columns of a projection row a rebuild changes: the one rule its renderers (CLI, Dagster) share."""

from __future__ import annotations

from typing import Any

# Bookkeeping columns: they change with every write, so showing them would hide what the rebuild fixed.
BOOKKEEPING_COLUMNS = ("updated_at", "last_event_id")


def changed_columns(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(column, before, after) for each column of `after` whose value differs, bookkeeping aside."""
    return [(column, before.get(column), value) for column, value in after.items()
            if before.get(column) != value and column not in BOOKKEEPING_COLUMNS]
