"""The second broker: one Apache Kafka per test session, beside the session's Tansu, and a fixture over both.

`broker_servers` is parametrized over `tansu` and `kafka`: a test that takes it (or `broker_event_store`) runs
once on each broker. Apache Kafka shares the session's PostgreSQL; its jars are resolved by Maven once into
`.billing-stack/test-kafka-lib` (kept across sessions, like the stack's own cache) and its data lives in the
session's temp folder. Without Java or Maven the Kafka half is skipped with the reason, except on CI
(`CI=true`), where a missing broker is a failure.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.config import Topics
from billing_sandbox.stack import brokers
from billing_sandbox.stack.common import LOOPBACK, free_ports, stop_process
from billing_sandbox.stack.kafka import ApacheKafka

ROOT = Path(__file__).resolve().parents[2]
JAR_CACHE = ROOT / ".billing-stack" / "test-kafka-lib"
BROKERS = ("tansu", "kafka")


def kafka_is_available() -> bool:
    return bool(shutil.which("java") and shutil.which("mvn"))


def skip_without_kafka() -> None:
    if not kafka_is_available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the suite on Apache Kafka too, but java or mvn is not on PATH")
        pytest.skip("no Java/Maven on this machine: Apache Kafka needs Java 17+ and Maven (Tansu, the default "
                    "broker, runs without them)")


def resolve_jars_once(broker: ApacheKafka) -> None:
    """Resolve the shared jar cache under a file lock: pytest-xdist's workers each start a Kafka of their own,
    and a second resolve replaces the folder a first worker's JVM may be loading classes from."""
    JAR_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with (JAR_CACHE.parent / "test-kafka-lib.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        broker.ensure_jars(broker.tools())


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Apache Kafka 4.x node (KRaft) for the session; stopped cleanly after it."""
    skip_without_kafka()
    broker = ApacheKafka(tmp_path_factory.mktemp("kafka"), JAR_CACHE)
    resolve_jars_once(broker)
    ports = free_ports(broker.port_count)
    pid = brokers.start(broker, ports)
    try:
        yield f"{LOOPBACK}:{ports[0]}"
    finally:
        stop_process(pid, broker.stop_grace)  # no JVM outlives the session


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    """The broker this run of the test is on: `tansu` (the session's stack) or `kafka`."""
    return str(request.param)


@pytest.fixture
def broker_bootstrap(broker: str, request: pytest.FixtureRequest) -> str:
    """The bootstrap servers of this run's broker."""
    if broker == "kafka":
        return str(request.getfixturevalue("kafka_bootstrap"))
    return str(request.getfixturevalue("servers").bootstrap_servers)


@pytest.fixture
def broker_event_store(broker_bootstrap: str) -> Iterator[KafkaEventStore]:
    """This test's event store on this run's broker: its own topics, three partitions each, created now."""
    store = KafkaEventStore(broker_bootstrap, Topics.with_prefix(f"t{uuid.uuid4().hex[:10]}."), partitions=3)
    store.ensure_topics()
    yield store
    store.close()
