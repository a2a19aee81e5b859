"""How every reader of the event log fetches: one definition, imported by the event store's consumers and by the
benchmark's floor (which must read as the reconciler reads, without loading the adapters)."""

from __future__ import annotations

from typing import Any

READER_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",
    # The contract: only committed transactions' events exist. librdkafka's default too, but said here:
    # a partition's end is then its last stable offset, and an open transaction holds the cut there.
    "isolation.level": "read_committed",
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "queued.min.messages": 200_000,
    # A partition's end is only reported after an empty fetch, which the broker holds for
    # fetch.wait.max.ms (500 ms by default): that wait was most of a single-entity check.
    "fetch.wait.max.ms": 10,
}
