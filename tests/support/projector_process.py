"""A live projector in a process of its own, for a test to kill: `python tests/support/projector_process.py
<bootstrap> <topic prefix> <partitions> <database url> <group>`.

It prints one JSON line whenever its assignment or its count of applied events changes. Once the file named by
the environment's PROJECTOR_ARM_FILE exists, the next batch it applies is its last: its database transaction
commits, it prints {"hung": applied}, and it waits before committing the batch's offsets, for the test to kill it
at the worst moment (the events applied, the group not told).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import make_engine
from billing_domain.core.events import Event
from billing_domain.core.exceptions import EventPosition
from billing_domain.core.records import Topics
from billing_sandbox.projector import LiveProjector

SESSION_TIMEOUT_MS = 6000


def main(bootstrap: str, prefix: str, partitions: str, database_url: str, group: str) -> None:
    store = KafkaEventStore(bootstrap, Topics.with_prefix(prefix), partitions=int(partitions))
    projector = LiveProjector(store, make_engine(database_url), group, session_timeout_ms=SESSION_TIMEOUT_MS)
    arm = os.environ.get("PROJECTOR_ARM_FILE")
    applied = 0
    store_batch = projector._store

    def store_then_maybe_hang(events: Sequence[tuple[Event, EventPosition]]) -> int:
        nonlocal applied
        done = store_batch(events)
        applied += done
        if done and arm and os.path.exists(arm):
            say({"hung": applied})
            while True:  # before the offsets are committed: the test kills us here
                time.sleep(1)
        return done

    projector._store = store_then_maybe_hang  # type: ignore[method-assign]
    said: tuple[object, ...] = ()
    while True:
        projector.poll_once()
        assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in projector._consumer.assignment())
        if (assigned, applied) != said:
            said = (assigned, applied)
            say({"assigned": assigned, "applied": applied})


def say(line: dict[str, object]) -> None:
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
