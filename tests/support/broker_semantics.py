"""Record shapes any Kafka-protocol broker serves, as checks that take the broker's bootstrap servers.

`RecordShapeChecks` is an abstract class of tests (the contract suites' pattern): a concrete class gives the
`bootstrap` fixture. tests/integration/test_record_shapes.py runs it on the session's broker and
tests/integration/test_kafka_semantics.py on Apache Kafka, so each broker is held to the same behaviour:

- a tombstone (a null value) or a message with no key is one `stream_corrupt` finding naming its topic,
  partition and offset, through every read path (full, incremental and delta runs, one entity, a point in
  time, the projector), never a crash;
- batches compressed with each codec (gzip, snappy, lz4, zstd) and messages with headers are replayed exactly.

`TopicConfigChecks` holds the broker to the contract's "a topic whose configuration could drop events: say so
loudly": a compacted topic, or one with a finite retention, is a warning in the report's stats, in the Dagster
assets' metadata and in the findings alert (the run's findings stay what the log says: no kind is added).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.events import AccountCredited, AccountOpened, Event, encode_event
from billing_domain.core.findings import ReconciliationReport
from billing_domain.core.records import Topics
from billing_domain.core.topic_config import CAN_LOSE_EVENTS, SAFE
from billing_domain.services import point_in_time
from billing_domain.services.reconcile import ReconcileOptions
from billing_domain.services.run_reconciliation import ReconciliationRequest, RunStores, run_reconciliation
from billing_pipelines.assets import REPLAYED_STATE
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource
from billing_pipelines.sensors import reconciliation_findings_sensor
from billing_sandbox.projector import LiveProjector
from support.builders import EventFactory, fold, project, transfer_history
from support.slack_standin import SlackStandin

T0 = datetime(2026, 5, 1, tzinfo=UTC)
CLOCK_AT = T0 + timedelta(hours=1)  # the runs' clock: nothing here is inside the lag window or stuck
OPTIONS = ReconcileOptions(clock=lambda: CLOCK_AT)
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
HEADERS: list[tuple[str, str | bytes | None]] = [
    ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("content-type", b"application/json"),
    ("empty", b""), ("repeated", b"1"), ("repeated", b"2")]


def new_log(bootstrap: str, partitions: int = 2, prefix: str = "shape") -> KafkaEventStore:
    store = KafkaEventStore(bootstrap, Topics.with_prefix(f"{prefix}{uuid.uuid4().hex[:8]}."), partitions=partitions)
    store.ensure_topics()
    return store


def run_stores(log: KafkaEventStore, projections: ProjectionStore) -> RunStores:
    recon = ReconStore(projections.engine)
    recon.migrate()
    return RunStores(log, projections, recon, CheckpointStore(projections.engine))


def reconcile(stores: RunStores, run_id: str, **request: Any) -> ReconciliationReport:
    return run_reconciliation(stores, ReconciliationRequest(run_id=run_id, source="test", **request), OPTIONS).report


def place(log: KafkaEventStore, predicate: Any) -> list[tuple[str, int, int]]:
    """Where the messages `predicate` picks sit, read back from the log (topic, partition, offset)."""
    return [(m.topic() or "", m.partition() or 0, m.offset() or 0) for batch in log.read_cut() for m in batch
            if predicate(m)]


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None]], **config: Any) -> None:
    """Produce and confirm every record with a producer of this configuration (idempotent, acks all)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, **config})
    failures: list[KafkaError] = []
    for key, value in records:
        producer.produce(topic, key=key, value=value, headers=HEADERS,
                         on_delivery=lambda err, _msg: failures.append(err) if err is not None else None)
    assert producer.flush(30) == 0 and failures == [], failures


