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


@pytest.fixture
def topics() -> Topics:
    """Topic names of this test alone, so tests never see each other's events."""
    return Topics.with_prefix(f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
def event_store(servers: Servers, topics: Topics) -> Iterator[KafkaEventStore]:
    store = KafkaEventStore(servers.bootstrap_servers, topics, partitions=3)
    store.ensure_topics()
    yield store
    store.close()
