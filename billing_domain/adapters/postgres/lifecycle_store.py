"""The finding lifecycle's tables (schema `billing_recon`): one row per identity, the status each identity had
in each applied run, the runs applied, and the operators' notes.

The writers (a run being applied, an acknowledgement) take one transaction-scoped advisory lock, so two of
them never interleave their reads and writes; readers take none. `ReconStore` is this store too: the tables
sit in its schema (migration 0201), so whoever has the report store has the lifecycle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from billing_domain.core.lifecycle import LIFECYCLE_COLUMNS, Key, LifecycleRow, RunLifecycle

SCHEMA = "billing_recon"
LOCK_KEY = "billing_recon.lifecycle"
_COLUMN_LIST = ", ".join(LIFECYCLE_COLUMNS)


class PostgresLifecycleStore:
    """`ports.LifecycleStore` on PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def lifecycle_transaction(self) -> Iterator[LifecycleTransaction]:
        """One transaction under the lifecycle lock: committed when the block ends, rolled back if it raises."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%(k)s))", {"k": LOCK_KEY})
            yield LifecycleTransaction(conn)

    def run_lifecycle(self, run_id: str) -> RunLifecycle | None:
        with self.engine.connect() as conn:
            if not _is_applied(conn, run_id):
                return None
            rows = conn.execute(sa.text(f"SELECT entity_type, entity_id, kind, status, severity FROM "
                                        f"{SCHEMA}.finding_lifecycle_run WHERE run_id = :r"), {"r": run_id}).all()
        return RunLifecycle({(r[0], r[1], r[2]): r[3] for r in rows}, {(r[0], r[1], r[2]): r[4] for r in rows})

    def lifecycle_rows(self, status: str | None = None, limit: int = 1_000) -> list[LifecycleRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                f"SELECT {_COLUMN_LIST} FROM {SCHEMA}.finding_lifecycle "
                + ("WHERE status = :s " if status else "") + "ORDER BY first_seen_at, entity_type, entity_id, kind "
                "LIMIT :n"), {"s": status, "n": limit}).all()
        return [LifecycleRow(*r) for r in rows]

    def finding_keys(self, finding_ids: Sequence[int]) -> dict[int, Key]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT finding_id, entity_type, entity_id, kind FROM {SCHEMA}.finding "
                                        "WHERE finding_id = ANY(:ids)"), {"ids": list(finding_ids)}).all()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def lifecycle_notes(self, key: Key) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT recorded_at, action, note, operator FROM {SCHEMA}.finding_note "
                                        "WHERE entity_type = :t AND entity_id = :i AND kind = :k ORDER BY note_id"),
                                {"t": key[0], "i": key[1], "k": key[2]}).mappings().all()
        return [dict(r) for r in rows]


class LifecycleTransaction:
    """`ports.LifecycleTransaction`: the lifecycle tables inside the caller's locked transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def applied_statuses(self, run_id: str) -> dict[Key, str] | None:
        if not _is_applied(self._conn, run_id):
            return None
        rows = self._conn.execute(sa.text(f"SELECT entity_type, entity_id, kind, status FROM "
                                          f"{SCHEMA}.finding_lifecycle_run WHERE run_id = :r"), {"r": run_id})
        return {(r[0], r[1], r[2]): r[3] for r in rows}

    def latest_applied_at(self) -> datetime | None:
        latest: datetime | None = self._conn.execute(
            sa.text(f"SELECT max(finished_at) FROM {SCHEMA}.finding_lifecycle_applied")).scalar()
        return latest

    def rows(self, keys: Sequence[Key]) -> dict[Key, LifecycleRow]:
        result = self._conn.execute(sa.text(
            f"SELECT {_COLUMN_LIST} FROM {SCHEMA}.finding_lifecycle WHERE status <> 'resolved' "
            "OR (entity_type, entity_id, kind) IN (SELECT * FROM unnest(CAST(:t AS text[]), CAST(:i AS text[]), "
            "CAST(:k AS text[])))"),
            {"t": [k[0] for k in keys], "i": [k[1] for k in keys], "k": [k[2] for k in keys]})
        return {(r[0], r[1], r[2]): LifecycleRow(*r) for r in result}

    def save_run(self, run_id: str, finished_at: datetime, rows: Sequence[LifecycleRow],
                 counts: dict[str, int]) -> None:
        if rows:
            self._upsert(rows)
            self._conn.execute(sa.text(
                f"INSERT INTO {SCHEMA}.finding_lifecycle_run VALUES (:run_id, :entity_type, :entity_id, :kind, "
                ":status, :severity)"), [{"run_id": run_id, "entity_type": r.entity_type, "entity_id": r.entity_id,
                                          "kind": r.kind, "status": r.status, "severity": r.severity} for r in rows])
        self._conn.execute(sa.text(f"INSERT INTO {SCHEMA}.finding_lifecycle_applied (run_id, finished_at, counts) "
                                   "VALUES (:r, :f, CAST(:c AS jsonb))"),
                           {"r": run_id, "f": finished_at, "c": json.dumps(counts, sort_keys=True)})

    def _upsert(self, rows: Sequence[LifecycleRow]) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in LIFECYCLE_COLUMNS[3:])
        self._conn.execute(sa.text(
            f"INSERT INTO {SCHEMA}.finding_lifecycle ({_COLUMN_LIST}) VALUES "
            f"({', '.join(':' + c for c in LIFECYCLE_COLUMNS)}) ON CONFLICT (entity_type, entity_id, kind) "
            "DO UPDATE SET " + updates), [{c: getattr(r, c) for c in LIFECYCLE_COLUMNS} for r in rows])

    def note(self, keys: Sequence[Key], *, status: str, action: str, note: str, operator: str,
             at: datetime) -> None:
        params = [{"t": k[0], "i": k[1], "k": k[2], "s": status, "n": note, "o": operator, "at": at, "a": action}
                  for k in keys]
        self._conn.execute(sa.text(f"UPDATE {SCHEMA}.finding_lifecycle SET status = :s, note = :n, operator = :o, "
                                   "noted_at = :at WHERE entity_type = :t AND entity_id = :i AND kind = :k"), params)
        self._conn.execute(sa.text(f"INSERT INTO {SCHEMA}.finding_note (entity_type, entity_id, kind, action, note, "
                                   "operator, recorded_at) VALUES (:t, :i, :k, :a, :n, :o, :at)"), params)


def _is_applied(conn: Connection, run_id: str) -> bool:
    return bool(conn.execute(sa.text(f"SELECT 1 FROM {SCHEMA}.finding_lifecycle_applied WHERE run_id = :r"),
                             {"r": run_id}).scalar())
