"""Real Kafka semantics on Apache Kafka (the session's KRaft node): what the contract's new lines ask and Tansu
cannot show.

- A transactional producer: committed events are replayed, aborted ones never are; the markers leave gaps in
  the offsets, so nothing may take offset n - 1 for the record before n (exact ends, tail marks, the projector's
  commits and lag); an open transaction holds the cut at the last stable offset (read_committed), and its
  events come in the next run, neither lost nor twice.
- Topic configurations that can lose events (compaction, finite retention, Apache Kafka's own 7-day default).

The broker-agnostic checks (tombstones, keyless messages, compression codecs, headers, a topic that can lose
events said loudly, a projector killed in a rebalance) run on both brokers from test_broker_semantics.py and
test_projector_rebalance.py. Skipped where Java or Maven is missing (a user's machine without a JDK), never on CI
(CI=true), which has both (tests/support/brokers.py's `kafka_bootstrap`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from support.broker_semantics import CLOCK_AT, T0, create_topics, new_log, reconcile, run_stores
from support.builders import EventFactory, fold, project, transfer_history

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.events import AccountCredited, Event, TransactionInitiated, encode_event
from billing_domain.core.exceptions import EventStoreError
from billing_domain.core.records import Topics
from billing_domain.core.topic_config import CAN_LOSE_EVENTS, SAFE
from billing_domain.services import point_in_time, projector_lag
from billing_domain.services.topic_safety import judge_topics
from billing_sandbox.projector import LiveProjector


@pytest.fixture(scope="module")
def kafka(kafka_bootstrap: str) -> str:
    """The session's Apache Kafka node (tests/support/brokers.py): one JVM for every Kafka test of a worker."""
    return kafka_bootstrap


# --- transactions ---------------------------------------------------------------------------------------------
class Engine:
    """The engine's transactional producer: each `append` is one transaction, committed, aborted or left open."""

    def __init__(self, bootstrap: str, log: KafkaEventStore) -> None:
        self.log = log
        self.producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"engine-{uuid.uuid4()}",
                                  "acks": "all", "linger.ms": 5})
        self.producer.init_transactions(60)

    def begin(self, events: list[Event]) -> None:
        self.producer.begin_transaction()
        for e in events:
            self.producer.produce(self.log.topic_for(e.aggregate_type), key=e.aggregate_id.encode(),
                                  value=encode_event(e))
        assert self.producer.flush(30) == 0  # on the broker, inside the open transaction

    def commit(self) -> None:
        self.producer.commit_transaction(30)

    def abort(self) -> None:
        self.producer.abort_transaction(30)

    def append(self, events: list[Event], *, commit: bool = True) -> None:
        self.begin(events)
        self.commit() if commit else self.abort()


