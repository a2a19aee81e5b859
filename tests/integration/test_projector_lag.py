"""The live projector's lag against the real broker and PostgreSQL: exactly the events it has not applied."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy.engine import Engine
from support.slack_standin import SlackStandin
from typer.testing import CliRunner

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.config import Topics
from billing_domain.core.cut import TopicPartitionKey
from billing_domain.core.events import AccountCredited, AccountOpened, Event, Payload, decode_event
from billing_domain.services.projector_lag import LagThresholds, lag_verdict, measure_lag
from billing_pipelines.projector_lag import projector_lag, projector_lag_sensor
from billing_pipelines.resources import EventStoreResource, SlackResource
from billing_sandbox.projector import LiveProjector

NOW = datetime.now(UTC)


def _event(aggregate_id: str, version: int, payload: Payload, at: datetime) -> Event:
    return Event(f"evt-{uuid.uuid4().hex[:12]}", type(payload).__name__, 1, "account", aggregate_id, version, at,
                 None, payload)


def _opened(n: int, at: datetime) -> list[Event]:
    return [_event(f"acc-{i}", 1, AccountOpened("o", "EUR", 0, 1_000_000), at) for i in range(n)]


def _deposits(n: int, version: int, at: datetime) -> list[Event]:
    return [_event(f"acc-{i}", version, AccountCredited(10, None, "deposit"), at) for i in range(n)]


def _positions(event_store: KafkaEventStore) -> dict[TopicPartitionKey, list[tuple[int, datetime]]]:
    out: dict[TopicPartitionKey, list[tuple[int, datetime]]] = {}
    for batch in event_store.read_cut():
        for m in batch:
            tp = (m.topic() or "", m.partition() or 0)
            out.setdefault(tp, []).append((m.offset() or 0, decode_event(m.value(), m.key()).occurred_at))
    return out


@pytest.fixture
def group() -> str:
    return f"projector-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def caught_up(event_store: KafkaEventStore, engine: Engine, projection_store: ProjectionStore,
              group: str) -> Iterator[dict[TopicPartitionKey, int]]:
    """30 accounts opened and applied by a projector that then stopped; yields each partition's end."""
    event_store.append(_opened(30, NOW - timedelta(hours=1)))
    projector = LiveProjector(event_store, engine, group_id=group)
    try:
        assert projector.run_until_caught_up() == 30
    finally:
        projector.close()
    yield {tp: len(offsets) for tp, offsets in _positions(event_store).items()}


def test_lag_is_exactly_the_unapplied_events_and_zero_after_catching_up(
        event_store: KafkaEventStore, engine: Engine, group: str, caught_up: dict[TopicPartitionKey, int]) -> None:
    nothing = measure_lag(event_store, group)
    assert nothing.total == 0 and nothing.oldest_unapplied_at is None
    assert {(p.topic, p.partition): p.committed for p in nothing.partitions if p.committed} == caught_up

    event_store.append(_deposits(17, 2, NOW - timedelta(minutes=20)))
    event_store.append(_deposits(17, 3, NOW - timedelta(minutes=2)))
    positions = _positions(event_store)
    lag = measure_lag(event_store, group, now=NOW)

    assert lag.total == 34
    for p in lag.partitions:
        unapplied = [at for offset, at in positions.get((p.topic, p.partition), [])
                     if offset >= caught_up.get((p.topic, p.partition), 0)]
        assert p.lag == len(unapplied)
        assert p.end == len(positions.get((p.topic, p.partition), []))
        assert p.oldest_unapplied_at == (min(unapplied) if unapplied else None)
    assert lag.oldest_unapplied_age == timedelta(minutes=20)
    assert lag.behind_newest == timedelta(minutes=18)
    assert lag_verdict(lag, LagThresholds(34, timedelta(minutes=21))).passed
    failed = lag_verdict(lag, LagThresholds(33, timedelta(minutes=15)))
    assert not failed.passed and failed.reasons == ("34 events unapplied (max 33)",
                                                    "oldest unapplied event waiting 20.0 min (max 15 min)")

    projector = LiveProjector(event_store, engine, group_id=group)
    try:
        assert projector.run_until_caught_up() == 34
    finally:
        projector.close()
    after = measure_lag(event_store, group)
    assert after.total == 0 and all(p.lag == 0 for p in after.partitions)


def test_a_group_that_never_committed_is_behind_by_the_whole_log(event_store: KafkaEventStore) -> None:
    event_store.append(_opened(9, NOW))
    lag = measure_lag(event_store, "nobody-ever")
    assert lag.total == 9 and all(p.committed is None for p in lag.partitions)


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    standin = SlackStandin().start()
    yield standin
    standin.stop()


