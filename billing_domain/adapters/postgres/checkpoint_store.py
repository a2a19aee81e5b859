"""Checkpoints in `billing_recon`: the header and the entity states, written in one transaction."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime

import psycopg
import sqlalchemy as sa
from psycopg.adapt import PyFormat
from sqlalchemy.engine import Connection, Engine

from billing_domain.adapters.postgres.bulk_read import stream_rows
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


_COLUMNS = 'topics, entity_type, entity_id, topic, "partition", state'
_TYPES = ["text", "text", "text", "text", "int4", "bytea"]
_BYTES_DUMPER = psycopg.adapters.get_dumper(bytes, PyFormat.BINARY)


def _replace_rows(conn: Connection, topics: str, rows: Iterable[EntityRow]) -> int:
    """A full replay's rows replace every row of these topics: COPY straight into the emptied table. Through a
    staging table and INSERT ... ON CONFLICT, the upsert alone took two thirds of the checkpoint's write."""
    conn.execute(sa.text(f"DELETE FROM {SCHEMA}.checkpoint_entity WHERE topics = :t"), {"t": topics})
    return _copy_rows(conn, f"{SCHEMA}.checkpoint_entity", topics, rows)


def _upsert_rows(conn: Connection, topics: str, rows: Iterable[EntityRow]) -> int:
    """A resumed run's rows (what its tail touched) over the checkpoint's others: staged, then upserted."""
    conn.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS staging_checkpoint_entity "
                         f"(LIKE {SCHEMA}.checkpoint_entity) ON COMMIT DELETE ROWS")
    written = _copy_rows(conn, "staging_checkpoint_entity", topics, rows)
    conn.exec_driver_sql(
        f"INSERT INTO {SCHEMA}.checkpoint_entity SELECT * FROM staging_checkpoint_entity "
        "ON CONFLICT (topics, entity_type, entity_id) DO UPDATE SET topic = EXCLUDED.topic, "
        '"partition" = EXCLUDED."partition", state = EXCLUDED.state')
    return written


def _copy_rows(conn: Connection, table: str, topics: str, rows: Iterable[EntityRow]) -> int:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    # By oid, bytea resolves to psycopg's DB-API `Binary` dumper, a Python call per row; bytes' own is C.
    cursor.adapters.register_dumper(bytes, _BYTES_DUMPER)
    written = 0
    with cursor.copy(f"COPY {table} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_TYPES)
        for row in rows:
            copy.write_row((topics, row.entity_type, row.entity_id, row.topic, row.partition, row.state))
            written += 1
    return written


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
        only = " AND entity_type = ANY(%(kinds)s)" if kinds is not None else ""
        query = ('SELECT entity_type, entity_id, topic, "partition", state '
                 f"FROM {SCHEMA}.checkpoint_entity WHERE topics = %(topics)s{only}")
        # Closed with this generator, so that its server-side cursor never outlives the transaction.
        with closing(stream_rows(self.conn, query, {"topics": topics, "kinds": list(kinds or ())})) as rows:
            for entity_type, entity_id, topic, partition, state in rows:
                yield EntityRow(entity_type, entity_id, topic, partition, state)

    def entity_rows(self, topics: str, keys: Iterable[tuple[str, str]]) -> list[EntityRow]:
        keys = list(keys)
        # %b: binary arrays; as text, psycopg checks every id for quoting with a regex.
        rows = stream_rows(self.conn, 'SELECT entity_type, entity_id, topic, "partition", state '
                           f"FROM {SCHEMA}.checkpoint_entity WHERE topics = %(topics)s AND (entity_type, entity_id) "
                           "IN (SELECT * FROM unnest(%(types)b::text[], %(ids)b::text[]))",
                           {"topics": topics, "types": [k[0] for k in keys], "ids": [k[1] for k in keys]})
        return [EntityRow(*row) for row in rows]
