"""Offsets of the event store beyond a cut: exact partition ends, a group's commits, offsets by time.

The broker's ListOffsets (watermarks, offsets for a time) can answer at batch granularity (the
embedded Tansu broker does: the high watermark may be the start of the last batch, and a time in
the future may map to offset 0). So ListOffsets only ever gives a *starting point*; an exact end
is what a fetch reports at partition EOF, and an exact point in time is found by reading forward
and looking at the events themselves. Everything here is right on Apache Kafka too.

Offsets have gaps: a transactional producer's commit and abort markers take an offset each, and an aborted
transaction's records are never delivered (the consumers read committed records only). So nothing here takes
offset n - 1 for the record before n: the last record before an end is looked for (`last_records_before`), and
the record "at" an offset is the first one at or after it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from billing_domain.adapters.retry import RetryPolicy
from billing_domain.core.cut import TopicPartitionKey
from billing_domain.core.exceptions import EventStoreUnavailableError
from billing_domain.core.records import Topics

# Pure readers of a record, the core's; importable from here too.
from billing_domain.core.records import broker_time_of as broker_time_of
from billing_domain.core.records import occurred_at_of as occurred_at_of
from billing_domain.ports import PartitionEnd

METADATA_TIMEOUT_S = 10.0
CONSUME_BATCH = 1_000
CONSUME_TIMEOUT_S = 0.1


class KafkaClient(Protocol):
    """What these functions use of `event_store.KafkaEventStore`, which calls them for its `EventLog` methods
    (so that module imports this one, never the reverse)."""

    bootstrap_servers: str
    topics: Topics
    retry: RetryPolicy
    stall_timeout_s: float

    def partitions_of(self, topic: str) -> list[int]: ...

    def new_consumer(self, **overrides: object) -> Consumer: ...


def all_partitions(store: KafkaClient, topics: Sequence[str] | None = None) -> list[TopicPartitionKey]:
    """Every (topic, partition) of `topics` (default: both event topics), sorted."""
    return [(t, p) for t in (topics or store.topics.all()) for p in store.partitions_of(t)]


def log_starts(store: KafkaClient, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
    """The low watermark of each partition: where a consumer with no committed offset starts."""
    consumer = _reader(store)
    try:
        return {tp: _watermarks(store, consumer, tp)[0] for tp in partitions}
    finally:
        consumer.close()


def approximate_high_watermarks(store: KafkaClient,
                                partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
    """The high watermark ListOffsets reports: exact on Apache Kafka, possibly the start of the last
    batch on the embedded broker. Good for estimates and starting points, never for ends."""
    consumer = _reader(store)
    try:
        return {tp: _watermarks(store, consumer, tp)[1] for tp in partitions}
    finally:
        consumer.close()


def exact_ends(store: KafkaClient,
               partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, PartitionEnd]:
    """Read each partition from just before its reported high watermark to EOF; the fetch's own
    answer there is the exact end (the last stable offset). Also returns the last record (the newest
    event) of each, looked for further back where the end follows a transaction marker."""
    wanted = list(partitions)
    if not wanted:
        return {}
    starts = {tp: max(high - 1, 0) for tp, high in approximate_high_watermarks(store, wanted).items()}
    scan = PartitionScan(store, starts)
    last: dict[TopicPartitionKey, Message] = {}
    ends: dict[TopicPartitionKey, int] = {}
    for message in scan:
        tp = (message.topic() or "", message.partition() or 0)
        if is_eof(message):
            ends[tp] = message.offset() or 0  # the fetch's own end: exact, whatever ListOffsets said
        else:
            last[tp] = message
    behind_markers = {tp: ends[tp] for tp in wanted if tp not in last and ends[tp] > 0}
    last |= last_records_before(store, behind_markers)[0]
    return {tp: PartitionEnd(ends[tp], last.get(tp)) for tp in wanted}


def last_records_before(store: KafkaClient, ends: dict[TopicPartitionKey, int]
                        ) -> tuple[dict[TopicPartitionKey, Message], set[TopicPartitionKey]]:
    """The last record before each given offset (absent where the partition has none before it), and the
    partitions whose log reaches that offset (a record at or past it, or an end past it).

    Looked for backwards in growing steps: before an offset may lie transaction markers and an aborted
    transaction's records, which take offsets and are never delivered."""
    found: dict[TopicPartitionKey, Message] = {}
    reaches: set[TopicPartitionKey] = set()
    pending = {tp: end for tp, end in ends.items() if end > 0}
    step = 1
    while pending:
        starts = {tp: max(end - step, 0) for tp, end in pending.items()}
        scan = PartitionScan(store, starts)
        for message in scan:
            tp = (message.topic() or "", message.partition() or 0)
            offset = message.offset() or 0
            if offset >= pending[tp]:
                reaches.add(tp)
                scan.finish(tp)
            elif not is_eof(message):
                found[tp] = message  # in log order: the last one read before the offset is the last there
        pending = {tp: end for tp, end in pending.items() if tp not in found and starts[tp] > 0}
        step *= 16
    return found, reaches