def _resources(servers: Any, topics: Topics, slack: SlackStandin) -> dict[str, Any]:
    return {"event_store": EventStoreResource(bootstrap_servers=servers.bootstrap_servers, partitions=3,
                                              topic_prefix=topics.accounts.removesuffix("account-events")),
            "slack": SlackResource(bot_token="xoxb-test", channel="#ops", api_url=slack.url,
                                   ui_base_url="http://dagster.test")}


def test_the_asset_check_and_the_sensor_alert_when_past_the_threshold(
        event_store: KafkaEventStore, servers: Any, topics: Topics, group: str, slack: SlackStandin,
        caught_up: dict[TopicPartitionKey, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_PROJECTOR_GROUP", group)
    monkeypatch.setenv("BILLING_MAX_PROJECTOR_LAG", "5")
    resources = _resources(servers, topics, slack)

    def evaluate(cursor: str | None) -> tuple[str | None, int]:
        with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
            projector_lag_sensor(context)
            return context.cursor, len(slack.messages)

    assert evaluate(None) == ("ok", 0)
    event_store.append(_deposits(6, 2, NOW))

    result = dg.materialize([projector_lag], resources=resources)
    metadata = result.asset_materializations_for_node("projector_lag")[0].metadata
    assert metadata["total_lag"].value == 6 and metadata["group_id"].value == group
    assert sum(v.value for k, v in metadata.items() if k.startswith("lag/")) == 6
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "projector_lag_within_threshold" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN

    assert evaluate("ok") == ("breached", 1)
    assert f"Projector {group} is behind: 6 events unapplied (max 5)" in slack.messages[0]["text"]
    assert evaluate("breached") == ("breached", 1)  # still behind: no second alert
    monkeypatch.setenv("BILLING_MAX_PROJECTOR_LAG", "10")
    assert evaluate("breached") == ("ok", 2)
    assert "back within bounds" in slack.messages[1]["text"]


def test_with_no_projector_the_sensor_says_so_once_instead_of_a_breach_every_minute(
        event_store: KafkaEventStore, engine: Engine, projection_store: ProjectionStore, servers: Any,
        topics: Topics, group: str, slack: SlackStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo stack: events in the log, no projector ever committed under the group. One message saying
    that no projector runs, then quiet ticks; once a projector has applied the events, one message again."""
    monkeypatch.setenv("BILLING_PROJECTOR_GROUP", group)
    event_store.append(_opened(4, NOW - timedelta(hours=2)))  # far past the age threshold, were it a breach
    resources = _resources(servers, topics, slack)
    lag = measure_lag(event_store, group)
    verdict = lag_verdict(lag, LagThresholds())
    assert verdict.no_projector and not verdict.passed and not lag.projector_seen
    assert verdict.reasons == (f"no projector runs: consumer group {group} has committed no offset on any "
                               "partition (4 events in the log); start the projector, or set "
                               "BILLING_PROJECTOR_GROUP to its group",)

    def evaluate(cursor: str | None) -> tuple[str | None, str | None]:
        with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
            skipped = projector_lag_sensor(context)
            return context.cursor, skipped.skip_message if isinstance(skipped, dg.SkipReason) else None

    cursor, said = evaluate(None)
    assert cursor == "no_projector" and said is not None and "no projector runs" in said
    [message] = slack.messages
    assert f"No projector runs under `{group}`" in str(message["blocks"]) and "behind" not in message["text"]
    assert evaluate(cursor) == ("no_projector", None)  # a minute later: nothing new, nothing said
    assert len(slack.messages) == 1

    projector = LiveProjector(event_store, engine, group_id=group)
    try:
        assert projector.run_until_caught_up() == 4
    finally:
        projector.close()
    assert evaluate(cursor)[0] == "ok"
    assert len(slack.messages) == 2 and f"Projector {group} is running and within bounds" in slack.messages[1]["text"]


def test_the_command(event_store: KafkaEventStore, servers: Any, topics: Topics, database_url: str, group: str,
                     caught_up: dict[TopicPartitionKey, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from billing_cli.app import app

    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", servers.bootstrap_servers)
    monkeypatch.setenv("BILLING_DATABASE_URL", database_url)
    monkeypatch.setenv("BILLING_TOPIC_PREFIX", topics.accounts.removesuffix("account-events"))
    event_store.append(_deposits(3, 2, NOW))
    runner = CliRunner()

    result = runner.invoke(app, ["projector-lag", "--group", group, "--json"])
    assert result.exit_code == 0, result.output
    assert '"total_lag": 3' in result.output
    monkeypatch.setenv("BILLING_MAX_PROJECTOR_LAG", "2")
    assert runner.invoke(app, ["projector-lag", "--group", group]).exit_code == 1
