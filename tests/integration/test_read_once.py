"""The daily run decides how it reads (full, incremental, delta, and why) before it reads, and reads each
partition's range once, whichever way it goes: also when a delta run gives up once its tail is read.

The event store is the real one behind a wrapper that counts every record its range reads hand out (the
point reads of the checkpoint's tail marks are not range reads) and notes when a read begins, beside the
read plan's log line."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.builders import EventFactory, project
from support.checkpoint_damage import overwrite_checkpointed_states

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.checkpoint import topics_key
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.events import AccountCredited, AccountOpened
from billing_domain.core.findings import ReconciliationReport
from billing_domain.core.records import LogRecord
from billing_domain.ports import CutRead
from billing_domain.services import delta, read_plan
from billing_domain.services.reconcile import reconcile_all

T0 = datetime(2026, 4, 1, tzinfo=UTC)
ACCOUNTS = [f"acc-{i}" for i in range(8)]
Position = tuple[str, int, int]


class _CountedRead:
    def __init__(self, inner: CutRead, fetched: Counter[Position]) -> None:
        self._inner = inner
        self._fetched = fetched

    @property
    def cut(self) -> Cut:
        return self._inner.cut

    def __iter__(self) -> Iterator[Sequence[LogRecord]]:
        for batch in self._inner:
            self._fetched.update((r.topic() or "", r.partition() or 0, r.offset() or 0) for r in batch)
            yield batch


class CountingLog:
    """The real event store; `fetched` counts each record handed out by a range read, `events` notes each read."""

    def __init__(self, inner: KafkaEventStore, events: list[str]) -> None:
        self._inner = inner
        self.events = events
        self.fetched: Counter[Position] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def read_cut(self, *args: Any, **kwargs: Any) -> CutRead:
        self.events.append(f"read from {kwargs.get('start') or 'the start'}")
        return _CountedRead(self._inner.read_cut(*args, **kwargs), self.fetched)


class _Noted(logging.Handler):
    def __init__(self, events: list[str]) -> None:
        super().__init__(logging.INFO)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(record.getMessage())


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """The read plan's log line and every range read, in the order they happened."""
    noted: list[str] = []
    handler = _Noted(noted)
    caplog.set_level(logging.INFO, logger="billing_domain.services.read_path")
    logging.getLogger("billing_domain.services.read_path").addHandler(handler)
    yield noted
    logging.getLogger("billing_domain.services.read_path").removeHandler(handler)


@pytest.fixture
def recon(projection_store: ProjectionStore) -> ReconStore:
    store = ReconStore(projection_store.engine)
    store.migrate()
    return store


_event = EventFactory(T0, id_prefix="once")


class History:
    """Eight accounts, opened and credited, all projected; `tail` adds rounds of deposits after that."""

    def __init__(self, event_store: KafkaEventStore, projections: ProjectionStore) -> None:
        self.event_store, self.projections = event_store, projections
        self.events = [_event(a, 1, AccountOpened("o", "EUR", 0, 10**9), at=T0) for a in ACCOUNTS]
        self.events += [_event(a, 2, AccountCredited(100, None, "deposit"), at=T0 + timedelta(seconds=1))
                        for a in ACCOUNTS]
        self.versions = dict.fromkeys(ACCOUNTS, 2)
        event_store.append(self.events)
        project(self.events, projections)

    def tail(self, rounds: int, unprojected: tuple[str, ...] = ()) -> None:
        """A deposit on every account per round, each round its own append (and batch); every row projected
        but `unprojected`'s, which are not written at all."""
        for round_no in range(rounds):
            batch = []
            for account_id in ACCOUNTS:
                self.versions[account_id] += 1
                batch.append(_event(account_id, self.versions[account_id],
                                    AccountCredited(1 + round_no, None, "deposit"),
                                    at=T0 + timedelta(minutes=1 + round_no)))
            self.event_store.append(batch)
            self.events += batch
        project([e for e in self.events if e.aggregate_id not in unprojected], self.projections)


def _daily(log: CountingLog | KafkaEventStore, projections: ProjectionStore, recon: ReconStore) -> ReconciliationReport:
    report = reconcile_all(log, projections, checkpoints=CheckpointStore(recon.engine), reports=recon)  # type: ignore[arg-type]
    recon.save_report(report, source="test")
    return report


def _checkpointed_ends(event_store: KafkaEventStore, recon: ReconStore) -> dict[TopicPartitionKey, int]:
    header = CheckpointStore(recon.engine).header(topics_key(event_store.topics.all()))
    assert header is not None
    return dict(header.cut.end)


def _range(start: dict[TopicPartitionKey, int], end: dict[TopicPartitionKey, int]) -> set[Position]:
    return {(t, p, o) for (t, p), last in end.items() for o in range(start.get((t, p), 0), last)}


