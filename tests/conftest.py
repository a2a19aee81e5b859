"""Shared fixtures: one real embedded stack per test session, fresh topics and a fresh database per test.

Integration tests talk to real servers (the embedded PostgreSQL and the Tansu broker), never mocks.
When BILLING_KAFKA_BOOTSTRAP_SERVERS and BILLING_DATABASE_URL are set, those servers are used instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine, make_url

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.config import Topics
from billing_sandbox.stack import EmbeddedStack

# The reliability figures' hooks: here, at the top, so an xdist controller (which loads no conftest below this
# one) prints and writes the figures its workers send.
pytest_plugins = ["support.figures_plugin", "support.brokers"]


@dataclass(frozen=True)
class Servers:
    bootstrap_servers: str
    database_url: str  # the server's maintenance database; tests create their own databases
    stack: EmbeddedStack | None


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    kafka = os.environ.get("BILLING_KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("BILLING_DATABASE_URL")
    if kafka and database:
        yield Servers(kafka, database, None)
        return
    stack = EmbeddedStack(Path(tmp_path_factory.mktemp("stack")))
    info = stack.up()
    try:
        yield Servers(info.bootstrap_servers, info.database_url, stack)
    finally:
        stack.destroy()


def _create_database(server_url: str) -> str:
    url = make_url(server_url)
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def database_url(servers: Servers) -> str:
    """A fresh, empty database on the real server, for this test alone."""
    return _create_database(servers.database_url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def projection_store(engine: Engine) -> ProjectionStore:
    store = ProjectionStore(engine)
    store.ensure_schema()
    return store


class _StoresMadeAhead:
    """Each test's event store, made while the test before it ran.

    An idempotent producer's first append waits for its producer id, which librdkafka fetches on a timer
    from the producer's creation: a store made just before its first append waited half a second there,
    once per test (70 s of a run). The store here is this test's own, with this test's own topics and
    producer; only the moment its producer was created moved, to a test earlier.
    """

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._next = self._make()

    def _make(self) -> KafkaEventStore:
        store = KafkaEventStore(self.bootstrap_servers, Topics.with_prefix(f"t{uuid.uuid4().hex[:10]}."),
                                partitions=3)
        store.append([])  # creates the producer now, which then fetches its id in the background
        return store

    def take(self) -> KafkaEventStore:
        store, self._next = self._next, self._make()
        return store

    def close(self) -> None:
        self._next.close()


@pytest.fixture(scope="session")
def _stores_made_ahead(servers: Servers) -> Iterator[_StoresMadeAhead]:
    stores = _StoresMadeAhead(servers.bootstrap_servers)
    yield stores
    stores.close()


@pytest.fixture
def _this_tests_store(_stores_made_ahead: _StoresMadeAhead) -> Iterator[KafkaEventStore]:
    store = _stores_made_ahead.take()
    yield store
    store.close()


@pytest.fixture
def topics(_this_tests_store: KafkaEventStore) -> Topics:
    """Topic names of this test alone, so tests never see each other's events."""
    return _this_tests_store.topics


@pytest.fixture
def event_store(_this_tests_store: KafkaEventStore) -> KafkaEventStore:
    """This test's event store on the real broker: its own topics, three partitions each, created now."""
    _this_tests_store.ensure_topics()
    return _this_tests_store
