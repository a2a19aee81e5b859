"""`billing-recon stack up|status|down` with BILLING_STACK_BROKER=kafka, as a user runs them: a real Apache Kafka
(KRaft, jars fetched by Maven) in a temporary stack folder. Events appended through our KafkaEventStore survive
`down` and `up` at the same offsets and on the same address, and the second `up` reuses the cached jars.

Skipped where Java or Maven is missing (a user's machine without a JDK), never on CI (CI=true), which has both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.config import Topics
from billing_domain.core.events import AccountCredited, AccountOpened, Event
from billing_sandbox.stack import EmbeddedStack
from billing_sandbox.stack.common import _alive

CLI = Path(sys.executable).parent / "billing-recon"
TOPICS = Topics.with_prefix("durable.")

if not (shutil.which("java") and shutil.which("mvn")) and os.environ.get("CI") != "true":
    pytest.skip("Apache Kafka needs Java 17+ and Maven on PATH (the embedded stack's Tansu does not)",
                allow_module_level=True)


def _stack(stack_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BILLING_STACK_DIR": str(stack_dir), "BILLING_STACK_BROKER": "kafka"}
    for name in ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "BILLING_DATABASE_URL"):  # the stack's own servers, not these
        env.pop(name, None)
    return subprocess.run([str(CLI), "stack", *args], env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def _up(stack_dir: Path) -> str:
    """`stack up`; the broker address it exported."""
    up = _stack(stack_dir, "up")
    assert up.returncode == 0, up.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
    return exports["BILLING_KAFKA_BOOTSTRAP_SERVERS"]


def _events() -> list[Event]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    opened = [Event(f"open-{i}", "AccountOpened", 1, "account", f"acc-{i}", 1, at, None,
                    AccountOpened("owner", "EUR", 0, 1_000_000)) for i in range(40)]
    credited = [Event(f"credit-{i}", "AccountCredited", 1, "account", f"acc-{i}", 2, at, None,
                      AccountCredited(100 + i, None, "deposit")) for i in range(40)]
    return opened + credited


def _log(servers: str) -> list[tuple[str, int, int, bytes, bytes]]:
    """Every message of our topics with its position, read through the store's consistent cut."""
    store = KafkaEventStore(servers, TOPICS, partitions=3)
    try:
        return sorted((m.topic(), m.partition(), m.offset(), m.key(), m.value())
                      for batch in store.read_cut() for m in batch)
    finally:
        store.close()


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("kafka-stack") / "stack"
    try:
        yield folder
    finally:
        EmbeddedStack(folder, "kafka").destroy()  # whatever the test did, no JVM outlives it


# One test, one stack: the first `up` (Maven, format, JVM) is the slow part, so every step shares it.
@pytest.mark.timeout(900)
def test_events_survive_down_and_up_on_the_same_address_and_the_jars_are_resolved_once(stack_dir: Path) -> None:
    before = _stack(stack_dir, "status")
    assert before.returncode == 1 and before.stdout.startswith("not running") and "kafka" in before.stdout

    servers = _up(stack_dir)
    status = _stack(stack_dir, "status")
    assert status.returncode == 0 and status.stdout.startswith("running: broker kafka: Apache Kafka 4."), status.stdout
    lib = stack_dir / "kafka" / "lib"
    marker = (lib / ".pom-sha256").stat()
    assert any(lib.glob("kafka_2.13-4.*.jar"))
    assert (stack_dir / "kafka" / "logs" / "server.log").stat().st_size > 0, "the broker logs to the stack folder"

    store = KafkaEventStore(servers, TOPICS, partitions=3)
    store.ensure_topics()
    assert store.append(_events()) == 80
    store.close()
    written = _log(servers)
    assert len(written) == 80

    pid = EmbeddedStack(stack_dir).status().broker_pid  # type: ignore[union-attr]
    down = _stack(stack_dir, "down")
    assert down.returncode == 0, down.stderr
    assert not _alive(pid), "down stops the JVM"
    after_down = _stack(stack_dir, "status")
    assert after_down.returncode == 1 and after_down.stdout.startswith("not running"), after_down.stdout

    assert _up(stack_dir) == servers, "the same ports again: addresses exported before stay valid"
    assert _log(servers) == written, "every event is back, at the same offsets"
    assert (lib / ".pom-sha256").stat().st_ino == marker.st_ino, "the second up reuses the cached jars"
    assert (stack_dir / "kafka" / "maven.log").read_text().count("$ ") == 1, "Maven ran once"
    assert _stack(stack_dir, "status").returncode == 0