def high_watermarks(bootstrap: str, log: KafkaEventStore) -> dict[tuple[str, int], int]:
    """The ends a read_uncommitted reader sees: past an open transaction's records."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{uuid.uuid4()}",
                         "isolation.level": "read_uncommitted"})
    try:
        return {tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)[1] for tp in log.all_partitions()}
    finally:
        consumer.close()


@pytest.fixture
def log(kafka: str) -> Iterator[KafkaEventStore]:
    store = new_log(kafka, partitions=1, prefix="txn")  # one partition a topic: the offsets below are known
    yield store
    store.close()


def test_committed_transactions_are_replayed_and_aborted_ones_never_happened(
        kafka: str, log: KafkaEventStore, projection_store: ProjectionStore) -> None:
    event = EventFactory(T0, id_prefix=f"txn-{uuid.uuid4().hex[:6]}")
    engine = Engine(kafka, log)
    history = transfer_history(event)
    engine.append(history)
    # An aborted transaction: had it been read, acc-a would hold two different v4 events (stream_corrupt) and
    # tx-9 would have no row (missing_projection).
    engine.append([event("acc-a", 4, AccountCredited(999_999, None, "deposit"), 4),
                   event("tx-9", 1, TransactionInitiated("acc-a", "acc-b", 1, "EUR"), 4)], commit=False)
    kept = [event("acc-a", 4, AccountCredited(5, None, "deposit"), 5), event("acc-b", 3, AccountCredited(7, None,
                                                                                                         "deposit"), 5)]
    engine.append(kept)
    committed = [*history, *kept]
    project(committed, projection_store)
    stores = run_stores(log, projection_store)

    full = reconcile(stores, "txn-full", full=True)
    assert full.findings == [] and full.stats["events_read"] == len(committed)
    assert full.stats["duplicates_ignored"] == 0
    assert full.cut.message_count > len(committed)  # the offsets the markers and the aborted records took

    # More of both at the tail: the checkpoint ends after a marker, the tail starts in a gap.
    engine.append([event("acc-b", 4, AccountCredited(1, None, "deposit"), 6)], commit=False)
    tail = [event("acc-a", 5, AccountCredited(3, None, "deposit"), 7)]
    engine.append(tail)
    committed += tail
    project(committed, projection_store)
    incremental = reconcile(stores, "txn-incremental")
    assert incremental.stats["replay_mode"] == "incremental", incremental.stats["replay_mode_reason"]
    assert incremental.findings == [] and incremental.stats["events_read"] == 1
    delta = reconcile(stores, "txn-delta", delta=True)
    assert delta.findings == [] and delta.stats["events_read"] == 0

    with projection_store.engine.begin() as conn:  # the projector, from nothing, applies only what was committed
        conn.exec_driver_sql("DELETE FROM billing.account_projection")
        conn.exec_driver_sql("DELETE FROM billing.transaction_projection")
    group = f"txn-projector-{uuid.uuid4().hex[:6]}"
    projector = LiveProjector(log, projection_store.engine, group)
    assert projector.run_until_caught_up(60) == len(committed)
    projector.close()
    folded = fold(committed)
    assert projection_store.read_accounts() == {k: a.state() for k, a in folded.accounts.items()}
    assert set(projection_store.read_transactions()) == {"tx-1"}
    lag = projector_lag.measure_lag(log, group)
    assert lag.total == 0, lag.to_json()  # a caught-up projector is not one event behind per trailing marker
    assert all(p.committed == p.end for p in lag.partitions)


def test_an_open_transaction_holds_the_cut_at_the_last_stable_offset_and_its_events_come_in_the_next_run(
        kafka: str, log: KafkaEventStore, projection_store: ProjectionStore) -> None:
    event = EventFactory(T0, id_prefix=f"open-{uuid.uuid4().hex[:6]}")
    engine = Engine(kafka, log)
    history = transfer_history(event)
    engine.append(history)
    pending = [event("acc-a", 4, AccountCredited(50, None, "deposit"), 4)]
    engine.begin(pending)  # left open while the run reads
    after = [event("acc-b", 3, AccountCredited(7, None, "deposit"), 5)]
    log.append(after)  # committed at once, but behind the open transaction: not readable before it ends
    project(history, projection_store)
    accounts = (log.topics.accounts, 0)
    stable = log.exact_ends([accounts])[accounts].end
    assert stable < high_watermarks(kafka, log)[accounts]  # the last stable offset, not the high watermark
    stores = run_stores(log, projection_store)

    began = time.monotonic()
    first = reconcile(stores, "open-1", full=True)
    assert time.monotonic() - began < 15  # the read ends at the stable offset: it does not wait for the transaction
    assert first.findings == [] and first.stats["events_read"] == len(history)
    assert first.cut.end[accounts] == stable
    one = reconcile(stores, "open-one", entity=("account", "acc-b"))  # from the checkpoint: a tail of nothing
    assert one.findings == [] and one.stats["events_read"] == 0, one.stats
    assert point_in_time.cut_at(log, T0 + timedelta(days=1)).stop[accounts] == stable

    engine.commit()
    project([*history, *pending, *after], projection_store)
    second = reconcile(stores, "open-2")
    assert second.stats["replay_mode"] == "incremental", second.stats["replay_mode_reason"]
    assert second.findings == [] and second.stats["events_read"] == 2  # neither lost nor read twice
    assert second.stats["duplicates_ignored"] == 0

    more = [event("acc-a", 5, AccountCredited(1_000, None, "deposit"), 6)]
    engine.begin(more)
    later = [event("acc-b", 4, AccountCredited(2, None, "deposit"), 7)]
    log.append(later)
    engine.abort()  # it never happened: only what came after it is read
    project([*history, *pending, *after, *later], projection_store)
    third = reconcile(stores, "open-3")
    assert third.findings == [] and third.stats["events_read"] == 1
    everything = reconcile(stores, "open-full", full=True)
    assert everything.findings == [] and everything.stats["events_read"] == len(history) + 3


def test_offsets_have_gaps_and_every_read_beyond_a_cut_allows_for_them(kafka: str, log: KafkaEventStore) -> None:
    event = EventFactory(T0, id_prefix=f"gap-{uuid.uuid4().hex[:6]}")
    engine = Engine(kafka, log)
    accounts = (log.topics.accounts, 0)
    opened, _, deposit, *_ = transfer_history(event)
    engine.append([opened, deposit])  # offsets 0, 1; the commit marker 2
    engine.append([event("acc-a", 3, AccountCredited(1, None, "deposit"))], commit=False)  # 3; abort marker 4
    end = log.exact_ends([accounts])[accounts]
    assert end.end == 5 and end.last is not None and end.last.offset() == 1  # the newest event, behind the markers
    assert log.read_values({accounts: 4}) == {accounts: encode_event(deposit)}  # what the tail mark of end 5 is
    assert log.read_values({accounts: 1}) == {accounts: encode_event(deposit)}
    assert log.read_values({accounts: 5}) == {accounts: None}  # past the end
    reader = log.read_cut(topics=[log.topics.accounts], stop={accounts: 3})
    assert [m.offset() for batch in reader for m in batch] == [0, 1] and reader.cut.end[accounts] == 3

    next_one = event("acc-a", 3, AccountCredited(2, None, "deposit"), 1)
    engine.append([next_one])  # offset 5; marker 6
    found = log.records_at({accounts: 2})  # a marker: the record "at" it is the first after it
    assert found[accounts].offset() == 5 and found[accounts].value() == encode_event(next_one)
    assert log.records_at({accounts: 7}) == {}

    engine.begin([event("acc-a", 4, AccountCredited(3, None, "deposit"), 2)])  # open at offset 7
    assert log.exact_ends([accounts])[accounts].end == 7
    assert log.exact_ends([accounts])[accounts].last.offset() == 5  # type: ignore[union-attr]
    engine.abort()


def test_a_checkpoint_whose_end_follows_a_marker_still_tells_a_recreated_topic(
        kafka: str, log: KafkaEventStore, projection_store: ProjectionStore) -> None:
    """The tail mark is of the last record before the checkpoint's end: taken at the offset before it (a marker,
    holding no record), every checkpoint's mark was that of "nothing", and so was a shorter recreated topic's."""
    event = EventFactory(T0, id_prefix=f"mark-{uuid.uuid4().hex[:6]}")
    Engine(kafka, log).append(transfer_history(event))
    project(transfer_history(event), projection_store)
    stores = run_stores(log, projection_store)
    assert reconcile(stores, "mark-1", full=True).findings == []

    admin = AdminClient({"bootstrap.servers": kafka})
    for future in admin.delete_topics(list(log.topics.all())).values():
        future.result(30)
    deadline = time.monotonic() + 60
    while set(log.topics.all()) & set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "topics not deleted"
        time.sleep(0.2)
    recreated = KafkaEventStore(kafka, log.topics, partitions=1)
    for _ in range(100):  # the broker may still be finishing the deletion
        try:
            recreated.ensure_topics()
            break
        except EventStoreError:  # retried until the names are free again
            time.sleep(0.2)
    fresh = EventFactory(T0, id_prefix=f"mark2-{uuid.uuid4().hex[:6]}")
    shorter = transfer_history(fresh)[:3]  # acc-a and acc-b opened, acc-a's deposit; no transfer
    recreated.append(shorter)
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM billing.account_projection")
        conn.exec_driver_sql("DELETE FROM billing.transaction_projection")
    project(shorter, projection_store)
    report = reconcile(run_stores(recreated, projection_store), "mark-2")
    assert report.stats["replay_mode"] == "full" and "recreated or truncated" in report.stats["replay_mode_reason"]
    assert report.findings == [] and report.stats["events_read"] == 3
    recreated.close()


def test_the_projector_lag_of_a_group_that_stopped_on_a_marker_names_its_oldest_unapplied_event(
        kafka: str, log: KafkaEventStore) -> None:
    """A projector that commits the offset after its last record (kafkajs does) stops on the commit marker: its
    oldest unapplied event is the first record after it, not "none" (which hid the age from the lag verdict)."""
    event = EventFactory(T0, id_prefix=f"lag-{uuid.uuid4().hex[:6]}")
    engine = Engine(kafka, log)
    accounts = (log.topics.accounts, 0)
    opened, _, deposit, *_ = transfer_history(event)
    engine.append([opened, deposit])  # 0, 1; marker 2
    group = f"lag-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(accounts[0], 0, 2)], asynchronous=False)  # after its last record
    consumer.close()
    unapplied = event("acc-a", 3, AccountCredited(4, None, "deposit"), 30)
    engine.append([unapplied])  # 3; marker 4
    lag = projector_lag.measure_lag(log, group, now=CLOCK_AT)
    [partition] = [p for p in lag.partitions if (p.topic, p.partition) == accounts]
    assert partition.oldest_unapplied_at == unapplied.occurred_at
    assert partition.newest_at == unapplied.occurred_at  # the newest event, behind its marker
    assert lag.oldest_unapplied_age == CLOCK_AT - unapplied.occurred_at


# --- topic configurations -------------------------------------------------------------------------------------
def test_apache_kafkas_default_retention_and_a_topic_altered_to_compaction_are_warnings(kafka: str) -> None:
    topics = Topics.with_prefix(f"cfg{uuid.uuid4().hex[:8]}.")
    create_topics(kafka, {t: {} for t in topics.all()})  # the broker's defaults: deleted after 7 days
    stats: dict[str, Any] = {}
    judge_topics(KafkaEventStore(kafka, topics), stats)
    assert stats["topic_config_status"] == CAN_LOSE_EVENTS and len(stats["warnings"]) == 2
    assert all("retention.ms=604800000 (7 days)" in w for w in stats["warnings"])

    admin = AdminClient({"bootstrap.servers": kafka})
    forever = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
               for name, value in (("retention.ms", "-1"), ("retention.bytes", "-1"))]
    resources = [ConfigResource(ResourceType.TOPIC, topics.transactions, incremental_configs=forever),
                 ConfigResource(ResourceType.TOPIC, topics.accounts, incremental_configs=[
                     *forever, ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(30)
    stats = {}
    judge_topics(KafkaEventStore(kafka, topics), stats)  # a new store: the configuration is kept for a while
    [warning] = stats["warnings"]
    assert topics.accounts in warning and "cleanup.policy=compact" in warning
    assert stats["topic_config"][topics.transactions] == {"cleanup.policy": "delete", "retention.ms": "-1",
                                                          "retention.bytes": "-1"}

    kept = new_log(kafka, prefix="kept")  # what ensure_topics creates is kept forever on Apache Kafka too
    stats = {}
    judge_topics(kept, stats)
    assert stats["topic_config_status"] == SAFE and stats["warnings"] == []
    kept.close()