class RecordShapeChecks:
    """Tombstones, keyless messages, compression and headers on one broker (the `bootstrap` fixture)."""

    @pytest.fixture
    def bootstrap(self) -> str:
        raise NotImplementedError("a concrete class gives the broker")

    @pytest.fixture
    def log(self, bootstrap: str) -> Iterator[KafkaEventStore]:
        store = new_log(bootstrap)
        yield store
        store.close()

    def test_a_tombstone_or_a_keyless_message_is_one_stream_corrupt_finding_on_every_path(
            self, log: KafkaEventStore, projection_store: ProjectionStore, caplog: pytest.LogCaptureFixture) -> None:
        event = EventFactory(T0, id_prefix=f"shape-{uuid.uuid4().hex[:6]}")
        history = transfer_history(event)
        log.append(history)
        project(history, projection_store)
        keyless = event("acc-k", 1, AccountOpened("owner-k", "EUR", 0, 10**6), 4)
        log.append_raw([RawRecord(log.topics.accounts, b"acc-a", None),  # a tombstone of acc-a's stream
                        RawRecord(log.topics.accounts, None, encode_event(keyless)),  # a keyless event
                        RawRecord(log.topics.transactions, None, None)])  # neither key nor value
        tombstone = place(log, lambda m: m.value() is None and m.key() == b"acc-a")
        no_key = place(log, lambda m: m.key() is None and m.value() is not None)
        nothing = place(log, lambda m: m.key() is None and m.value() is None)
        assert len(tombstone) == len(no_key) == len(nothing) == 1
        expected = {("account", "acc-a", *tombstone[0]), ("account", "acc-k", *no_key[0]),
                    ("transaction", f"<no key> {nothing[0][0]}[{nothing[0][1]}]@{nothing[0][2]}", *nothing[0])}
        stores = run_stores(log, projection_store)

        def corrupt(report: ReconciliationReport) -> set[tuple[Any, ...]]:
            found = {(f.entity_type, f.entity_id, f.topic, f.partition, f.offset) for f in report.findings}
            assert {f.kind.value for f in report.findings} == {"stream_corrupt"}, report.findings
            return found

        full = reconcile(stores, "shape-full", full=True)
        assert corrupt(full) == expected
        details = {f.entity_id: f.detail for f in full.findings}
        assert "tombstone" in details["acc-a"] and "no message key" in details["acc-k"]
        assert all(f"{topic}[{partition}]" in details[e] for _, e, topic, partition, _ in expected)

        # The same records in the tail after a checkpoint: incremental, then delta, say the same.
        later = event("acc-b", 3, AccountCredited(5, None, "deposit"), 5)
        log.append([later])
        project([*history, later], projection_store)
        log.append_raw([RawRecord(log.topics.accounts, b"acc-b", None)])
        second = place(log, lambda m: m.value() is None and m.key() == b"acc-b")[0]
        expected.add(("account", "acc-b", *second))
        incremental = reconcile(stores, "shape-incremental")
        assert incremental.stats["replay_mode"] == "incremental"
        assert corrupt(incremental) == expected
        delta = reconcile(stores, "shape-delta", delta=True)
        assert delta.stats["replay_mode"] in ("delta", "incremental")
        assert corrupt(delta) == expected

        one = reconcile(stores, "shape-one", entity=("account", "acc-b"))
        assert corrupt(one) == {("account", "acc-b", *second)}
        cut = point_in_time.cut_at(log, T0 + timedelta(minutes=10))
        assert sum(cut.stop.values()) == sum(full.cut.end.values()) + 2  # every record, the two later ones too
        as_of = point_in_time.reconcile_as_of(log, T0 + timedelta(minutes=10))
        assert {(f.entity_id, f.offset) for f in as_of.findings} == {(e[1], e[4]) for e in expected}

        projector = LiveProjector(log, projection_store.engine, f"shape-projector-{uuid.uuid4().hex[:6]}")
        with caplog.at_level(logging.ERROR, logger="billing_sandbox.projector"):
            projector.run_until_caught_up(60)  # skips what it cannot decode, says so, goes on
        projector.close()
        assert caplog.text.count("message has no value (tombstone)") == 3

    def test_compressed_batches_with_headers_are_replayed_exactly(
            self, bootstrap: str, log: KafkaEventStore, projection_store: ProjectionStore) -> None:
        event = EventFactory(T0, id_prefix=f"codec-{uuid.uuid4().hex[:6]}")
        by_codec: dict[str, list[Event]] = {}
        for codec in CODECS:  # each codec its own accounts, in version order; the last one a transfer too
            accounts = [f"acc-{codec}-{i}" for i in range(3)]
            by_codec[codec] = [event(a, 1, AccountOpened(f"owner-{a}", "EUR", 0, 10**9)) for a in accounts]
            by_codec[codec] += [event(a, v, AccountCredited(100 * v, None, "deposit"), v) for v in range(2, 12)
                                for a in accounts]
        by_codec[CODECS[-1]] += transfer_history(event)
        events = [e for share in by_codec.values() for e in share]
        produced: dict[bytes, tuple[bytes | None, list[tuple[str, str | bytes | None]]]] = {}
        for codec, share in by_codec.items():
            for topic in log.topics.all():
                records = [(e.aggregate_id.encode(), encode_event(e)) for e in share if log.topic_for(e.aggregate_type)
                           == topic]
                produce(bootstrap, topic, records, **{"compression.type": codec, "batch.num.messages": 50})
            produced |= {encode_event(e): (e.aggregate_id.encode(), HEADERS) for e in share}
        read: list[Message] = [m for batch in log.read_cut() for m in batch]
        assert len(read) == len(events)
        assert {m.value(): (m.key(), m.headers()) for m in read} == produced  # keys, values and headers, exactly

        project(events, projection_store)
        report = reconcile(run_stores(log, projection_store), "codecs", full=True)
        assert report.findings == [], report.findings
        assert report.stats["events_read"] == len(events), report.stats
        assert report.stats["duplicates_ignored"] == 0

        with projection_store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM billing.account_projection")
            conn.exec_driver_sql("DELETE FROM billing.transaction_projection")
        projector = LiveProjector(log, projection_store.engine, f"codec-projector-{uuid.uuid4().hex[:6]}")
        assert projector.run_until_caught_up(60) == len(events)
        projector.close()
        folded = fold(events)
        assert projection_store.read_accounts() == {k: a.state() for k, a in folded.accounts.items()}