def _assert_like_full(report: ReconciliationReport, event_store: KafkaEventStore,
                      projections: ProjectionStore) -> None:
    full = reconcile_all(event_store, projections)
    assert [(f.key, f.detail) for f in report.findings] == [(f.key, f.detail) for f in full.findings]
    assert report.ledger == full.ledger


def test_a_daily_run_whose_tail_is_too_long_for_delta_plans_so_first_and_reads_the_tail_once(
        event_store: KafkaEventStore, projection_store: ProjectionStore, recon: ReconStore, events: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    history = History(event_store, projection_store)
    assert _daily(event_store, projection_store, recon).stats["replay_mode"] == "full"
    checkpointed = _checkpointed_ends(event_store, recon)
    history.tail(rounds=4)
    monkeypatch.setattr(read_plan, "MIN_TAIL_LIMIT", 3)  # a tail of 32 events is too long for a delta run
    monkeypatch.setattr(read_plan, "MAX_TAIL_PER_ENTITY", 0.0)
    events.clear()
    counting = CountingLog(event_store, events)

    report = _daily(counting, projection_store, recon)

    assert report.stats["replay_mode"] == "incremental"
    assert "(every entity diffed: the tail holds about" in report.stats["replay_mode_reason"]
    assert events[0].startswith("read plan: incremental, resumed from checkpoint") and "the tail holds" in events[0]
    assert [e for e in events[1:] if e.startswith("read plan")] == []  # decided once, before the first read
    assert set(counting.fetched) == _range(checkpointed, report.cut.end)  # the tail, nothing before it
    assert set(counting.fetched.values()) == {1}  # each record once
    assert report.stats["events_read"] == 4 * len(ACCOUNTS)
    _assert_like_full(report, event_store, projection_store)


def test_a_delta_run_reads_its_tail_once(event_store: KafkaEventStore, projection_store: ProjectionStore,
                                         recon: ReconStore, events: list[str]) -> None:
    history = History(event_store, projection_store)
    _daily(event_store, projection_store, recon)
    checkpointed = _checkpointed_ends(event_store, recon)
    history.tail(rounds=2)
    events.clear()
    counting = CountingLog(event_store, events)

    report = _daily(counting, projection_store, recon)

    assert report.stats["replay_mode"] == "delta", report.stats["replay_mode_reason"]
    assert events[0].startswith("read plan: delta, delta from the checkpoint of run")
    assert set(counting.fetched) == _range(checkpointed, report.cut.end)
    assert set(counting.fetched.values()) == {1}


def test_an_entity_the_pre_scan_missed_means_every_entity_diffed_with_the_tail_already_read(
        event_store: KafkaEventStore, projection_store: ProjectionStore, recon: ReconStore, events: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    history = History(event_store, projection_store)
    _daily(event_store, projection_store, recon)
    checkpointed = _checkpointed_ends(event_store, recon)
    history.tail(rounds=2, unprojected=("acc-2",))  # its row does not change
    named = delta.touched_by

    def misses_acc_2(*args: Any) -> dict[str, set[str]]:
        touched = named(*args)
        touched["account"].discard("acc-2")
        return touched

    monkeypatch.setattr(delta, "touched_by", misses_acc_2)
    counting = CountingLog(event_store, events)

    report = _daily(counting, projection_store, recon)

    assert report.stats["replay_mode"] == "incremental"
    assert report.stats["replay_mode_reason"].endswith(
        "(every entity diffed: the tail changed entities the pre-scan did not name: acc-2)")
    assert set(counting.fetched) == _range(checkpointed, report.cut.end)
    assert set(counting.fetched.values()) == {1}
    assert ("account", "acc-2", "lagging") in {f.key for f in report.findings}
    _assert_like_full(report, event_store, projection_store)


def test_a_damaged_state_found_by_a_delta_run_means_a_full_replay_that_reads_each_range_once(
        event_store: KafkaEventStore, projection_store: ProjectionStore, recon: ReconStore, events: list[str]) -> None:
    history = History(event_store, projection_store)
    _daily(event_store, projection_store, recon)
    # 0xc1 is never valid MessagePack
    assert overwrite_checkpointed_states(projection_store.engine, b"\xc1\xff", ("account", "acc-3")) == 1
    history.tail(rounds=1)  # the tail touches acc-3: D holds it
    counting = CountingLog(event_store, events)

    report = _daily(counting, projection_store, recon)

    assert report.stats["replay_mode"] == "full"
    assert report.stats["replay_mode_reason"] == (
        "the checkpointed state of account 'acc-3' does not decode (DecodeError: MessagePack data is malformed: "
        "invalid opcode '\\xc1' (byte 0)): full replay")
    assert set(counting.fetched) == _range({}, report.cut.end)  # the log up to the tail, then the tail held
    assert set(counting.fetched.values()) == {1}
    assert report.cut.start == dict.fromkeys(report.cut.end, 0)
    assert report.stats["events_read"] == 3 * len(ACCOUNTS) and report.findings == []
    _assert_like_full(report, event_store, projection_store)
