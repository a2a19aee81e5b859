"""Apache Kafka's process killed mid-replay and started again: the replay waits, resumes and reports as if nothing
happened. Only Apache Kafka keeps its log across a restart (Tansu holds events in memory), so this fault is its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.brokers import JAR_CACHE, resolve_jars_once, skip_without_kafka
from support.tcp_proxy import free_port

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.config import Topics
from billing_domain.core.findings import ReconciliationReport
from billing_domain.services.reconcile import ReconcileOptions, reconcile_all
from billing_sandbox.simulate import SimulationConfig, simulate
from billing_sandbox.stack import brokers
from billing_sandbox.stack.common import LOOPBACK, kill_process, stop_process
from billing_sandbox.stack.kafka import ApacheKafka

AT_ONE_MOMENT = ReconcileOptions(clock=lambda: datetime(2026, 6, 1, tzinfo=UTC))
FAULT = "Apache Kafka's process killed and restarted mid-replay"


@dataclass
class RestartableKafka:
    broker: ApacheKafka
    ports: list[int]
    pid: int

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.ports[0]}"

    def kill(self) -> None:
        kill_process(self.pid)  # SIGKILL: no clean shutdown, the log is recovered at the next start

    def start(self) -> None:
        self.pid = brokers.start(self.broker, self.ports)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableKafka]:
    skip_without_kafka()
    broker = ApacheKafka(Path(tmp_path_factory.mktemp("kafka-restart")), JAR_CACHE)
    resolve_jars_once(broker)
    ports = [free_port(), free_port()]
    node = RestartableKafka(broker, ports, brokers.start(broker, ports))
    try:
        yield node
    finally:
        stop_process(node.pid, broker.stop_grace)


def _comparable(report: ReconciliationReport) -> tuple[Any, ...]:
    return ([f.to_json() for f in report.findings], [(i.currency, i.identity, i.left, i.right) for i in report.ledger],
            report.cut.to_json())


def test_a_replay_survives_the_broker_killed_and_restarted_mid_read(
        kafka: RestartableKafka, projection_store: ProjectionStore, figures: Any) -> None:
    store = KafkaEventStore(kafka.address, Topics.with_prefix(f"restart{free_port()}."), partitions=3)
    simulate(store, projection_store, SimulationConfig(seed=29, accounts=120, days=2, bulk_projections=True))
    clean = reconcile_all(store, projection_store, options=AT_ONE_MOMENT)
    assert clean.findings, "the simulated faults give findings to compare"

    figures.injected(FAULT)
    restarted = threading.Event()
    batches = {"seen": 0}

    def kill_after_first_batch(_: int) -> None:
        batches["seen"] += 1
        if batches["seen"] == 1:
            kafka.kill()
            threading.Thread(target=lambda: (kafka.start(), restarted.set()), daemon=True).start()

    store.stall_timeout_s = 60  # a cold JVM start and log recovery take several seconds on two cores
    faulted = reconcile_all(store, projection_store, options=AT_ONE_MOMENT, progress=kill_after_first_batch)
    assert restarted.wait(60), "the broker did not come back"
    assert batches["seen"] > 1, "the replay read on after the restart"
    assert _comparable(faulted) == _comparable(clean)
    assert faulted.stats["events_read"] == clean.stats["events_read"]
    figures.survived(FAULT)
    store.close()
