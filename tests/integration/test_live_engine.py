"""Reconciling while the billing engine runs (issue 13): no false finding during projector lag, none after it.

The stand-in engine (support/standin_engine.py) runs in its own process against this test's topics and
database: it appends accounts' activity and whole transfer sagas at ~150 events/s and applies each event to
the projections a moment later with plain INSERTs and UPDATEs. Its history is clean, so everything the
pipeline reports during traffic must be `lagging` (info), and after the engine stops and has applied
everything (it checks its own rows are exact) nothing at all. Past the lag window a row that is still missing
is a real `missing_projection` again.

Nothing here is timed: each step waits for a condition (events appended, a withheld event older than the
window) with a timeout, and asserts only what holds whatever the interleaving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from support.live_engine import EngineConfig, LiveEngine, running_engine

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource

BILLING_RECON = str(Path(sys.executable).with_name("billing-recon"))
PREFIX = "live-"
EDGE_WINDOW_S = 2.0
# Findings as (entity_type, entity_id, kind, severity, detail), the form a failure prints for the lead.
FindingRow = tuple[str, str, str, str, str]


@pytest.fixture
def live(servers: Any, topics: Topics, database_url: str, event_store: KafkaEventStore,
         projection_store: ProjectionStore) -> EngineConfig:
    """This test's topics (created, 3 partitions) and database (with the projection tables) for the engine."""
    return EngineConfig(servers.bootstrap_servers, database_url, topics, prefix=PREFIX)


