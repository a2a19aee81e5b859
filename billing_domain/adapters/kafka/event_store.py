"""The Kafka event store on confluent-kafka: topics, confirmed appends, bounded cuts.

A cut is taken by reading each partition to its end (`enable.partition.eof`) and pausing it
there: the broker's ListOffsets can answer at batch granularity (the embedded Tansu broker
does), so the offsets the fetch itself reports are the only exact ones.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from billing_domain.adapters.kafka import offsets as log_offsets
from billing_domain.adapters.kafka.reader_config import READER_CONFIG
from billing_domain.adapters.retry import DEFAULT_RETRY, RetryPolicy, is_transient
from billing_domain.config import DEFAULT_TOPIC_PARTITIONS
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.events import Event, encode_event
from billing_domain.core.exceptions import EventStoreError, EventStoreUnavailableError
from billing_domain.core.records import LogRecord, Topics
from billing_domain.core.topic_config import KEPT_FOREVER, LOSSY_SETTINGS, TopicConfig
from billing_domain.ports import EventLog, PartitionEnd

log = logging.getLogger(__name__)
T = TypeVar("T")
# `logger` is a logging.Logger, which confluent-kafka's stubs do not list among the config values.
ClientConfig = dict[str, Any]
BATCH_SIZE = 10_000
# consume() waits this long whenever fewer than a batch of messages is queued, i.e. at every end of
# the log: short, so a cut's tail and a single-entity read are not inflated by it.
CONSUME_TIMEOUT_S = 0.01
# Partition counts rarely change; a metadata round trip per read was a third of a single-entity check.
METADATA_TTL_S = 30.0
# A cut that makes no progress for this long has lost its broker (librdkafka retries silently).
STALL_TIMEOUT_S = 60.0
# One metadata request's wait (each retried attempt's).
METADATA_TIMEOUT_S = 10.0
# A command's first metadata request waits this long, once: an unreachable broker is an error within
# seconds instead of a minute of retries (a cut that loses its broker later keeps STALL_TIMEOUT_S).
PROBE_TIMEOUT_S = 5.0
# librdkafka's repeats of one kind of message (a "Connection refused" per reconnect, ~1,000 lines a minute
# with the broker down) are dropped for this long after the first.
CLIENT_LOG_REPEAT_S = 60.0
# DescribeConfigs of the two topics, once a run: a broker that does not answer it makes the configuration unknown.
DESCRIBE_TIMEOUT_S = 10.0


class _FirstOfEachKind(logging.Filter):
    """Let through one record per librdkafka facility (FAIL, ERROR, ...) every CLIENT_LOG_REPEAT_S."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[object, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # confluent-kafka logs ("%s [%s] %s", facility, client name, text)
        kind = record.args[0] if isinstance(record.args, tuple) and record.args else record.msg
        now = time.monotonic()
        if now - self._last.get(kind, -CLIENT_LOG_REPEAT_S) < CLIENT_LOG_REPEAT_S:
            return False
        self._last[kind] = now
        return True


# Every client logs here rather than straight to stderr (librdkafka's default).
client_log = logging.getLogger(f"{__name__}.librdkafka")
client_log.addFilter(_FirstOfEachKind())


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A message as stored, for appends that bypass the codec (fault injection, raw copies)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: where the producer's partitioner puts the key


