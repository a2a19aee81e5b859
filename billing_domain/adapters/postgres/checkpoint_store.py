"""Checkpoints in `billing_recon`: the header and the entity states (in buckets, see `checkpoint_buckets`),
written in one transaction."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from billing_domain.adapters.postgres.bulk_read import stream_rows
from billing_domain.adapters.postgres.checkpoint_buckets import (
    BucketPacker,
    Entry,
    Part,
    bucket_of,
    buckets_of_kinds,
    pack,
    rows_of,
    unpack,
)
from billing_domain.core.checkpoint import CheckpointHeader, EntityRow, decode_ledger
from billing_domain.core.cut import Cut

SCHEMA = "billing_recon"


class CheckpointStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, topics: str, code_version: str, cut: Cut, tail_marks: dict[str, int], ledger: bytes,
             rows: Iterable[EntityRow], *, run_id: str | None, replace_all: bool, delta: bytes | None = None,
             resumed_from: str | None = None) -> int | None:
        """Write the header and the rows atomically: a checkpoint is never half-written.

        A run that resumed from the checkpoint of `resumed_from` writes only what changed after it, so it
        saves only if that is still the checkpoint; else (another run saved meanwhile) it writes nothing
        and returns None. A full replay (`replace_all`) stands on its own and always saves.
        """
        with self.engine.begin() as conn:
            current = conn.execute(sa.text(f"SELECT run_id FROM {SCHEMA}.checkpoint WHERE topics = :t FOR UPDATE"),
                                   {"t": topics}).first()
            if not replace_all and (current is None or current[0] != resumed_from):
                return None
            conn.execute(sa.text(
                f"INSERT INTO {SCHEMA}.checkpoint (topics, code_version, created_at, run_id, cut, tail_marks, ledger, "
                "delta) VALUES (:topics, :code_version, :created_at, :run_id, :cut, :marks, :ledger, :delta) "
                "ON CONFLICT (topics) DO UPDATE SET code_version = EXCLUDED.code_version, "
                "created_at = EXCLUDED.created_at, run_id = EXCLUDED.run_id, cut = EXCLUDED.cut, "
                "tail_marks = EXCLUDED.tail_marks, ledger = EXCLUDED.ledger, delta = EXCLUDED.delta"),
                {"topics": topics, "code_version": code_version, "created_at": datetime.now(UTC), "run_id": run_id,
                 "cut": json.dumps(cut.to_json()), "marks": json.dumps(tail_marks), "ledger": ledger,
                 "delta": delta})
            if replace_all:
                return _replace_rows(conn, topics, rows)
            return _upsert_rows(conn, topics, rows)

    @contextmanager
    def reading(self) -> Iterator[CheckpointView]:
        """One consistent view of the checkpoints (REPEATABLE READ): a header and the entity rows read
        through it belong together even if another run saves its checkpoint meanwhile."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin() as transaction:
                yield CheckpointView(conn)
                transaction.rollback()

    def header(self, topics: str) -> CheckpointHeader | None:
        with self.engine.connect() as conn:
            return CheckpointView(conn).header(topics)

    def entity_rows(self, topics: str, keys: Iterable[tuple[str, str]]) -> list[EntityRow]:
        with self.engine.connect() as conn:
            return CheckpointView(conn).entity_rows(topics, keys)

    def drop(self, topics: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {SCHEMA}.checkpoint WHERE topics = :t"), {"t": topics})


MERGE_CHUNK = 64  # buckets read, merged and written again at a time by a resumed run's save
BUCKETS_FETCHED = 16  # a bucket is ~150 KB at a million accounts: libpq holds this many at a time


def _replace_rows(conn: Connection, topics: str, rows: Iterable[EntityRow]) -> int:
    """A full replay's rows replace every bucket of these topics."""
    conn.execute(sa.text(f"DELETE FROM {SCHEMA}.checkpoint_bucket WHERE topics = :t"), {"t": topics})
    packer = BucketPacker()
    _copy_parts(conn, topics, packer.parts(rows))
    return packer.rows


def _upsert_rows(conn: Connection, topics: str, rows: Iterable[EntityRow]) -> int:
    """A resumed run's rows (what its tail touched) over the checkpoint's others: each bucket they fall in is
    read, merged and written again as one part, `MERGE_CHUNK` buckets at a time so that memory holds a few."""
    changed: dict[int, dict[str, Entry]] = {}
    written = 0
    for row in rows:
        changed.setdefault(bucket_of(row.entity_type, row.entity_id), {})[row.entity_id] = (
            row.entity_id, row.topic, row.partition, row.state)
        written += 1
    touched = sorted(changed)
    for first in range(0, len(touched), MERGE_CHUNK):
        chunk = touched[first:first + MERGE_CHUNK]
        stored: dict[int, list[Entry]] = {}
        for bucket, blob in conn.execute(sa.text(
                f"SELECT bucket, entities FROM {SCHEMA}.checkpoint_bucket WHERE topics = :t AND bucket = ANY(:b) "
                "ORDER BY bucket, part"), {"t": topics, "b": chunk}):
            stored.setdefault(bucket, []).extend(unpack(topics, bucket, blob))
        merged_parts = []
        for bucket in chunk:
            merged = {e[0]: e for e in stored.pop(bucket, ())}
            merged.update(changed.pop(bucket))
            merged_parts.append((bucket, 0, pack(merged.values())))
        conn.execute(sa.text(f"DELETE FROM {SCHEMA}.checkpoint_bucket WHERE topics = :t AND bucket = ANY(:b)"),
                     {"t": topics, "b": chunk})
        _copy_parts(conn, topics, merged_parts)
    return written


def _copy_parts(conn: Connection, topics: str, parts: Iterable[Part]) -> None:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {SCHEMA}.checkpoint_bucket (topics, bucket, part, entities) "
                     "FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int4", "int4", "bytea"])
        for bucket, part, blob in parts:
            copy.write_row((topics, bucket, part, blob))