def values_at(store: KafkaClient, offsets: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, bytes | None]:
    """The value of the record at each offset; where the offset holds no record but the log goes on past it (a
    transaction marker, an aborted record), of the last record before it; None where the partition ends at or
    before the offset (or holds no record up to it)."""
    found, reaches = last_records_before(store, {tp: o + 1 for tp, o in offsets.items() if o >= 0})
    return {tp: found[tp].value() if tp in found and tp in reaches else None for tp in offsets}


def committed_offsets(store: KafkaClient, group_id: str,
                      partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
    """The offsets `group_id` committed (the next offset it will read), None where it committed none.

    Asked with a consumer that never subscribes, so the group is not disturbed (no rebalance)."""
    wanted = list(partitions)
    overrides: dict[str, str | int | float | bool] = {"group.id": group_id, "enable.auto.commit": False}
    consumer = store.new_consumer(**overrides)
    try:
        try:
            answer = store.retry.run(lambda: consumer.committed([TopicPartition(t, p) for t, p in wanted],
                                                                timeout=METADATA_TIMEOUT_S),
                                     f"offsets committed by {group_id}")
        except KafkaException as exc:
            raise EventStoreUnavailableError(f"offsets committed by {group_id}: {exc}") from exc
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in answer}
    finally:
        consumer.close()


def starting_offsets_for_time(store: KafkaClient, partitions: Iterable[TopicPartitionKey],
                              timestamp_ms: int) -> dict[TopicPartitionKey, int]:
    """Per partition, an offset at or before the first message whose broker timestamp is >= `timestamp_ms`.

    ListOffsets by time answers at batch granularity on some brokers (earlier: still a valid start);
    where it finds no such message (-1) the reported high watermark is the start (at or before the end).
    """
    wanted = list(partitions)
    consumer = _reader(store)
    try:
        try:
            answer = store.retry.run(lambda: consumer.offsets_for_times(
                [TopicPartition(t, p, timestamp_ms) for t, p in wanted], timeout=METADATA_TIMEOUT_S),
                "offsets for a time")
        except KafkaException as exc:
            raise EventStoreUnavailableError(f"offsets for a time: {exc}") from exc
        starts: dict[TopicPartitionKey, int] = {}
        for tp in answer:
            key = (tp.topic, tp.partition)
            starts[key] = tp.offset if tp.offset >= 0 else _watermarks(store, consumer, key)[1]
        return starts
    finally:
        consumer.close()


def messages_at(store: KafkaClient, offsets: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, Message]:
    """The record at each given offset, or the first after it where the offset holds none (a transaction
    marker, an aborted record); absent where the partition ends before it. With one consumer."""
    scan = PartitionScan(store, offsets)
    found: dict[TopicPartitionKey, Message] = {}
    for message in scan:
        tp = (message.topic() or "", message.partition() or 0)
        if not is_eof(message) and (message.offset() or 0) >= offsets[tp]:
            found[tp] = message
        scan.finish(tp)
    return found


# --- internals -----------------------------------------------------------------------------------------
def _reader(store: KafkaClient) -> Consumer:
    return store.new_consumer(**{"group.id": f"billing-recon-offsets-{uuid.uuid4()}"})


