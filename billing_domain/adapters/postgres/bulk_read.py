"""Every row of a large query, through a server-side cursor, a batch at a time.

Measured on 100k account rows (psycopg 3.3, C implementation): `COPY ... TO STDOUT` read with
`Copy.rows()` took 0.35-0.73 s, a plain `SELECT` with `fetchall()` 0.17-0.39 s, and this 0.15-0.21 s.
psycopg parses a COPY stream row by row through Python-level calls but a result set in C; a named
cursor also keeps one batch in libpq's memory, where `fetchall()` holds the whole result.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Mapping
from typing import Any

from sqlalchemy.engine import Connection

FETCH_BATCH = 50_000
_cursor_numbers = itertools.count()


def stream_rows(conn: Connection, query: str, params: Mapping[str, Any] | None = None,
                batch_rows: int = FETCH_BATCH) -> Generator[tuple[Any, ...], None, None]:
    """The rows of `query` (psycopg placeholders) inside `conn`'s transaction and snapshot.

    Consume or close it before the transaction ends: a server-side cursor lives in its transaction.
    """
    driver = conn.connection.driver_connection
    assert driver is not None  # an open SQLAlchemy connection always has its DBAPI connection
    with driver.cursor(name=f"bulk_read_{next(_cursor_numbers)}", binary=True) as cursor:
        cursor.execute(query, params)
        while batch := cursor.fetchmany(batch_rows):
            yield from batch
