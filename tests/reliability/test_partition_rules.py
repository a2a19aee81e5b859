"""Messages that break the placement rules, produced straight to the real broker: an event with no key,
an event of an existing aggregate on another partition (its key placed by some other partitioner), and
an event whose version no projection could hold (2**70). Each is one named `stream_corrupt` finding of
`reconcile all --full` (exit 1) and of `daily_reconciliation`, none is applied, and a rebuild plan of
everything refuses those accounts instead of crashing.

The clean history is produced to explicit partitions too: the rule under test is "one aggregate, one
partition, every message keyed by its aggregate id", whichever partitioner placed the keys.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from confluent_kafka import Producer
from support.builders import project
from typer.testing import CliRunner

from billing_cli.app import EXIT_FINDINGS, app
from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_domain.core.events import AccountCredited, AccountOpened, AccountSuspended, Event, Payload, encode_event
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource

T0 = datetime(2026, 2, 1, tzinfo=UTC)
HOME = {"acc-a": 0, "acc-b": 1, "acc-c": 2, "acc-d": 1}


def _event(account: str, version: int, payload: Payload) -> Event:
    return Event(str(uuid.uuid4()), type(payload).__name__, 1, "account", account, version,
                 T0 + timedelta(seconds=version), None, payload)


def _produce(bootstrap: str, records: list[tuple[str, int, bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []
    for topic, partition, key, value in records:
        producer.produce(topic, value=value, key=key, partition=partition,
                         on_delivery=lambda err, _msg: failures.append(str(err)) if err else None)
    assert producer.flush(60) == 0 and not failures, failures


def _history() -> list[Event]:
    events = []
    for account in HOME:
        events += [_event(account, 1, AccountOpened("o", "EUR", 0, 10**6)),
                   _event(account, 2, AccountCredited(100, None, "deposit"))]
    return events


def test_keyless_misplaced_and_absurd_events_are_named_findings_whatever_the_order(
        servers: Any, database_url: str, projection_store: ProjectionStore, monkeypatch: Any) -> None:
    topics = Topics.with_prefix(f"placement{uuid.uuid4().hex[:6]}.")
    KafkaEventStore(servers.bootstrap_servers, topics, partitions=3).ensure_topics()
    history = _history()
    _produce(servers.bootstrap_servers, [(topics.accounts, HOME[e.aggregate_id], e.aggregate_id.encode(),
                                          encode_event(e)) for e in history])
    project(history, projection_store)
    keyless = _event("acc-a", 3, AccountCredited(7, None, "deposit"))
    misplaced = _event("acc-b", 3, AccountCredited(5, None, "deposit"))  # its next version, another partition
    absurd = json.loads(encode_event(_event("acc-c", 3, AccountSuspended("x"))))
    absurd["aggregate_version"] = 2**70
    _produce(servers.bootstrap_servers, [
        (topics.accounts, 2, None, encode_event(keyless)),  # acc-c's partition: offset 2
        (topics.accounts, 0, b"acc-b", encode_event(misplaced)),  # acc-a's partition: offset 2
        (topics.accounts, 2, b"acc-c", json.dumps(absurd).encode()),  # its own partition: offset 3
    ])
    expected = {("acc-a", "key", 2, 2, keyless.event_id), ("acc-b", "partition", 0, 2, misplaced.event_id),
                ("acc-c", "aggregate_version", 2, 3, absurd["event_id"])}

    env = {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
           "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _single_entity_checks_name(expected)  # no checkpoint yet: each account's keys from the start
    reports = [CliRunner().invoke(app, ["reconcile", "all", "--full", "--json"]) for _ in range(3)]
    for result in reports:
        assert not isinstance(result.exception, Exception), result.exception  # a crash, not an exit code
        assert result.exit_code == EXIT_FINDINGS, result.output
    first = json.loads(reports[0].stdout)
    assert {_named(f) for f in first["findings"]} == expected
    assert all(json.loads(r.stdout)["findings"] == first["findings"] for r in reports[1:])
    assert all(identity["holds"] for identity in first["ledger"])  # nothing refused was counted

    _single_entity_checks_name(expected)  # now from the checkpoint the runs above wrote
    equation = CliRunner().invoke(app, ["accounting-equation", "--json"])
    assert not isinstance(equation.exception, Exception) and equation.exit_code == 0, equation.output

    plan = CliRunner().invoke(app, ["rebuild", "accounts", "--all", "--dry-run", "--reason", "placement test",
                                    "--json"])
    assert plan.exit_code == EXIT_FINDINGS, plan.output  # refusals
    changes = {c["entity_id"]: c["action"] for c in json.loads(plan.stdout)["changes"]}
    assert changes == {"acc-a": "refused", "acc-b": "refused", "acc-c": "refused", "acc-d": "unchanged"}

    resources = {
        "event_store": EventStoreResource(bootstrap_servers=servers.bootstrap_servers, partitions=3,
                                          topic_prefix=topics.accounts.removesuffix("account-events")),
        "projections": ProjectionsResource(database_url=database_url), "slack": SlackResource()}
    run = build_defs(resources).resolve_job_def("daily_reconciliation").execute_in_process(
        instance=dg.DagsterInstance.ephemeral())
    assert run.success
    stored = ReconStore(make_engine(database_url)).findings(run.run_id)
    assert {(f.entity_id, f.kind.value, f.partition, f.offset, f.event_id) for f in stored} == {
        (account, "stream_corrupt", partition, offset, event_id)
        for account, _, partition, offset, event_id in expected}

    # After the checkpoint: the single-entity path reads every partition's tail, not only the stream's own.
    late = _event("acc-d", 3, AccountCredited(1, None, "deposit"))
    _produce(servers.bootstrap_servers, [(topics.accounts, 2, b"acc-d", encode_event(late))])  # offset 4
    _single_entity_checks_name({("acc-d", "partition", 2, 4, late.event_id)})


def _single_entity_checks_name(expected: set[tuple[str, str, int, int, str]]) -> None:
    for account, *_ in expected:
        one = CliRunner().invoke(app, ["reconcile", "account", account, "--json"])
        assert one.exit_code == EXIT_FINDINGS, one.output
        assert [_named(f) for f in json.loads(one.stdout)["findings"]] == [e for e in expected if e[0] == account]


def _named(finding: dict[str, Any]) -> tuple[str, str, int, int, str]:
    assert finding["kind"] == "stream_corrupt", finding
    [problem] = finding["expected"]["problems"]
    assert (finding["partition"], finding["offset"], finding["event_id"]) == (
        problem["partition"], problem["offset"], problem["event_id"])
    return finding["entity_id"], problem["field"], problem["partition"], problem["offset"], problem["event_id"]
