"""The `EventLog` port's contract: what the services rely on of the log, checked on Kafka and on the fake.

The reads the replay, the incremental run, the delta run and the lag judge make: per-partition ordered
offsets, records keyed to one partition per aggregate, a cut read to each partition's exact end (or to a stop),
scans and exact ends, a group's committed offsets, offsets for a time, and a log reopened elsewhere.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from support.builders import EventFactory
from support.fakes import InMemoryEventLog

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.events import (
    AccountCredited,
    AccountOpened,
    Event,
    TransactionCompleted,
    TransactionInitiated,
    decode_event,
    encode_event,
)
from billing_domain.core.exceptions import EventStoreError
from billing_domain.core.records import LogRecord, Topics
from billing_domain.ports import EventLog

PARTITIONS = 3
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: stamps of the records written with an explicit time


class LogHarness(Protocol):
    """The log under test, and what a test needs that the port does not offer (a group's commit, a stamp)."""

    @property
    def log(self) -> EventLog: ...

    def commit(self, group_id: str, offsets: dict[TopicPartitionKey, int]) -> None: ...

    def append_stamped(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None: ...


def history() -> list[Event]:
    """Six accounts opened and credited, three transfers initiated and completed: 18 events on 9 keys."""
    event = EventFactory()
    accounts = [e for i in range(6) for e in (event(f"acc-{i}", 1, AccountOpened(f"owner-{i}", "EUR", 0, 10**6)),
                                             event(f"acc-{i}", 2, AccountCredited(100 * (i + 1), None, "deposit"), 1))]
    transfers = [e for i in range(3)
                 for e in (event(f"tx-{i}", 1, TransactionInitiated("acc-0", "acc-1", 10, "EUR"), 2),
                           event(f"tx-{i}", 2, TransactionCompleted(), 3))]
    return accounts + transfers


def read_all(log: EventLog, **kwargs: Any) -> tuple[list[LogRecord], Cut]:
    reader = log.read_cut(**kwargs)
    records = [record for batch in reader for record in batch]
    return records, reader.cut


def by_partition(records: Sequence[LogRecord]) -> dict[TopicPartitionKey, list[LogRecord]]:
    grouped: dict[TopicPartitionKey, list[LogRecord]] = {}
    for r in records:
        grouped.setdefault((r.topic() or "", r.partition() or 0), []).append(r)
    return grouped


def ends_of(records: Sequence[LogRecord]) -> dict[TopicPartitionKey, int]:
    return {tp: len(rs) for tp, rs in by_partition(records).items()}


@dataclass
class Populated:
    harness: LogHarness
    events: list[Event]

    @property
    def log(self) -> EventLog:
        return self.harness.log

    def full(self) -> tuple[list[LogRecord], Cut]:
        return read_all(self.log)


class EventLogContract:
    """Every `EventLog` does this. `harness` is an empty log of its own; `populated` one holding `history()`,
    shared by the tests of a class that only read."""

    @pytest.fixture
    def harness(self) -> LogHarness:
        raise NotImplementedError

    @pytest.fixture
    def populated(self) -> Populated:
        raise NotImplementedError

    # --- topics and partitions ----------------------------------------------------------------------------
    def test_each_aggregate_type_has_its_topic(self, populated: Populated) -> None:
        log = populated.log
        assert log.topic_for("account") == log.topics.accounts
        assert log.topic_for("transaction") == log.topics.transactions
        assert log.topics.accounts != log.topics.transactions

    def test_partitions_are_listed_per_topic_and_for_both_topics(self, populated: Populated) -> None:
        log = populated.log
        accounts, transactions = log.topics.all()
        assert log.partitions_of(accounts) == log.partitions_of(transactions) == list(range(PARTITIONS))
        assert log.all_partitions() == [(accounts, p) for p in range(PARTITIONS)] + [
            (transactions, p) for p in range(PARTITIONS)]
        assert log.all_partitions([transactions]) == [(transactions, p) for p in range(PARTITIONS)]

    def test_a_topic_that_does_not_exist_is_an_error(self, populated: Populated) -> None:
        with pytest.raises(EventStoreError):
            populated.log.partitions_of(f"no-such-topic-{uuid.uuid4().hex[:8]}")

    # --- appends and the records' shape -------------------------------------------------------------------
    def test_append_confirms_every_event_and_keys_it_by_its_aggregate(self, harness: LogHarness) -> None:
        events = history()
        assert harness.log.append(events) == len(events)
        records, _ = read_all(harness.log)
        assert sorted((r.key(), r.value()) for r in records) == sorted(
            (e.aggregate_id.encode(), encode_event(e)) for e in events)
        for record in records:
            event = decode_event(record.value() or b"")
            assert record.topic() == harness.log.topic_for(event.aggregate_type)

    def test_an_aggregates_records_share_one_partition_in_append_order(self, populated: Populated) -> None:
        records, _ = populated.full()
        partitions: dict[bytes | None, set[int | None]] = {}
        versions: dict[bytes | None, list[int]] = {}
        for r in records:
            partitions.setdefault(r.key(), set()).add(r.partition())
            versions.setdefault(r.key(), []).append(decode_event(r.value() or b"").aggregate_version)
        assert all(len(p) == 1 for p in partitions.values())
        assert all(v == sorted(v) for v in versions.values())
        assert len({p for ps in partitions.values() for p in ps}) > 1  # nine keys do not all hash alike

    def test_offsets_count_from_zero_in_each_partition_without_gaps(self, populated: Populated) -> None:
        records, _ = populated.full()
        for rs in by_partition(records).values():
            assert [r.offset() for r in rs] == list(range(len(rs)))

    # --- cuts ---------------------------------------------------------------------------------------------
    def test_a_cut_reads_every_record_once_the_transaction_topic_first(self, populated: Populated) -> None:
        records, cut = populated.full()
        assert len(records) == len(populated.events) == cut.message_count
        topics = [r.topic() for r in records]
        transactions, accounts = populated.log.topics.transactions, populated.log.topics.accounts
        assert topics == [transactions] * topics.count(transactions) + [accounts] * topics.count(accounts)

    def test_a_cut_ends_at_each_partitions_exact_end_empty_partitions_included(self, harness: LogHarness) -> None:
        [event] = history()[:1]
        harness.log.append([event])
        records, cut = read_all(harness.log)
        [record] = records
        tp = (record.topic() or "", record.partition() or 0)
        assert cut.end == {p: (1 if p == tp else 0) for p in harness.log.all_partitions()}
        assert cut.start == dict.fromkeys(harness.log.all_partitions(), 0)

    def test_a_cut_from_offsets_reads_from_there(self, populated: Populated) -> None:
        everything, full = populated.full()
        start = {tp: end // 2 for tp, end in full.end.items()}
        records, cut = read_all(populated.log, start=start)
        assert cut.start == start and cut.end == full.end
        assert [(r.topic(), r.partition(), r.offset()) for r in records] == [
            (r.topic(), r.partition(), r.offset()) for r in everything
            if (r.offset() or 0) >= start[(r.topic() or "", r.partition() or 0)]]

    def test_a_cut_to_a_stop_reads_before_it_and_nothing_of_a_partition_it_leaves_out(
            self, populated: Populated) -> None:
        _, full = populated.full()
        named = [tp for tp, end in full.end.items() if end >= 2]
        first, beyond = named[0], named[1]
        stop = {first: 1, beyond: full.end[beyond] + 100}
        records, cut = read_all(populated.log, stop=stop)
        assert ends_of(records) == {first: 1, beyond: full.end[beyond]}
        assert cut.end[first] == 1 and cut.end[beyond] == full.end[beyond]  # a stop past the end: the end
        assert all(cut.end[tp] == 0 for tp in full.end if tp not in stop)

    def test_a_cut_of_some_partitions_or_of_one_topic_reads_only_those(self, populated: Populated) -> None:
        everything, full = populated.full()
        some = {tp for tp, end in full.end.items() if end > 0}
        chosen = {sorted(some)[0]}
        records, cut = read_all(populated.log, partitions=chosen)
        assert set(ends_of(records)) == chosen and set(cut.end) == chosen
        accounts = populated.log.topics.accounts
        records, cut = read_all(populated.log, topics=[accounts])
        assert {r.topic() for r in records} == {accounts}
        assert len(records) == sum(1 for r in everything if r.topic() == accounts)
        assert set(cut.end) == {(accounts, p) for p in range(PARTITIONS)}

    def test_the_progress_callback_counts_every_record(self, populated: Populated) -> None:
        counts: list[int] = []
        records, _ = read_all(populated.log, on_batch=counts.append)
        assert sum(counts) == len(records) and all(c > 0 for c in counts)

    def test_a_cut_from_the_last_cuts_end_reads_only_what_came_since(self, harness: LogHarness) -> None:
        events = history()
        harness.log.append(events[:10])
        _, first = read_all(harness.log)
        harness.log.append(events[10:])
        records, second = read_all(harness.log, start=first.end)
        assert sorted(r.value() or b"" for r in records) == sorted(encode_event(e) for e in events[10:])
        assert second.start == first.end and second.message_count == len(events) - 10

    # --- records at offsets, scans, ends ------------------------------------------------------------------
    def test_values_and_records_are_read_at_given_offsets(self, populated: Populated) -> None:
        everything, full = populated.full()
        tp, end = next((tp, end) for tp, end in full.end.items() if end >= 2)
        empty = next((p for p, e in full.end.items() if e == 0), None)
        wanted = {tp: end - 1}
        expected = next(r for r in everything if (r.topic(), r.partition(), r.offset()) == (tp[0], tp[1], end - 1))
        assert populated.log.read_values(wanted) == {tp: expected.value()}
        found = populated.log.records_at(wanted)
        assert list(found) == [tp]
        assert (found[tp].key(), found[tp].value(), found[tp].offset()) == (expected.key(), expected.value(), end - 1)
        beyond = {tp: end} | ({empty: 0} if empty else {})
        assert populated.log.read_values(beyond) == dict.fromkeys(beyond)
        assert populated.log.records_at(beyond) == {}

    def test_a_scan_reads_each_partition_from_its_start_to_its_exact_end(self, populated: Populated) -> None:
        _, full = populated.full()
        starts = {tp: min(1, end) for tp, end in full.end.items()}
        scan = populated.log.scan(starts)
        records = list(scan)
        assert scan.read == len(records) == sum(end - starts[tp] for tp, end in full.end.items())
        assert scan.ends == full.end
        for tp, rs in by_partition(records).items():
            assert [r.offset() for r in rs] == list(range(starts[tp], full.end[tp]))

    def test_a_finished_partition_is_read_no_further(self, populated: Populated) -> None:
        _, full = populated.full()
        longest = max(full.end, key=lambda tp: full.end[tp])
        other = next(tp for tp, end in full.end.items() if tp != longest and end > 0)
        assert full.end[longest] >= 2
        scan = populated.log.scan({longest: 0, other: 0})
        seen: list[TopicPartitionKey] = []
        for r in scan:
            tp = (r.topic() or "", r.partition() or 0)
            seen.append(tp)
            if tp == longest:
                scan.finish(longest)
        assert seen.count(longest) == 1 and seen.count(other) == full.end[other]
        assert longest not in scan.ends and scan.ends[other] == full.end[other]

    def test_exact_ends_name_the_end_and_the_last_record(self, populated: Populated) -> None:
        everything, full = populated.full()
        ends = populated.log.exact_ends(full.end)
        assert {tp: e.end for tp, e in ends.items()} == full.end
        last = {tp: rs[-1] for tp, rs in by_partition(everything).items()}
        for tp, e in ends.items():
            if full.end[tp] == 0:
                assert e.last is None
            else:
                assert e.last is not None and (e.last.offset(), e.last.value()) == (
                    last[tp].offset(), last[tp].value())

    def test_an_empty_partitions_exact_end_is_zero_without_a_record(self, harness: LogHarness) -> None:
        ends = harness.log.exact_ends(harness.log.all_partitions())
        assert {tp: (e.end, e.last) for tp, e in ends.items()} == {
            tp: (0, None) for tp in harness.log.all_partitions()}

    def test_reported_ends_are_never_past_the_exact_ones(self, populated: Populated) -> None:
        _, full = populated.full()
        reported = populated.log.reported_ends(full.end)
        assert set(reported) == set(full.end)
        assert all(0 <= reported[tp] <= end for tp, end in full.end.items())

    def test_a_fresh_log_starts_every_partition_at_zero(self, populated: Populated) -> None:
        partitions = populated.log.all_partitions()
        assert populated.log.log_starts(partitions) == dict.fromkeys(partitions, 0)

    # --- consumer groups and time -------------------------------------------------------------------------
    def test_a_groups_committed_offsets_and_none_where_it_committed_none(self, harness: LogHarness) -> None:
        harness.log.append(history())
        partitions = harness.log.all_partitions()
        group = f"contract-{uuid.uuid4().hex[:8]}"
        assert harness.log.committed_offsets(group, partitions) == dict.fromkeys(partitions)
        ends = read_all(harness.log)[1].end
        tp = max(ends, key=lambda p: ends[p])
        harness.commit(group, {tp: ends[tp] - 1})
        assert harness.log.committed_offsets(group, partitions) == {p: (ends[tp] - 1 if p == tp else None)
                                                                    for p in partitions}

    def test_records_keep_the_time_they_were_stamped_with(self, harness: LogHarness) -> None:
        topic = harness.log.topics.accounts
        harness.append_stamped(topic, b"acc-t", b"{}", BASE_MS + 1_234)
        [record] = read_all(harness.log)[0]
        assert record.timestamp()[1] == BASE_MS + 1_234

    def test_an_offset_for_a_time_is_at_or_before_the_first_record_stamped_then(self, harness: LogHarness) -> None:
        topic = harness.log.topics.accounts
        for second in range(6):
            harness.append_stamped(topic, b"acc-t", f'{{"n": {second}}}'.encode(), BASE_MS + second * 1_000)
        [tp] = ends_of(read_all(harness.log)[0])
        for second in (0, 3, 5):
            [(found, start)] = harness.log.starting_offsets_for_time([tp], BASE_MS + second * 1_000).items()
            assert found == tp and 0 <= start <= second
            read_from = [r.timestamp()[1] for r in harness.log.scan({tp: start})]
            assert [BASE_MS + s * 1_000 for s in range(second, 6)] == read_from[len(read_from) - (6 - second):]
        after = harness.log.starting_offsets_for_time([tp], BASE_MS + 60_000)[tp]
        assert 0 <= after <= 6

    def test_a_reopened_log_reads_the_same_records_in_another_process(self, populated: Populated) -> None:
        opener = pickle.loads(pickle.dumps(populated.log.reopener()))  # as the parallel replay's workers get it
        again, cut = read_all(opener())
        records, full = populated.full()
        assert cut.end == full.end
        assert [(r.topic(), r.partition(), r.offset(), r.value()) for r in again] == [
            (r.topic(), r.partition(), r.offset(), r.value()) for r in records]


# --- the real log: Kafka on the session's broker --------------------------------------------------------
@dataclass
class KafkaHarness:
    store: KafkaEventStore

    @property
    def log(self) -> EventLog:
        return self.store

    def commit(self, group_id: str, offsets: dict[TopicPartitionKey, int]) -> None:
        consumer = Consumer({"bootstrap.servers": self.store.bootstrap_servers, "group.id": group_id,
                             "enable.auto.commit": False})
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        finally:
            consumer.close()

    def append_stamped(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        producer = Producer({"bootstrap.servers": self.store.bootstrap_servers, "linger.ms": 0})
        producer.produce(topic, key=key, value=value, timestamp=timestamp_ms)
        assert producer.flush(30) == 0


def _kafka_store(servers: Any) -> KafkaEventStore:
    store = KafkaEventStore(servers.bootstrap_servers, Topics.with_prefix(f"c{uuid.uuid4().hex[:10]}."),
                            partitions=PARTITIONS)
    store.ensure_topics()
    return store


class TestKafkaEventLog(EventLogContract):
    @pytest.fixture
    def harness(self, servers: Any) -> Iterator[LogHarness]:
        store = _kafka_store(servers)
        yield KafkaHarness(store)
        store.close()

    @pytest.fixture(scope="class")
    @classmethod
    def populated(cls, servers: Any) -> Iterator[Populated]:
        store = _kafka_store(servers)
        events = history()
        store.append(events)
        yield Populated(KafkaHarness(store), events)
        store.close()


class TestApacheKafkaEventLog(EventLogContract):
    """The same adapter on the production broker (the session's Apache Kafka): the contract holds on both."""

    @pytest.fixture
    def harness(self, kafka_bootstrap: str) -> Iterator[LogHarness]:
        store = _kafka_store(_Bootstrap(kafka_bootstrap))
        yield KafkaHarness(store)
        store.close()

    @pytest.fixture(scope="class")
    @classmethod
    def populated(cls, kafka_bootstrap: str) -> Iterator[Populated]:
        store = _kafka_store(_Bootstrap(kafka_bootstrap))
        events = history()
        store.append(events)
        yield Populated(KafkaHarness(store), events)
        store.close()


@dataclass(frozen=True)
class _Bootstrap:
    bootstrap_servers: str


# --- the fake -----------------------------------------------------------------------------------------------
@dataclass
class InMemoryHarness:
    fake: InMemoryEventLog

    @property
    def log(self) -> EventLog:
        return self.fake

    def commit(self, group_id: str, offsets: dict[TopicPartitionKey, int]) -> None:
        self.fake.commit(group_id, offsets)

    def append_stamped(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.fake.append_stamped(topic, key, value, timestamp_ms)


class TestInMemoryEventLog(EventLogContract):
    @pytest.fixture
    def harness(self) -> LogHarness:
        return InMemoryHarness(InMemoryEventLog(Topics.with_prefix("fake."), partitions=PARTITIONS, batch_size=4))

    @pytest.fixture(scope="class")
    @classmethod
    def populated(cls) -> Populated:
        fake = InMemoryEventLog(Topics.with_prefix("fake."), partitions=PARTITIONS, batch_size=4)
        events = history()
        fake.append(events)
        return Populated(InMemoryHarness(fake), events)