def create_topics(bootstrap: str, configs: dict[str, dict[str, str]], partitions: int = 1) -> None:
    """Create topics with these settings, as an operator would have (not through `ensure_topics`)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, partitions, 1, config=c) for t, c in configs.items()]).values():
        future.result(30)


class TopicConfigChecks:
    """A topic whose configuration can lose events, said loudly, on one broker (the `bootstrap` fixture)."""

    @pytest.fixture
    def bootstrap(self) -> str:
        raise NotImplementedError("a concrete class gives the broker")

    def test_the_topics_the_pipeline_creates_keep_every_event(self, bootstrap: str,
                                                              projection_store: ProjectionStore) -> None:
        log = new_log(bootstrap, prefix="kept")
        configs = log.topic_configs()
        assert set(configs) == set(log.topics.all())
        assert all(c.settings == {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
                   for c in configs.values()), configs
        history = transfer_history(EventFactory(T0))
        log.append(history)
        project(history, projection_store)
        report = reconcile(run_stores(log, projection_store), "kept", full=True)
        assert report.findings == [] and report.stats["warnings"] == []
        assert report.stats["topic_config_status"] == SAFE and report.stats["topic_config_note"] is None
        log.close()

    def test_a_topic_that_can_lose_events_is_a_loud_warning_in_the_report_the_assets_and_the_alert(
            self, bootstrap: str, database_url: str, projection_store: ProjectionStore) -> None:
        prefix = f"lossy{uuid.uuid4().hex[:8]}."
        topics = Topics.with_prefix(prefix)
        create_topics(bootstrap, {topics.accounts: {"cleanup.policy": "compact", "retention.ms": "-1",
                                                    "retention.bytes": "-1"},
                                  topics.transactions: {"cleanup.policy": "delete", "retention.ms": "86400000",
                                                        "retention.bytes": "1073741824"}})
        log = KafkaEventStore(bootstrap, topics, partitions=1)
        history = transfer_history(EventFactory(T0))
        log.append(history)
        project(history, projection_store)

        report = reconcile(run_stores(log, projection_store), "lossy", full=True)
        assert report.findings == []  # what the log holds is consistent: the warning is about what it may have lost
        assert report.stats["topic_config_status"] == CAN_LOSE_EVENTS
        accounts, transactions = sorted(report.stats["warnings"])
        assert topics.accounts in accounts and "cleanup.policy=compact" in accounts
        assert topics.transactions in transactions and "retention.ms=86400000 (1 days)" in transactions
        assert "retention.bytes=1073741824 (1 GiB per partition)" in transactions
        assert report.to_json()["stats"]["warnings"] == report.stats["warnings"]
        log.close()

        slack = SlackStandin().start()
        try:
            resources = {
                "event_store": EventStoreResource(bootstrap_servers=bootstrap, partitions=1, topic_prefix=prefix),
                "projections": ProjectionsResource(database_url=database_url),
                "slack": SlackResource(bot_token="xoxb-lossy", channel="#alerts", api_url=slack.url),
            }
            instance = dg.DagsterInstance.ephemeral()
            result = build_defs(resources).resolve_job_def("daily_reconciliation").execute_in_process(
                instance=instance)
            assert result.success
            materialized = {m.asset_key: m.metadata for m in result.asset_materializations_for_node("reconciliation")}
            for key, metadata in materialized.items():  # every asset of the run shows it, the replayed state first
                assert metadata["event_log"].value == CAN_LOSE_EVENTS, key
                shown = str(metadata["EVENT_LOG_CAN_LOSE_EVENTS"].value)
                assert "cleanup.policy=compact" in shown and "retention.ms=86400000" in shown, key
            assert REPLAYED_STATE in materialized
            success = next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS")
            run = instance.get_run_by_id(result.run_id)
            assert run is not None
            with dg.build_run_status_sensor_context(sensor_name="s", dagster_event=success, dagster_instance=instance,
                                                    dagster_run=run, resources=resources) as context:
                reconciliation_findings_sensor(context)
            [alert] = slack.messages  # a clean run alerts all the same: its replay may be missing events
            assert str(alert["text"]).startswith(":warning: EVENT LOG CAN LOSE EVENTS")
            assert topics.accounts in str(alert["blocks"]) and "retention.ms=86400000" in str(alert["blocks"])
        finally:
            slack.stop()


# --- the live projector's consumer group across a rebalance --------------------------------------------------
PROJECTOR_PROCESS = Path(__file__).with_name("projector_process.py")
REBALANCE_TIMEOUT_S = 60.0


class _Child:
    """A projector process (support/projector_process.py) and the JSON lines it prints."""

    def __init__(self, args: list[str], arm: Path) -> None:
        env = {**os.environ, "PROJECTOR_ARM_FILE": str(arm)}
        self.log = arm.with_name("projector-process.log")
        with self.log.open("w") as log:
            self.process = subprocess.Popen([sys.executable, str(PROJECTOR_PROCESS), *args], stdout=subprocess.PIPE,
                                            stderr=log, env=env, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.last: dict[str, Any] = {"assigned": [], "applied": 0}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, key: str, timeout: float = REBALANCE_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"the projector process never said {key!r}; last: {self.last}") from None
            self.last = {**self.last, **line}
            if key in line:
                return line

    def drain(self) -> dict[str, Any]:
        while not self.lines.empty():
            self.last = {**self.last, **self.lines.get()}
        return self.last

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


class _Member:
    """A projector in a thread of the test, counting what it applies."""

    def __init__(self, log: KafkaEventStore, engine: Any, group: str) -> None:
        self.projector = LiveProjector(log, engine, group, session_timeout_ms=6000)
        self.applied = 0
        self.assigned: list[tuple[str, int]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.applied += self.projector.poll_once()
                # Asked here: a consumer's calls from another thread wait for its consume() to return.
                self.assigned = [(tp.topic, tp.partition) for tp in self.projector._consumer.assignment()]
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.projector.close()


def _versions(projections: ProjectionStore) -> int:
    """Events applied so far (each stream's versions run 1, 2, ...): the rows' versions summed."""
    with projections.engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT COALESCE((SELECT SUM(version) FROM billing.account_projection), 0) + "
            "COALESCE((SELECT SUM(version) FROM billing.transaction_projection), 0)").scalar_one())


def _wait_until(condition: Any, what: str, timeout: float = REBALANCE_TIMEOUT_S, state: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}{f': {state()}' if state else ''}")
        time.sleep(0.1)


def _split(member: _Member, child: _Child, partitions: list[tuple[str, int]]) -> bool:
    """Do the two hold every partition between them, none twice? (Tansu does not describe a group's members.)"""
    ours = member.assigned
    theirs = [(t, int(p)) for t, p in (name.rsplit(":", 1) for name in child.drain()["assigned"])]
    return bool(ours) and bool(theirs) and sorted(ours + theirs) == sorted(partitions)


class ProjectorRebalanceChecks:
    """Two projectors in one consumer group, one killed mid-batch: the other takes its partitions over and every
    event is applied exactly once (on the `bootstrap` fixture's broker)."""

    @pytest.fixture
    def bootstrap(self) -> str:
        raise NotImplementedError("a concrete class gives the broker")

    def test_a_killed_projectors_partitions_are_taken_over_and_every_event_is_applied_once(
            self, bootstrap: str, database_url: str, projection_store: ProjectionStore, tmp_path: Path) -> None:
        log = new_log(bootstrap, partitions=3, prefix="rebalance")
        group = f"projector-rebalance-{uuid.uuid4().hex[:8]}"
        event = EventFactory(T0, id_prefix=f"rb-{uuid.uuid4().hex[:6]}")
        accounts = [f"acc-{i:02d}" for i in range(24)]
        first = [event(a, 1, AccountOpened(f"owner-{a}", "EUR", 0, 10**9)) for a in accounts]
        first += [event(a, v, AccountCredited(v, None, "deposit"), v) for v in range(2, 8) for a in accounts]
        second = [event(a, v, AccountCredited(v, None, "deposit"), v) for v in range(8, 20) for a in accounts]
        arm = tmp_path / "arm"
        survivor = _Member(log, projection_store.engine, group)
        child = _Child([bootstrap, log.topics.accounts.removesuffix("account-events"), "3", database_url, group], arm)

        def state() -> str:
            return (f"survivor applied {survivor.applied} on {survivor.assigned} ({survivor.error!r}), the other "
                    f"{child.drain()}, rows at {_versions(projection_store)}; its log: {child.log.read_text()[-1500:]}")
        try:
            _wait_until(lambda: _split(survivor, child, log.all_partitions()), "the two to share the partitions")
            log.append(first)
            _wait_until(lambda: _versions(projection_store) == len(first), "both projectors to apply the first events",
                        state=state)
            _wait_until(lambda: survivor.applied + child.drain()["applied"] == len(first),
                        "each projector to report what it applied", 10)
            theirs = [(t, int(p)) for t, p in (name.rsplit(":", 1) for name in child.last["assigned"])]
            child_first = child.last["applied"]
            assert theirs and child_first > 0 and survivor.applied > 0  # the group split the work ...
            assert survivor.applied + child_first == len(first)  # ... and no event went to both

            arm.touch()  # the child's next batch is its last: applied in the database, its offsets never committed
            log.append(second)
            hung = child.wait_for("hung")["hung"]
            ends = {tp: e.end for tp, e in log.exact_ends(log.all_partitions()).items()}
            committed = log.committed_offsets(group, list(ends))
            child.kill()
            assert hung > child_first  # it applied part of the second events ...
            assert sum(ends[tp] - (committed[tp] or 0) for tp in theirs) >= hung - child_first  # ... never committed

            everything = first + second
            _wait_until(lambda: _versions(projection_store) == len(everything),
                        "the survivor to take the killed projector's partitions over", state=state)
            _wait_until(lambda: survivor.applied + hung == len(everything), "the survivor to apply the rest", 10)
            def commits() -> dict[tuple[str, int], int]:  # an empty partition has nothing to commit
                return {tp: offset or 0 for tp, offset in log.committed_offsets(group, list(ends)).items()}
            _wait_until(lambda: commits() == ends, "the survivor's commits", 30, state=lambda: (commits(), ends))
            assert survivor.error is None
            assert survivor.applied + hung == len(everything)  # every event applied once: none twice, none lost
            folded = fold(everything)
            assert projection_store.read_accounts() == {k: a.state() for k, a in folded.accounts.items()}
            options = ReconcileOptions(clock=lambda: CLOCK_AT, projector_group=group)
            report = run_reconciliation(run_stores(log, projection_store),
                                        ReconciliationRequest(run_id=group, source="test", full=True), options).report
            assert report.findings == [] and report.stats["projector_offsets_read"] is True
        finally:
            child.kill()
            survivor.stop()
            log.close()
