"""Fault 12: redelivery by the broker itself (the contract's at-least-once delivery), not fed in memory.

- A projector's group offsets are rewound on the broker: a restarted projector is sent every event again,
  skips each one it already applied and applies exactly the events that are new.
- Every event is appended to the broker a second time (a producer's retry), each copy at a new offset: a
  full reconciliation of the doubled log reports what it reported before.

Both run on Tansu and on Apache Kafka.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from reliability_helpers import create_database, damaged_history, dump_projections
from support.figures import TestFigures

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.config import Topics
from billing_domain.core.events import AccountCredited, Event
from billing_domain.core.findings import ReconciliationReport
from billing_domain.services.reconcile import ReconcileOptions, reconcile_all, replay_all
from billing_sandbox.projector import LiveProjector
from billing_sandbox.simulate import SimulationConfig, simulate

# Both reports are judged by one clock (stuck, the lag window): only the redelivery may differ between them.
AT_ONE_MOMENT = ReconcileOptions(clock=lambda: datetime(2026, 6, 1, tzinfo=UTC))


def _history(servers: Any, seed: int, *, faults: bool) -> tuple[KafkaEventStore, ProjectionStore]:
    store = KafkaEventStore(servers.bootstrap_servers, Topics.with_prefix(f"redel{uuid.uuid4().hex[:8]}."),
                            partitions=3)
    projections = ProjectionStore(make_engine(create_database(servers.database_url)))
    simulate(store, projections, SimulationConfig(seed=seed, accounts=40, days=1, faults=faults,
                                                  bulk_projections=True))
    return store, projections


def _rewind(store: KafkaEventStore, group: str) -> None:
    """Commit offset 0 on every partition for `group`, as an operator resetting a consumer group would."""
    consumer = Consumer({"bootstrap.servers": store.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, 0) for t in store.topics.all() for p in range(3)],
                        asynchronous=False)
    finally:
        consumer.close()


def _committed(store: KafkaEventStore, group: str) -> int:
    consumer = Consumer({"bootstrap.servers": store.bootstrap_servers, "group.id": group})
    try:
        partitions = [TopicPartition(t, p) for t in store.topics.all() for p in range(3)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=30))
    finally:
        consumer.close()


def _new_deposits(store: KafkaEventStore, projections: ProjectionStore, n: int) -> list[Event]:
    heads = replay_all(store, projections).replay.accounts
    account = next(a for _, a in sorted(heads.items()) if a.status == "active" and not a.violations)
    return [Event(str(uuid.uuid4()), "AccountCredited", 1, "account", account.aggregate_id, account.version + i,
                  datetime(2026, 1, 2, tzinfo=UTC), None, AccountCredited(1, None, "deposit"))
            for i in range(1, n + 1)]


@dataclass(frozen=True)
class OnBroker:
    """This run's broker (Tansu or Apache Kafka) with the session's PostgreSQL."""

    broker: str
    bootstrap_servers: str
    database_url: str

    def named(self, fault: str) -> str:
        """The figure's name: the Tansu runs keep the names the published figures have always had."""
        return fault + (" on Apache Kafka" if self.broker == "kafka" else "")


@pytest.fixture
def on_broker(broker: str, broker_bootstrap: str, servers: Any) -> OnBroker:
    return OnBroker(broker, broker_bootstrap, servers.database_url)


def test_a_projector_sent_every_event_again_applies_only_the_new_ones(on_broker: OnBroker,
                                                                      figures: TestFigures) -> None:
    servers = on_broker
    store, projections = _history(servers, seed=121, faults=False)
    with projections.engine.begin() as conn:  # the projector builds the rows itself, from the log
        conn.exec_driver_sql("TRUNCATE billing.account_projection, billing.transaction_projection")
    group = f"redelivery-{uuid.uuid4().hex[:8]}"
    first = LiveProjector(store, projections.engine, group)
    applied = first.run_until_caught_up(120)
    first.close()
    total = _committed(store, group)
    assert applied > 0 and total > 0
    before = dump_projections(projections.engine)

    figures.injected(servers.named("broker redelivers every event to a restarted projector"))
    _rewind(store, group)
    assert _committed(store, group) == 0, "the broker took the rewound offsets"
    new = _new_deposits(store, projections, 3)
    store.append(new)
    second = LiveProjector(store, projections.engine, group)
    reapplied = second.run_until_caught_up(120)
    second.close()
    assert _committed(store, group) == total + len(new)  # it was sent, and read, every message again
    assert reapplied == len(new)  # each redelivered event skipped, each new one applied once
    after = projections.read_accounts()
    account = after[new[0].aggregate_id]
    assert account.version == new[-1].aggregate_version
    report = reconcile_all(store, projections, options=AT_ONE_MOMENT)
    assert [f for f in report.findings if f.kind.value != "stuck"] == [], [f.to_json() for f in report.findings[:3]]
    assert dump_projections(projections.engine) != before  # the new deposits, and nothing else, moved rows
    figures.rows_checked_after_races += len(after)
    figures.survived(servers.named("broker redelivers every event to a restarted projector"))


def _comparable(report: ReconciliationReport) -> tuple[Any, ...]:
    return ([f.to_json() for f in report.findings], [(i.currency, i.identity, i.left, i.right) for i in report.ledger])


def test_every_event_appended_twice_to_the_broker_changes_no_finding(on_broker: OnBroker,
                                                                   figures: TestFigures) -> None:
    servers = on_broker
    damaged = damaged_history(servers.bootstrap_servers, create_database(servers.database_url), seed=131,
                              accounts=60)
    store, projections = damaged.event_store, damaged.projections
    once = reconcile_all(store, projections, options=AT_ONE_MOMENT)
    assert len(once.findings) >= len(damaged.deleted) + len(damaged.corrupted)  # findings to compare
    copies = [RawRecord(m.topic() or "", m.key(), m.value()) for batch in store.read_cut() for m in batch]

    figures.injected(servers.named("every event appended twice to the broker"))
    store.append_raw(copies)
    twice = reconcile_all(store, projections, options=AT_ONE_MOMENT)
    assert twice.stats["events_read"] == 2 * once.stats["events_read"]  # the copies were read...
    assert _comparable(twice) == _comparable(once)  # ...and none was applied twice
    figures.survived(servers.named("every event appended twice to the broker"))
