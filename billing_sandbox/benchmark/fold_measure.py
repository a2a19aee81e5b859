"""Measure the full replay's fold on a pure in-memory history: the aggregates against the columns.

`python -m billing_sandbox.benchmark.fold_measure --events 200000 --engine columnar` builds a contract history
(accounts opened, deposits, withdrawals, completed transfers; about one account per ten events) as encoded
log records, then folds it once with the chosen engine and prints events/s and the process's peak RSS.
Run each engine in its own process: the peak RSS of a process is its own high-water mark. The fold's CPU
time (all threads) is printed beside its wall time: on a shared machine the wall time depends on the others.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from billing_domain.columnar.engine import fold_into
from billing_domain.core.events import (
    AGGREGATE_TYPE_OF,
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    Payload,
    TransactionCompleted,
    TransactionInitiated,
    encode_event,
)
from billing_domain.core.records import Topics
from billing_domain.core.replay import Replay

START = datetime(2026, 3, 1, tzinfo=UTC)
PARTITIONS = 6


@dataclass(frozen=True, slots=True)
class Record:
    """A log record held in memory (what `LogRecord` asks of a Kafka message)."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes
    _value: bytes

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


class _Writer:
    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.records: list[Record] = []
        self.versions: dict[str, int] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.now = START

    def emit(self, aggregate_id: str, payload: Payload, correlation_id: str | None = None) -> None:
        self.now += timedelta(milliseconds=10)
        version = self.versions[aggregate_id] = self.versions.get(aggregate_id, 0) + 1
        event_type = type(payload).__name__
        aggregate_type = AGGREGATE_TYPE_OF[event_type]
        event = Event(f"evt-{len(self.records):012d}", event_type, 1, aggregate_type,  # type: ignore[arg-type]
                      aggregate_id, version, self.now, correlation_id, payload)
        topic = self.topics.accounts if aggregate_type == "account" else self.topics.transactions
        partition = hash(aggregate_id) % PARTITIONS
        offset = self.offsets[(topic, partition)] = self.offsets.get((topic, partition), -1) + 1
        self.records.append(Record(topic, partition, offset, aggregate_id.encode(), encode_event(event)))


def history(events: int, topics: Topics, seed: int = 17, events_per_account: int = 10) -> list[Record]:
    """About `events` records over `events // events_per_account` accounts: each opened and credited, the rest
    withdrawals and completed transfers (half each)."""
    rng = random.Random(seed)
    writer = _Writer(topics)
    accounts = [f"acc-{i}" for i in range(max(2, events // events_per_account))]
    for account_id in accounts:
        writer.emit(account_id, AccountOpened("owner", "EUR", 0, 10**12))
        writer.emit(account_id, AccountCredited(100_000, None, "deposit"))
    transfers = 0
    while len(writer.records) < events:
        source, destination = rng.sample(accounts, 2)
        if rng.random() < 0.5:
            writer.emit(source, AccountDebited(rng.randint(1, 50), None, "withdrawal"))
            continue
        tx = f"tx-{transfers}"
        transfers += 1
        amount = rng.randint(1, 50)
        writer.emit(tx, TransactionInitiated(source, destination, amount, "EUR"), tx)
        writer.emit(source, AccountDebited(amount, tx, "transfer_out"), tx)
        writer.emit(destination, AccountCredited(amount, tx, "transfer_in"), tx)
        writer.emit(tx, TransactionCompleted(), tx)
    return writer.records


def measure(events: int, engine: str, events_per_account: int = 10) -> dict[str, object]:
    topics = Topics()
    records = history(events, topics, events_per_account=events_per_account)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    replay = Replay(topics, account_versions={}, transaction_versions={})
    gc.disable()  # as `services.collector.collector_paused` does around every replay of the pipeline
    began, cpu_began = time.perf_counter(), time.process_time()
    if engine == "columnar":
        fold_into(replay, records)
    else:
        replay.feed(records)
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    gc.enable()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"engine": engine, "events": len(records), "accounts": len(replay.accounts),
            "transactions": len(replay.transactions), "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu_seconds, 3),  # all threads: on a loaded machine wall time is noise
            "events_per_s": round(len(records) / seconds), "peak_rss_mib": round(rss_after / 1024),
            "rss_before_fold_mib": round(rss_before / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--engine", choices=("aggregate", "columnar"), default="columnar")
    parser.add_argument("--events-per-account", type=int, default=10)
    arguments = parser.parse_args()
    print(json.dumps(measure(arguments.events, arguments.engine, arguments.events_per_account)))


if __name__ == "__main__":
    main()
