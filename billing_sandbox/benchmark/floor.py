"""The bare-consume floor as a whole process: `python -m billing_sandbox.benchmark.floor`.

Reads every event's bytes of both topics, from offset 0 to each partition's end, and does nothing
else; prints {messages, bytes, read_s} as JSON. It is a command like `billing-recon reconcile all`,
so the floor pays the same process start, and it finds the servers and topics the same way
(`Settings.from_env`: BILLING_KAFKA_BOOTSTRAP_SERVERS, BILLING_TOPIC_PREFIX). It imports only
confluent-kafka and the settings: the floor is what reading the log costs, not our adapters.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from billing_domain.adapters.kafka.reader_config import READER_CONFIG  # as the reconciler reads
from billing_domain.config import Settings

BATCH, TIMEOUT_S = 10_000, 0.1  # consume() as the reconciler's reader calls it
def read_everything(bootstrap_servers: str, topics: tuple[str, ...]) -> dict[str, Any]:
    """Every message's value of `topics`, to each partition's end; counts and the reading time."""
    began = time.perf_counter()
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"billing-floor-{uuid.uuid4()}",
                         **READER_CONFIG})
    try:
        partitions = [(topic, p) for topic in topics for p in _partitions_of(consumer, topic)]
        consumer.assign([TopicPartition(topic, p, 0) for topic, p in partitions])
        messages, size = _drain(consumer, set(partitions))
    finally:
        consumer.close()
    return {"messages": messages, "bytes": size, "read_s": time.perf_counter() - began}


def _partitions_of(consumer: Consumer, topic: str) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=30).topics[topic]
    if metadata.error is not None:
        raise RuntimeError(f"{topic}: {metadata.error.str()}")
    return sorted(metadata.partitions)


def _drain(consumer: Consumer, open_partitions: set[tuple[str, int]]) -> tuple[int, int]:
    messages = size = 0
    while open_partitions:
        for message in consumer.consume(BATCH, timeout=TIMEOUT_S):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(error.str())
                open_partitions.discard((message.topic(), message.partition()))
                continue
            value = message.value()
            messages += 1
            size += len(value) if value else 0
    return messages, size


def main() -> None:
    settings = Settings.from_env()
    if not settings.kafka_bootstrap_servers:
        raise SystemExit("floor: BILLING_KAFKA_BOOTSTRAP_SERVERS is not set")
    figures = read_everything(settings.kafka_bootstrap_servers, settings.topics.all())
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
