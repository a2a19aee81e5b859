from __future__ import annotations

from datetime import UTC, datetime

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.core.events import AccountCredited, AccountOpened, Event, decode_event
from billing_domain.core.exceptions import EventPosition


def _opened(account_id: str) -> Event:
    return Event(f"{account_id}-1", "AccountOpened", 1, "account", account_id, 1,
                 datetime(2026, 1, 1, tzinfo=UTC), None, AccountOpened("o1", "EUR", 0, 1_000_000))


def _credited(account_id: str, version: int) -> Event:
    return Event(f"{account_id}-{version}", "AccountCredited", 1, "account", account_id, version,
                 datetime(2026, 1, 1, tzinfo=UTC), None, AccountCredited(100, None, "deposit"))


def test_a_cut_reads_every_appended_event_with_exact_end_offsets(event_store: KafkaEventStore) -> None:
    events = [_opened(f"acc-{i}") for i in range(50)] + [_credited(f"acc-{i}", 2) for i in range(50)]
    assert event_store.append(events) == 100

    reader = event_store.read_cut()
    read = [decode_event(m.value(), m.key(), position=EventPosition(m.topic(), m.partition(), m.offset()))
            for batch in reader for m in batch]

    assert sorted(e.event_id for e in read) == sorted(e.event_id for e in events)
    assert reader.cut.message_count == 100
    # Each account's events stay in order within its partition.
    by_account: dict[str, list[int]] = {}
    for event in read:
        by_account.setdefault(event.aggregate_id, []).append(event.aggregate_version)
    assert all(versions == [1, 2] for versions in by_account.values())


def test_a_cut_stops_at_given_offsets_and_resumes_from_them(event_store: KafkaEventStore) -> None:
    event_store.append([_opened(f"acc-{i}") for i in range(30)])
    first = event_store.read_cut()
    list(first)
    event_store.append([_credited(f"acc-{i}", 2) for i in range(30)])

    tail = event_store.read_cut(start=first.cut.end)
    tail_events = [m for batch in tail for m in batch]

    assert len(tail_events) == 30
    assert all(decode_event(m.value()).aggregate_version == 2 for m in tail_events)
    bounded = event_store.read_cut(stop=first.cut.end)
    assert sum(len(b) for b in bounded) == 30


def test_raw_appends_keep_undecodable_bytes(event_store: KafkaEventStore) -> None:
    event_store.append_raw([RawRecord(event_store.topics.accounts, b"acc-x", b"\xffnot json")])
    values = [m.value() for batch in event_store.read_cut() for m in batch]
    assert values == [b"\xffnot json"]