class CheckpointView:
    """Reads of the checkpoint tables on one connection (see `CheckpointStore.reading`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def header(self, topics: str) -> CheckpointHeader | None:
        row = self.conn.execute(sa.text(
            f"SELECT topics, code_version, cut, tail_marks, ledger, run_id, delta IS NOT NULL "
            f"FROM {SCHEMA}.checkpoint WHERE topics = :t"), {"t": topics}).first()
        if row is None:
            return None
        return CheckpointHeader(row[0], row[1], Cut.from_json(row[2]), dict(row[3]), decode_ledger(bytes(row[4])),
                                row[5], bool(row[6]))

    def delta_memo(self, topics: str) -> bytes | None:
        """The memo apart from the header: it lists every projection id, which only a delta run needs."""
        blob = self.conn.execute(sa.text(f"SELECT delta FROM {SCHEMA}.checkpoint WHERE topics = :t"),
                                 {"t": topics}).scalar()
        return bytes(blob) if blob is not None else None

    def entities(self, topics: str, kinds: Iterable[str] | None = None) -> Generator[EntityRow, None, None]:
        """Every checkpointed entity, or those of the given kinds (account, transaction, money)."""
        only = " AND bucket = ANY(%(buckets)s)" if kinds is not None else ""
        query = f"SELECT bucket, entities FROM {SCHEMA}.checkpoint_bucket WHERE topics = %(topics)s{only}"
        # Closed with this generator, so that its server-side cursor never outlives the transaction.
        params = {"topics": topics, "buckets": buckets_of_kinds(kinds or ())}
        with closing(stream_rows(self.conn, query, params, batch_rows=BUCKETS_FETCHED)) as buckets:
            for bucket, blob in buckets:
                yield from rows_of(topics, bucket, blob)

    def entity_rows(self, topics: str, keys: Iterable[tuple[str, str]]) -> list[EntityRow]:
        wanted: dict[int, set[str]] = {}
        for entity_type, entity_id in keys:
            wanted.setdefault(bucket_of(entity_type, entity_id), set()).add(entity_id)
        stored = self.conn.execute(sa.text(
            f"SELECT bucket, entities FROM {SCHEMA}.checkpoint_bucket WHERE topics = :t AND bucket = ANY(:b)"),
            {"t": topics, "b": sorted(wanted)}).all()
        return [row for bucket, blob in stored for row in rows_of(topics, bucket, blob, wanted[bucket])]
