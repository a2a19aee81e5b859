"""Fault 9: a poison event in the middle of a partition. One `stream_corrupt` finding naming where it
is, the replay goes on (events after it are applied), the projector logs what it skipped, and the
findings sensor sends exactly one alert through the Slack stand-in."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from support.slack_standin import SlackStandin

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_domain.core.events import AccountCredited, AccountOpened, Event, Payload, encode_event
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource
from billing_pipelines.sensors import reconciliation_findings_sensor
from billing_sandbox.projector import LiveProjector

T0 = datetime(2026, 2, 1, tzinfo=UTC)
POISON = b'{"event_id": "poison-1", "event_type": "AccountCredited", "payload": {"amount_minor": 1.5}}'


def _event(account: str, version: int, payload: Payload) -> Event:
    return Event(str(uuid.uuid4()), type(payload).__name__, 1, "account", account, version,
                 T0 + timedelta(seconds=version), None, payload)


def test_a_poison_event_is_one_finding_one_alert_and_the_replay_goes_on(
        servers: Any, database_url: str, projection_store: ProjectionStore, caplog: pytest.LogCaptureFixture,
        figures: Any) -> None:
    topics = Topics.with_prefix(f"poison{uuid.uuid4().hex[:6]}.")
    store = KafkaEventStore(servers.bootstrap_servers, topics, partitions=1)  # one partition: a known order
    store.ensure_topics()
    before = [_event("acc-p", 1, AccountOpened("o", "EUR", 0, 10**6)),
              _event("acc-p", 2, AccountCredited(100, None, "deposit")),
              _event("acc-q", 1, AccountOpened("o", "EUR", 0, 10**6))]
    after = [_event("acc-p", 3, AccountCredited(5, None, "deposit")),
             _event("acc-q", 2, AccountCredited(7, None, "deposit"))]
    figures.injected("poison event mid-partition")
    store.append_raw([RawRecord(topics.accounts, e.aggregate_id.encode(), encode_event(e)) for e in before]
                     + [RawRecord(topics.accounts, b"acc-p", POISON)]
                     + [RawRecord(topics.accounts, e.aggregate_id.encode(), encode_event(e)) for e in after])
    projector = LiveProjector(store, projection_store.engine, f"poison-projector-{uuid.uuid4().hex[:6]}")
    with caplog.at_level(logging.ERROR, logger="billing_sandbox.projector"):
        projector.run_until_caught_up(60)
    projector.close()
    assert "skipping undecodable message" in caplog.text and "@3" in caplog.text  # not skipped silently
    rows = projection_store.read_accounts()
    assert (rows["acc-p"].balance_minor, rows["acc-p"].version) == (105, 3)  # the events after it applied
    assert rows["acc-q"].balance_minor == 7

    slack = SlackStandin().start()
    try:
        resources = {
            "event_store": EventStoreResource(bootstrap_servers=servers.bootstrap_servers, partitions=1,
                                              topic_prefix=topics.accounts.removesuffix("account-events")),
            "projections": ProjectionsResource(database_url=database_url),
            "slack": SlackResource(bot_token="xoxb-poison", channel="#alerts", api_url=slack.url),
        }
        instance = dg.DagsterInstance.ephemeral()
        result = build_defs(resources).resolve_job_def("daily_reconciliation").execute_in_process(instance=instance)
        assert result.success
        findings = ReconStore(make_engine(database_url)).findings(result.run_id)
        [finding] = findings
        assert (finding.entity_type, finding.entity_id, finding.kind.value) == ("account", "acc-p", "stream_corrupt")
        assert (finding.topic, finding.partition, finding.offset, finding.event_id) == (topics.accounts, 0, 3,
                                                                                        "poison-1")
        success = next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS")
        with dg.build_run_status_sensor_context(sensor_name="s", dagster_event=success, dagster_instance=instance,
                                                dagster_run=_run(instance, result.run_id),
                                                resources=resources) as context:
            reconciliation_findings_sensor(context)
        [alert] = slack.messages
        assert "stream_corrupt" in str(alert["blocks"]) and "acc-p" in str(alert["blocks"])
    finally:
        slack.stop()
    figures.survived("poison event mid-partition")


def _run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run