class KafkaEventStore:
    """Append and read the billing events (the `EventLog` port). `topics` names the two topics of the contract.

    The offsets beyond a cut are `offsets`' functions, which take the store; its methods here are the port's."""

    def __init__(self, bootstrap_servers: str, topics: Topics | None = None, *,
                 partitions: int = DEFAULT_TOPIC_PARTITIONS, retry: RetryPolicy = DEFAULT_RETRY,
                 client_config: ClientConfig | None = None, metadata_timeout_s: float = METADATA_TIMEOUT_S,
                 stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics or Topics()
        self.partitions = partitions
        self.retry = retry
        self.metadata_timeout_s = metadata_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._client_config: ClientConfig = {"bootstrap.servers": bootstrap_servers, "logger": client_log,
                                             **(client_config or {})}
        self._producer: Producer | None = None
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._topic_configs: tuple[float, dict[str, TopicConfig]] | None = None

    def topic_for(self, aggregate_type: str) -> str:
        return self.topics.accounts if aggregate_type == "account" else self.topics.transactions

    # --- topics -------------------------------------------------------------------------------------
    def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> set[str]:
        """One bounded metadata request, not retried: the broker's topics, or `EventStoreUnavailableError` naming
        the servers."""
        try:
            return set(AdminClient(self._client_config).list_topics(timeout=timeout_s).topics)
        except KafkaException as exc:
            raise self._unreachable(exc, f"a metadata request got no answer within {timeout_s:g} s") from exc

    def _metadata(self, request: Callable[[], T], context: str) -> T:
        """A metadata request, retried by the policy; a broker still unreachable after it is named."""
        try:
            return self.retry.run(request, context)
        except KafkaException as exc:
            if not is_transient(exc):
                raise
            raise self._unreachable(exc, f"{context} got no answer after {self.retry.max_attempts} attempts of "
                                         f"{self.metadata_timeout_s:g} s") from exc

    def _unreachable(self, exc: KafkaException, what: str) -> EventStoreUnavailableError:
        reason = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
        return EventStoreUnavailableError(
            f"cannot reach Kafka at {self.bootstrap_servers}: {what} ({reason}). Check that the broker runs and "
            "listens on that address, that this host may connect to it, and BILLING_KAFKA_BOOTSTRAP_SERVERS.")

    def ensure_topics(self, existing: set[str] | None = None) -> None:
        """Create the two topics if absent, with `partitions` partitions each, kept forever and never compacted
        (the contract's system of record: Apache Kafka's default retention is 7 days). `existing`: the broker's
        topics if just listed (by `probe`); when both are there, no request is made."""
        if existing is not None and set(self.topics.all()) <= existing:
            return
        admin = AdminClient(self._client_config)
        existing = set(self._metadata(lambda: admin.list_topics(timeout=self.metadata_timeout_s), "list topics").topics)
        missing = [NewTopic(t, num_partitions=self.partitions, replication_factor=1, config=dict(KEPT_FOREVER))
                   for t in self.topics.all() if t not in existing]
        for topic, future in admin.create_topics(missing).items() if missing else []:
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise EventStoreError(f"could not create topic {topic}: {exc}") from exc
        if missing:
            self._wait_for_metadata([t.topic for t in missing])

    def topic_configs(self) -> dict[str, TopicConfig]:
        """The settings of each event topic that decide whether it keeps every event, by DescribeConfigs.

        A broker that does not answer it, or describes none of them (Tansu describes only what a topic was
        created with), gives settings None: unknown, not an error. Kept for METADATA_TTL_S, as the partitions are."""
        if self._topic_configs is not None and time.monotonic() - self._topic_configs[0] < METADATA_TTL_S:
            return dict(self._topic_configs[1])
        configs = self._describe_topics()
        self._topic_configs = (time.monotonic(), configs)
        return dict(configs)

    def _describe_topics(self) -> dict[str, TopicConfig]:
        admin = AdminClient(self._client_config)
        topics = self.topics.all()
        try:
            futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics],
                                             request_timeout=DESCRIBE_TIMEOUT_S)
        except (KafkaException, ValueError) as exc:  # the request could not even be made
            return {t: TopicConfig(t, None, _reason(exc)) for t in topics}
        configs: dict[str, TopicConfig] = {}
        for resource, future in futures.items():
            topic = resource.name
            try:
                entries = future.result(timeout=DESCRIBE_TIMEOUT_S + 5)
            except (KafkaException, TimeoutError) as exc:
                configs[topic] = TopicConfig(topic, None, _reason(exc))
                continue
            settings = {name: entries[name].value for name in LOSSY_SETTINGS
                        if name in entries and entries[name].value is not None}
            configs[topic] = TopicConfig(topic, settings or None,
                                         None if settings else "the broker described none of its settings")
        return configs

    def partitions_of(self, topic: str) -> list[int]:
        cached = self._partitions.get(topic)
        if cached is not None and time.monotonic() - cached[0] < METADATA_TTL_S:
            return cached[1]
        partitions = self._fetch_partitions(topic)
        self._partitions[topic] = (time.monotonic(), partitions)
        return partitions

    def _fetch_partitions(self, topic: str) -> list[int]:
        consumer = Consumer({**self._client_config, "group.id": "billing-recon-metadata"})
        try:
            metadata = self._metadata(lambda: consumer.list_topics(topic, timeout=self.metadata_timeout_s),
                                      f"the metadata of {topic}")
        finally:
            consumer.close()
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise EventStoreError(f"topic {topic} does not exist on {self.bootstrap_servers}")
        return sorted(described.partitions)

    def _wait_for_metadata(self, topics: Sequence[str]) -> None:
        deadline = time.monotonic() + 30
        for topic in topics:
            while True:
                try:
                    if len(self._fetch_partitions(topic)) > 0:
                        break
                except EventStoreError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.1)

    # --- appends ------------------------------------------------------------------------------------
    def append(self, events: Iterable[Event], *, partitions: Mapping[tuple[str, str], int] | None = None) -> int:
        """Append events with the idempotent producer; returns once every one is confirmed.

        A stream named in `partitions` gets its events on that partition (see the port); the rest go where
        librdkafka's default partitioner puts their key. Raises `EventStoreError` if any delivery failed.
        """
        placed = partitions or {}
        return self.append_raw(RawRecord(self.topic_for(e.aggregate_type), e.aggregate_id.encode(), encode_event(e),
                                         placed.get((e.aggregate_type, e.aggregate_id))) for e in events)

    def append_raw(self, records: Iterable[RawRecord]) -> int:
        producer = self._get_producer()
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.topic()} key={msg.key()!r}: {err.str()}")

        count = 0
        for record in records:
            while True:
                try:
                    if record.partition is None:
                        producer.produce(record.topic, key=record.key, value=record.value, on_delivery=on_delivery)
                    else:
                        producer.produce(record.topic, key=record.key, value=record.value,
                                         partition=record.partition, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)  # local queue full: let deliveries drain
            count += 1
            if count % 10_000 == 0:
                producer.poll(0)
        remaining = producer.flush(60)
        if remaining:
            raise EventStoreUnavailableError(f"{remaining} messages not confirmed within 60s by "
                                             f"{self.bootstrap_servers}")
        if failures:
            raise EventStoreError(f"{len(failures)} deliveries failed, first: {failures[0]}")
        return count

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer({
                **self._client_config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 10,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 1_000_000,
                "compression.type": "none",
            })
        return self._producer

    # --- reads --------------------------------------------------------------------------------------
    def read_cut(self, start: dict[TopicPartitionKey, int] | None = None,
                 stop: dict[TopicPartitionKey, int] | None = None,
                 topics: Sequence[str] | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 partitions: set[TopicPartitionKey] | None = None) -> CutReader:
        """A reader over every partition of `topics` (or just `partitions`) from `start` (default 0) to its
        end, or to `stop`."""
        ordered = topics or (self.topics.transactions, self.topics.accounts)  # see CutReader.__iter__
        return CutReader(self, list(ordered), start or {}, stop, on_batch, partitions)

    def read_values(self, offsets: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, bytes | None]:
        """The value of the record at each given offset, or of the last one before it where the offset holds a
        transaction marker (None where the partition ends at or before it); see `offsets.values_at`."""
        return log_offsets.values_at(self, offsets) if offsets else {}

    # --- offsets beyond a cut (see offsets.py) -------------------------------------------------------
    def all_partitions(self, topics: Sequence[str] | None = None) -> list[TopicPartitionKey]:
        return log_offsets.all_partitions(self, topics)

    def records_at(self, positions: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, LogRecord]:
        return dict(log_offsets.messages_at(self, positions))

    def scan(self, starts: dict[TopicPartitionKey, int]) -> log_offsets.RecordScan:
        return log_offsets.RecordScan(self, starts)

    def exact_ends(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, PartitionEnd]:
        return log_offsets.exact_ends(self, partitions)

    def log_starts(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return log_offsets.log_starts(self, partitions)

    def reported_ends(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return log_offsets.approximate_high_watermarks(self, partitions)

    def committed_offsets(self, group_id: str,
                          partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        return log_offsets.committed_offsets(self, group_id, partitions)

    def starting_offsets_for_time(self, partitions: Iterable[TopicPartitionKey],
                                  timestamp_ms: int) -> dict[TopicPartitionKey, int]:
        return log_offsets.starting_offsets_for_time(self, partitions, timestamp_ms)

    def reopener(self) -> Callable[[], EventLog]:
        """This store's servers and topics, to open in a worker process (no producer, no cached metadata)."""
        return functools.partial(KafkaEventStore, self.bootstrap_servers, self.topics)

    def new_consumer(self, **overrides: object) -> Consumer:
        return Consumer({
            **self._client_config,
            "group.id": f"billing-recon-reader-{uuid.uuid4()}",
            **READER_CONFIG,
            **overrides,
        })

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(30)
            self._producer = None


class CutReader:
    """Iterate a bounded cut in batches of messages; `cut` holds the offsets once iteration ends."""

    def __init__(self, store: KafkaEventStore, topics: list[str], start: dict[TopicPartitionKey, int],
                 stop: dict[TopicPartitionKey, int] | None, on_batch: Callable[[int], None] | None,
                 only: set[TopicPartitionKey] | None = None) -> None:
        self.store = store
        self.topics = topics
        self.only = only
        self.start = start
        self.stop = stop
        self.on_batch = on_batch
        self.cut = Cut()
        self._last_broker_warning = 0.0

    def __iter__(self) -> Iterator[list[Message]]:
        partitions = [(t, p) for t in self.topics for p in self.store.partitions_of(t)
                      if self.only is None or (t, p) in self.only]
        # One topic after the other, in the order given: the engine appends a transfer's money
        # events before its TransactionCompleted, so reading the transactions first means every
        # completed transfer we see has its money on the account streams we read next.
        # A consumer per topic: re-assigning one consumer to the next topic stalled every cut for
        # a second in librdkafka 2.16 (measured: 1.02 s against 0.05 s for a 4k-event cut).
        for topic in self.topics:
            # Without an error_cb the client's connection errors reach no log at all.
            consumer = self.store.new_consumer(error_cb=self._on_client_error)
            try:
                yield from self._read(consumer, [tp for tp in partitions if tp[0] == topic])
            finally:
                consumer.close()

    def _read(self, consumer: Consumer, partitions: list[TopicPartitionKey]) -> Iterator[list[Message]]:
        open_partitions: set[TopicPartitionKey] = set()
        assignment = []
        for tp in partitions:
            first = self.start.get(tp, 0)
            self.cut.start[tp] = first
            if self.stop is not None and self.stop.get(tp, 0) <= first:
                self.cut.end[tp] = first
                continue
            open_partitions.add(tp)
            assignment.append(TopicPartition(tp[0], tp[1], first))
        if not assignment:
            return
        consumer.assign(assignment)
        last_progress = time.monotonic()
        while open_partitions:
            batch = self.store.retry.run(lambda: _consume(consumer), "read the event store")
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self.store.stall_timeout_s:
                waiting = ", ".join(f"{t}[{p}]" for t, p in sorted(open_partitions))
                raise EventStoreUnavailableError(
                    f"no answer from {self.store.bootstrap_servers} for {self.store.stall_timeout_s:.0f}s "
                    f"while reading {waiting}")
            records = self._keep_inside_cut(consumer, batch, open_partitions)
            if records:
                if self.on_batch:
                    self.on_batch(len(records))
                yield records

    def _keep_inside_cut(self, consumer: Consumer, batch: list[Message],
                         open_partitions: set[TopicPartitionKey]) -> list[Message]:
        records: list[Message] = []
        stops = self.stop
        for message in batch:
            tp = (message.topic(), message.partition())
            if tp not in open_partitions:
                continue  # prefetched past the end we already recorded
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise EventStoreUnavailableError(f"reading {tp[0]}[{tp[1]}]: {error.str()}")
                # The end a fetch reports (the last stable offset: an open transaction's first offset, if any).
                # It can pass `stop` when only control records lie between (offsets have gaps): never beyond it.
                end = message.offset() or 0
                self._close_partition(consumer, tp, end if stops is None or tp not in stops else min(end, stops[tp]),
                                      open_partitions)
                continue
            if stops is None:  # a cut to each partition's end: every message before its EOF is in it
                records.append(message)
                continue
            stop = stops.get(tp)
            offset = message.offset() or 0
            if stop is not None and offset >= stop:
                self._close_partition(consumer, tp, stop, open_partitions)
                continue
            records.append(message)
            if stop is not None and offset + 1 >= stop:  # else the next record or the end closes it (gaps)
                self._close_partition(consumer, tp, stop, open_partitions)
        return records

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka reconnects on its own, with backoff, and reports here (at most one line a second)."""
        now = time.monotonic()
        if now - self._last_broker_warning < 1.0:
            return
        self._last_broker_warning = now
        log.warning("event store %s: %s; the client reconnects with backoff; the read gives up after %.0fs "
                    "without progress", self.store.bootstrap_servers, error.str(), self.store.stall_timeout_s)

    def _close_partition(self, consumer: Consumer, tp: TopicPartitionKey, end: int,
                         open_partitions: set[TopicPartitionKey]) -> None:
        self.cut.end[tp] = end
        open_partitions.discard(tp)
        consumer.pause([TopicPartition(tp[0], tp[1])])


def _reason(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else (str(exc) or type(exc).__name__)


def _consume(consumer: Consumer) -> list[Message]:
    try:
        return consumer.consume(BATCH_SIZE, timeout=CONSUME_TIMEOUT_S)
    except KafkaException as exc:
        raise EventStoreUnavailableError(f"consume failed: {exc}") from exc