def _watermarks(store: KafkaClient, consumer: Consumer, tp: TopicPartitionKey) -> tuple[int, int]:
    try:
        low, high = store.retry.run(lambda: consumer.get_watermark_offsets(TopicPartition(tp[0], tp[1]),
                                                                           timeout=METADATA_TIMEOUT_S),
                                    f"watermarks of {tp[0]}[{tp[1]}]")
    except KafkaException as exc:
        raise EventStoreUnavailableError(f"watermarks of {tp[0]}[{tp[1]}]: {exc}") from exc
    return int(low), int(high)


class PartitionScan:
    """Read partitions from given offsets, each until its EOF or until the caller `finish`es it.

    Iterating yields messages and, last for each partition, its EOF marker (`is_eof`)."""

    def __init__(self, store: KafkaClient, starts: dict[TopicPartitionKey, int]) -> None:
        self.store = store
        self.starts = dict(starts)
        self._remaining = set(starts)
        self._consumer: Consumer | None = None
        self.read = 0

    def finish(self, tp: TopicPartitionKey) -> None:
        """Stop reading `tp` (messages of it already fetched are dropped)."""
        if tp in self._remaining:
            self._remaining.discard(tp)
            if self._consumer is not None:
                self._consumer.pause([TopicPartition(tp[0], tp[1])])

    def __iter__(self) -> Iterator[Message]:
        if not self._remaining:
            return
        consumer = self._consumer = _reader(self.store)
        try:
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.starts.items()])
            yield from self._scan(consumer)
        finally:
            self._consumer = None
            consumer.close()

    def _scan(self, consumer: Consumer) -> Iterator[Message]:
        last_progress = time.monotonic()
        while self._remaining:
            try:
                batch = consumer.consume(CONSUME_BATCH, timeout=CONSUME_TIMEOUT_S)
            except KafkaException as exc:
                raise EventStoreUnavailableError(f"consume failed: {exc}") from exc
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self.store.stall_timeout_s:
                raise EventStoreUnavailableError(f"no answer from {self.store.bootstrap_servers} for "
                                                 f"{self.store.stall_timeout_s:.0f}s")
            for message in batch:
                tp = (message.topic() or "", message.partition() or 0)
                if tp not in self._remaining:
                    continue  # prefetched past a partition already finished
                error = message.error()
                if error is not None and not is_eof(message):
                    raise EventStoreUnavailableError(f"reading {tp[0]}[{tp[1]}]: {error.str()}")
                if not is_eof(message):
                    self.read += 1
                yield message
                if is_eof(message):
                    self.finish(tp)


class RecordScan:
    """A `PartitionScan` as the `LogScan` port: records only, each partition's exact end kept in `ends`."""

    def __init__(self, store: KafkaClient, starts: dict[TopicPartitionKey, int]) -> None:
        self._scan = PartitionScan(store, starts)
        self.ends: dict[TopicPartitionKey, int] = {}

    @property
    def read(self) -> int:
        return self._scan.read

    def finish(self, tp: TopicPartitionKey) -> None:
        self._scan.finish(tp)

    def __iter__(self) -> Iterator[Message]:
        for message in self._scan:
            if is_eof(message):
                self.ends[(message.topic() or "", message.partition() or 0)] = message.offset() or 0
            else:
                yield message


def is_eof(message: Message) -> bool:
    """The marker a fetch sends at a partition's end (`enable.partition.eof`); its offset is the end."""
    error = message.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


def estimated_cut_size(store: KafkaClient, start: dict[TopicPartitionKey, int] | None = None,
                       stop: dict[TopicPartitionKey, int] | None = None) -> int:
    """About how many messages a cut from `start` (default 0) to `stop` (default the ends) holds.

    From the reported high watermarks, so only an estimate ("about"): on the embedded broker each
    partition's last batch may be missing from it. Cheap: no message is read."""
    partitions = all_partitions(store)
    ends = dict(stop) if stop is not None else approximate_high_watermarks(store, partitions)
    starts = start or {}
    return sum(max(ends.get(tp, 0) - starts.get(tp, 0), 0) for tp in partitions)
