"""An in-memory `ports.LifecycleStore`, for fast tests of the finding lifecycle's rules.

It does what the service relies on of `PostgresLifecycleStore` (tests/contract/test_lifecycle_store_contract.py
runs the same behaviours against both): rows handed out are copies (the service changes them before saving),
a transaction that raises leaves nothing behind, and reads order rows as the SQL does.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from billing_domain.core.lifecycle import RESOLVED, Key, LifecycleRow, RunLifecycle


@dataclass(slots=True)
class _Tables:
    rows: dict[Key, LifecycleRow] = field(default_factory=dict)
    runs: dict[str, dict[Key, tuple[str, str]]] = field(default_factory=dict)  # run -> key -> (status, severity)
    applied: dict[str, tuple[datetime, dict[str, int]]] = field(default_factory=dict)  # run -> (finished, counts)
    notes: list[tuple[Key, dict[str, Any]]] = field(default_factory=list)


class InMemoryLifecycleStore:
    def __init__(self, finding_keys: dict[int, Key] | None = None) -> None:
        self._tables = _Tables()
        self._finding_keys = dict(finding_keys or {})  # stored finding ids (the report store's, in production)

    @contextmanager
    def lifecycle_transaction(self) -> Iterator[InMemoryLifecycleTransaction]:
        working = copy.deepcopy(self._tables)
        yield InMemoryLifecycleTransaction(working)
        self._tables = working  # committed only when the block ends without raising

    def run_lifecycle(self, run_id: str) -> RunLifecycle | None:
        if run_id not in self._tables.applied:
            return None
        run = self._tables.runs.get(run_id, {})
        return RunLifecycle({k: s for k, (s, _) in run.items()}, {k: v for k, (_, v) in run.items()})

    def lifecycle_rows(self, status: str | None = None, limit: int = 1_000) -> list[LifecycleRow]:
        rows = [r for r in self._tables.rows.values() if status is None or r.status == status]
        rows.sort(key=lambda r: (r.first_seen_at, r.entity_type, r.entity_id, r.kind))
        return [dataclasses.replace(r) for r in rows[:limit]]

    def finding_keys(self, finding_ids: Sequence[int]) -> dict[int, Key]:
        return {i: self._finding_keys[i] for i in finding_ids if i in self._finding_keys}

    def lifecycle_notes(self, key: Key) -> list[dict[str, Any]]:
        return [dict(n) for k, n in self._tables.notes if k == key]


class InMemoryLifecycleTransaction:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables

    def applied_statuses(self, run_id: str) -> dict[Key, str] | None:
        if run_id not in self._tables.applied:
            return None
        return {k: s for k, (s, _) in self._tables.runs.get(run_id, {}).items()}

    def latest_applied_at(self) -> datetime | None:
        return max((finished for finished, _ in self._tables.applied.values()), default=None)

    def rows(self, keys: Sequence[Key]) -> dict[Key, LifecycleRow]:
        wanted = set(keys)
        return {k: dataclasses.replace(r) for k, r in self._tables.rows.items()
                if r.status != RESOLVED or k in wanted}

    def save_run(self, run_id: str, finished_at: datetime, rows: Sequence[LifecycleRow],
                 counts: dict[str, int]) -> None:
        if run_id in self._tables.applied:
            raise ValueError(f"run {run_id} is applied already")  # the real table's primary key refuses it
        for row in rows:
            self._tables.rows[row.key] = dataclasses.replace(row)
        self._tables.runs[run_id] = {r.key: (r.status, r.severity) for r in rows}
        self._tables.applied[run_id] = (finished_at, dict(counts))

    def note(self, keys: Sequence[Key], *, status: str, action: str, note: str, operator: str,
             at: datetime) -> None:
        for key in keys:
            row = self._tables.rows.get(key)
            if row is not None:
                row.status, row.note, row.operator, row.noted_at = status, note, operator, at
            self._tables.notes.append((key, {"recorded_at": at.astimezone(UTC), "action": action, "note": note,
                                             "operator": operator}))
