"""Scenario helpers shared by the reliability tests: a damaged projection set and its undisturbed twin."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Self

import psycopg
from sqlalchemy.engine import Connection, Engine, make_url

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_domain.core.accounts import ACTIVE, AccountAggregate
from billing_domain.core.events import AccountCredited, AccountDebited, Event, Payload
from billing_domain.services.rebuild import RebuildResult, RebuildSelection, rebuild
from billing_sandbox.projector import LiveProjector
from billing_sandbox.simulate import SimulationConfig, simulate
from billing_sandbox.stack import EmbeddedStack

# How long the race and the soak of test_live_races run (here, not in conftest.py: `from conftest import` finds
# whichever conftest pytest loaded last, the browser suite's when tests/e2e is given after tests/reliability).
SOAK_SECONDS = float(os.environ.get("BILLING_SOAK_SECONDS", "20"))
RACE_SECONDS = float(os.environ.get("BILLING_RACE_SECONDS", "20"))


@dataclass
class Damaged:
    """A simulated history whose account projections were damaged on purpose."""

    event_store: KafkaEventStore
    database_url: str
    projections: ProjectionStore
    recon: ReconStore
    deleted: list[str]
    corrupted: list[str]

    @property
    def engine(self) -> Engine:
        return self.projections.engine


def damaged_history(bootstrap_servers: str, database_url: str, *, seed: int, accounts: int) -> Damaged:
    """Simulate a clean history, then delete every third account row and bump every third balance."""
    store = KafkaEventStore(bootstrap_servers, Topics.with_prefix(f"rel{uuid.uuid4().hex[:8]}."), partitions=3)
    store.append([])  # the producer first: it fetches its id while the schema and topics are made (0.5 s if not)
    engine = make_engine(database_url)
    projections = ProjectionStore(engine)
    simulate(store, projections, SimulationConfig(seed=seed, accounts=accounts, days=1, faults=False,
                                                  bulk_projections=True))
    ids = sorted(projections.read_accounts())
    deleted, corrupted = ids[0::3], ids[1::3]
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM billing.account_projection WHERE account_id = ANY(%(ids)s)",
                             {"ids": deleted})
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 1 "
                             "WHERE account_id = ANY(%(ids)s)", {"ids": corrupted})
    recon = ReconStore(engine)
    recon.migrate()
    return Damaged(store, database_url, projections, recon, deleted, corrupted)


def twin_url(database_url: str, name: str) -> str:
    return make_url(database_url).set(database=name).render_as_string(hide_password=False)


def rebuild_all_accounts(damaged: Damaged, reason: str = "reliability test") -> RebuildResult:
    return rebuild(damaged.event_store, damaged.projections, damaged.recon, entity_type="account",
                   selection=RebuildSelection(all=True), dry_run=False, reason=reason, actor="reliability")


def kill_postgres(stack: EmbeddedStack) -> None:
    """SIGKILL the server (postmaster and backends), then clear what its death leaves behind.

    In a container whose PID 1 reaps nothing the dead postmaster stays a zombie, and its socket lock
    files would stop the next postmaster; `EmbeddedStack.start_postgres` removes them too.
    """
    stack.kill_postgres()
    for leftover in stack.pgdata.glob(".s.PGSQL.*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def create_database(server_url: str, template: str | None = None) -> str:
    """A new database on the server of `server_url` (its credentials: the embedded stack asks for a password)."""
    name = f"rel_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


def twin_of(damaged: Damaged, server_url: str) -> Damaged:
    """A copy of the damaged database (same events, same damage) to rebuild undisturbed, for comparison."""
    damaged.engine.dispose()
    url = create_database(server_url, template=make_url(damaged.database_url).database)
    projections = ProjectionStore(make_engine(url))
    return Damaged(damaged.event_store, url, projections, ReconStore(projections.engine), damaged.deleted,
                   damaged.corrupted)


def advisory_locks(conn: Connection) -> int:
    """Advisory locks granted in this connection's database (the rebuild holds one while it runs)."""
    return int(conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                    "AND database = (SELECT oid FROM pg_database WHERE datname = "
                                    "current_database())").scalar() or 0)