@pytest.fixture
def cli_env(live: EngineConfig) -> dict[str, str]:
    """The environment of a `billing-recon` subprocess: ours, none of the caller's BILLING_* settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BILLING_")}
    return env | {"BILLING_KAFKA_BOOTSTRAP_SERVERS": live.bootstrap_servers,
                  "BILLING_DATABASE_URL": live.database_url,
                  "BILLING_TOPIC_PREFIX": live.topics.accounts.removesuffix("account-events"),
                  "BILLING_TOPIC_PARTITIONS": "3"}


def reconcile(env: Mapping[str, str], *args: str) -> tuple[int, list[FindingRow]]:
    """`billing-recon reconcile ... --json` as a subprocess: its exit code and findings."""
    done = subprocess.run([BILLING_RECON, "reconcile", *args, "--json"], env=dict(env), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode in (0, 1), f"reconcile {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    findings = json.loads(done.stdout)["findings"]
    return done.returncode, [(f["entity_type"], f["entity_id"], f["kind"], f["severity"], f["detail"])
                             for f in findings]


def not_lagging(findings: Iterable[FindingRow]) -> list[FindingRow]:
    return [f for f in findings if (f[2], f[3]) != ("lagging", "info")]


def described(findings: Iterable[FindingRow]) -> str:
    """Every finding on its own line (kind, entity, severity, detail): what the lead needs to fix the domain."""
    rows = sorted(findings, key=lambda f: (f[2], f[0], f[1]))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[2]] = counts.get(row[2], 0) + 1
    return f"{counts}\n" + "\n".join(f"  {kind} {entity_type} {entity_id} [{severity}]: {detail}"
                                      for entity_type, entity_id, kind, severity, detail in rows)


def keys(findings: Iterable[FindingRow]) -> set[tuple[str, str, str]]:
    return {(entity_type, entity_id, kind) for entity_type, entity_id, kind, _, _ in findings}


def newest_row(projection_store: ProjectionStore, entity_type: str) -> str:
    """The entity whose row the engine wrote last: one that is busy right now, for the single-entity checks."""
    table, key = (("account_projection", "account_id") if entity_type == "account"
                  else ("transaction_projection", "transaction_id"))
    with projection_store.engine.connect() as conn:
        newest = conn.exec_driver_sql(f"SELECT {key} FROM billing.{table} WHERE starts_with({key}, %(p)s) "
                                      "ORDER BY updated_at DESC LIMIT 1", {"p": PREFIX}).scalar()
    assert isinstance(newest, str)
    return newest


# --- the command line --------------------------------------------------------------------------------
def test_the_cli_reports_only_lagging_while_the_engine_runs_and_nothing_once_it_has_caught_up(
        live: EngineConfig, cli_env: dict[str, str], projection_store: ProjectionStore) -> None:
    during: dict[str, list[FindingRow]] = {}
    # The daily path (`all`, a delta run once a report exists), the incremental scopes, then one busy account
    # (its partition's tail only) and one transfer (with its two accounts' tails), each chosen just before its run.
    commands: list[Callable[[], tuple[str, ...]]] = [
        lambda: ("all",), lambda: ("accounts",), lambda: ("transactions",),
        lambda: ("account", newest_row(projection_store, "account")),
        lambda: ("transaction", newest_row(projection_store, "transaction"))]
    ran: list[tuple[str, ...]] = []
    with running_engine(live) as engine:
        for command in commands:
            engine.wait_for_more(50)  # every run reads a log and rows that moved since the last one
            ran.append(command())
            during[" ".join(ran[-1])] = reconcile(cli_env, *ran[-1])[1]
        summary = engine.stop()
    assert summary["appended"] > 0 and summary["transaction_status"].get("pending", 0) > 0
    print({command: len(found) for command, found in during.items()})  # how much was lagging, for the record

    false_alarms = {command: not_lagging(found) for command, found in during.items() if not_lagging(found)}
    assert false_alarms == {}, "during traffic, findings other than lagging:\n" + "\n".join(
        f"reconcile {command}: {described(found)}" for command, found in false_alarms.items())
    after = {" ".join(command): reconcile(cli_env, *command) for command in ran[:4]}  # the same account
    unclean = {command: result for command, result in after.items() if result != (0, [])}
    assert unclean == {}, "after the engine stopped and caught up, reconcile must be clean (exit 0, no finding):\n" + (
        "\n".join(f"reconcile {command}: exit {code} {described(found)}" for command, (code, found) in unclean.items()))


def test_the_columnar_engine_reports_only_lagging_while_the_engine_runs_and_nothing_once_it_has_caught_up(
        live: EngineConfig, cli_env: dict[str, str]) -> None:
    """BILLING_REPLAY_ENGINE=columnar under a running engine: a full replay whose plain streams are folded as
    columns judges a projector a moment behind as lagging, as the aggregates do (issue 17; the differential
    tests compare the two on generated histories, this on live traffic)."""
    columnar = cli_env | {"BILLING_REPLAY_ENGINE": "columnar"}
    during: list[list[FindingRow]] = []
    with running_engine(live) as engine:
        for _ in range(2):
            engine.wait_for_more(50)
            during.append(reconcile(columnar, "all", "--full")[1])
        engine.stop()
    verbose = subprocess.run([BILLING_RECON, "-v", "reconcile", "all", "--full", "--json"], env=columnar,
                             capture_output=True, text=True, timeout=120, check=False)
    assert "columnar replay:" in verbose.stderr, "the columnar engine did not fold this run"

    false_alarms = [not_lagging(found) for found in during if not_lagging(found)]
    assert false_alarms == [], "during traffic, findings other than lagging:\n" + "\n".join(
        described(found) for found in false_alarms)
    assert reconcile(columnar, "all", "--full") == (0, []), "after catch-up, the columnar full replay must be clean"


# --- daily_reconciliation ------------------------------------------------------------------------------
def daily_job(live: EngineConfig) -> Callable[[bool], tuple[str, str, list[FindingRow]]]:
    """Runs `daily_reconciliation` on one instance; returns its replay mode and the findings stored under its run id."""
    prefix = live.topics.accounts.removesuffix("account-events")
    resources: dict[str, Any] = {
        "event_store": EventStoreResource(bootstrap_servers=live.bootstrap_servers, topic_prefix=prefix, partitions=3),
        "projections": ProjectionsResource(database_url=live.database_url),
        "slack": SlackResource(),  # no token: alerts go to the log
    }
    job = build_defs(resources).resolve_job_def("daily_reconciliation")
    instance = dg.DagsterInstance.ephemeral()
    recon = ReconStore(resources["projections"].recon_store().engine)

    def run(full_replay: bool) -> tuple[str, str, list[FindingRow]]:
        result = job.execute_in_process(instance=instance, run_config={
            "ops": {"reconciliation": {"config": {"full_replay": full_replay}}}})
        assert result.success
        mode = next(str(e.step_materialization_data.materialization.metadata["replay_mode"].value)
                    for e in result.get_asset_materialization_events()
                    if e.asset_key == dg.AssetKey("replayed_state"))
        stored = [(f.entity_type, f.entity_id, f.kind.value, f.severity.value, f.detail)
                  for f in recon.findings(result.run_id)]
        return result.run_id, mode, stored

    return run


def test_daily_reconciliation_stores_only_lagging_during_traffic_and_nothing_after_catch_up(
        live: EngineConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BILLING_LAG_WINDOW_SECONDS", "BILLING_PROJECTOR_GROUP", "BILLING_STUCK_AFTER_MINUTES"):
        monkeypatch.delenv(name, raising=False)  # the contract's defaults
    run = daily_job(live)
    during: dict[str, list[FindingRow]] = {}
    modes: list[str] = []
    with running_engine(live) as engine:
        for round_no, full in enumerate((True, False, False)):  # full, then the daily path (delta) twice
            engine.wait_for_more(100)
            run_id, mode, stored = run(full)
            during[f"run {round_no} ({mode}, {run_id})"] = stored
            modes.append(mode)
        engine.stop()
    _, mode_after, after = run(False)
    modes.append(mode_after)
    print({name: len(stored) for name, stored in during.items()})  # how much was lagging, for the record

    false_alarms = {name: not_lagging(stored) for name, stored in during.items() if not_lagging(stored)}
    assert false_alarms == {}, "during traffic, findings other than lagging:\n" + "\n".join(
        f"{name}: {described(stored)}" for name, stored in false_alarms.items())
    assert after == [], f"after catch-up ({mode_after}) every finding must be gone: {described(after)}"
    # The carried-over findings of the delta path are what issue 13 caught outliving their facts: it must be taken.
    assert [mode.split(":")[0] for mode in modes] == ["full", "delta", "delta", "delta"], modes


# --- the lag window's edge ---------------------------------------------------------------------------
def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def older_than_window(engine: LiveEngine) -> Callable[[], bool]:
    withheld = engine.status.withheld
    assert withheld is not None
    # A little past the edge: the run's clock is read on another process's clock after this one.
    return lambda: datetime.now(UTC) - withheld.occurred_at > timedelta(seconds=EDGE_WINDOW_S + 0.5)


@pytest.mark.parametrize("delay_s", [0.0, 1.5])
def test_past_the_window_a_missing_row_is_missing_projection_again_and_delays_under_it_are_only_lagging(
        delay_s: float, live: EngineConfig, cli_env: dict[str, str]) -> None:
    config = EngineConfig(live.bootstrap_servers, live.database_url, live.topics, prefix=PREFIX, delay_s=delay_s,
                          withhold=True)
    narrow = cli_env | {"BILLING_LAG_WINDOW_SECONDS": str(EDGE_WINDOW_S)}
    with running_engine(config) as engine:
        withheld = engine.status.withheld
        assert withheld is not None
        missing = ("account", withheld.entity_id, "missing_projection")
        # With the default window (60 s) the withheld account is as young as the traffic: lagging, like the rest.
        _, wide = reconcile(cli_env, "all")
        wait_for(older_than_window(engine), f"withheld event older than {EDGE_WINDOW_S} s")
        engine.wait_for_more(50)
        _, during = reconcile(narrow, "all")
        summary = engine.stop()

    assert not_lagging(wide) == [] and ("account", withheld.entity_id, "lagging") in keys(wide), \
        f"window 60 s: {described(not_lagging(wide))}"
    assert keys(not_lagging(during)) == {missing}, (
        f"window {EDGE_WINDOW_S} s, apply delay {delay_s} s (the engine's slowest apply took "
        f"{summary['max_apply_lag_s']} s from occurred_at): {described(not_lagging(during))}")


def test_the_standin_engine_drains_on_stop_and_its_rows_are_exact(live: EngineConfig,
                                                                  projection_store: ProjectionStore) -> None:
    """The stand-in itself: every saga outcome written, every event applied once it stops, its rows exact."""
    with running_engine(live, appended=300) as engine:
        summary = engine.stop()
    assert summary["exact"] and summary["appended"] >= 300
    assert summary["accounts"] >= 8 and summary["applied"] == summary["appended"]
    assert set(summary["transaction_status"]) == {"completed", "failed", "compensated", "pending"}
    assert _rows(projection_store, "account_projection") == summary["accounts"]
    assert _rows(projection_store, "transaction_projection") == summary["transactions"]


def _rows(projection_store: ProjectionStore, table: str) -> int:
    with projection_store.engine.connect() as conn:
        count = conn.exec_driver_sql(f"SELECT count(*) FROM billing.{table}").scalar()
    return int(count or 0)