def lock_waiters(conn: Connection) -> int:
    """Backends of this database waiting for a lock."""
    count = int(conn.exec_driver_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock'").scalar() or 0)
    # pg_stat_activity is snapshotted once per transaction: end it, or every later poll sees the first answer.
    conn.rollback()
    return count


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def block_row(damaged: Damaged, account_id: str) -> Connection:
    """Hold a row lock on one account until the returned connection rolls back: a rebuild stops at it."""
    conn = damaged.engine.connect()
    conn.exec_driver_sql("SELECT 1 FROM billing.account_projection WHERE account_id = %(a)s FOR UPDATE",
                         {"a": account_id})
    return conn


def dump_table(engine: Engine, table: str, key: str) -> bytes:
    """The whole table as PostgreSQL's text COPY output, ordered by key: equal bytes, equal tables."""
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        chunks: list[bytes] = []
        with cursor.copy(f"COPY (SELECT * FROM {table} ORDER BY {key}) TO STDOUT") as copy:
            for chunk in copy:
                chunks.append(bytes(chunk))
        return b"".join(chunks)


def dump_projections(engine: Engine) -> tuple[bytes, bytes]:
    return (dump_table(engine, "billing.account_projection", "account_id"),
            dump_table(engine, "billing.transaction_projection", "transaction_id"))


class ThreadDiedError(AssertionError):
    """A helper thread ended on an exception: what it was watching or doing stopped, so the test is void."""


class _StoppableThread:
    """A daemon thread running `_run` until `stop()`; `_run` watches `self._stop`.

    An exception in `_run` is kept (`error`) and raised again by `stop()` and `check()`: a sampler or
    a traffic thread that died would otherwise leave the test passing on what it never saw.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, daemon=True, name=name)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # raised again in the test's thread by check() and stop()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise ThreadDiedError(f"the {self.name} thread died: {self.error!r}") from self.error
        if self._thread.ident is not None and not self._thread.is_alive() and not self._stop.is_set():
            raise ThreadDiedError(f"the {self.name} thread ended before it was stopped")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._thread.is_alive():
            raise ThreadDiedError(f"the {self.name} thread did not stop within 30 s")
        self.check()

    def _run(self) -> None:
        raise NotImplementedError


class Traffic(_StoppableThread):
    """Simulated live traffic: deposits, withdrawals and fees on open accounts, appended in small bursts.

    Every event is legal (next version, limits kept), built from the accounts' heads at start.
    """

    def __init__(self, store: KafkaEventStore, heads: dict[str, AccountAggregate], seed: int) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.accounts = {k: a for k, a in heads.items() if a.status == ACTIVE and not a.violations}
        self.ids = sorted(self.accounts)
        self.appended = 0
        self.clock = max((a.updated_at for a in heads.values() if a.updated_at), default=datetime.now(UTC))
        super().__init__("traffic")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.store.append(self._next() for _ in range(20))
            self.appended += 20
            time.sleep(0.05)

    def _next(self) -> Event:
        account = self.accounts[self.rng.choice(self.ids)]
        amount = self.rng.randint(1, 5_000)
        floor = max(0, account.min_balance_minor)
        payload: Payload
        if account.balance_minor - amount >= floor and self.rng.random() < 0.5:
            payload = AccountDebited(amount, None, self.rng.choice(["withdrawal", "fee"]))
        elif account.balance_minor + amount <= account.max_balance_minor:
            payload = AccountCredited(amount, None, "deposit")
        else:
            payload = AccountDebited(1, None, "fee")
        self.clock += timedelta(milliseconds=10)
        event = Event(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), type(payload).__name__, 1, "account",
                      account.aggregate_id, account.version + 1, self.clock, None, payload)
        account.apply(event)
        return event


class VersionSampler(_StoppableThread):
    """Reads every projection row's version over and over; counts rows that moved backwards or vanished.

    `samples` counts full reads, `comparisons` the row versions compared with an earlier read: a test
    asserts both, so a sampler that read nothing (or only empty tables) cannot pass for a watchful one.
    """

    def __init__(self, engine: Engine, interval_s: float = 0.05) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.samples = 0
        self.comparisons = 0
        self.backwards: list[tuple[str, int, int]] = []
        self.vanished: list[str] = []
        self._seen: dict[str, int] = {}
        super().__init__("sampler")

    def _run(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                rows: dict[str, int] = dict(conn.exec_driver_sql(
                    "SELECT 'a:' || account_id, version FROM billing.account_projection UNION ALL "
                    "SELECT 't:' || transaction_id, version FROM billing.transaction_projection").all())
                conn.rollback()
                self._compare(rows)
                self.samples += 1
                time.sleep(self.interval_s)

    def _compare(self, rows: dict[str, int]) -> None:
        for key, version in self._seen.items():
            now = rows.get(key)
            self.comparisons += 1
            if now is None:
                self.vanished.append(key)
            elif now < version:
                self.backwards.append((key, version, now))
        self._seen = {**self._seen, **rows}


class ProjectorThread(_StoppableThread):
    def __init__(self, projector: LiveProjector) -> None:
        self.projector = projector
        super().__init__("projector")

    def _run(self) -> None:
        self.projector.run(self._stop)
