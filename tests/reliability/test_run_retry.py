"""Fault 3 through Dagster: a rebuild run's worker is SIGKILLed, and the daemon's run retries finish the work.

A real `dagster-daemon` on a DAGSTER_HOME holding the repository's own dagster.yaml (queued coordinator,
`run_retries`) launches `rebuild_accounts`. The test holds a row lock so the rebuild stops inside a batch
with its advisory lock held, SIGKILLs the run worker there, and lets go of the row. From then on nothing
but Dagster acts: the code server sees its run process die and marks the run failed as a crash, and the
daemon relaunches it. The retried run must find the lock released and leave the projections byte for byte
as an undisturbed rebuild does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from reliability_helpers import (
    advisory_locks,
    block_row,
    damaged_history,
    dump_projections,
    lock_waiters,
    rebuild_all_accounts,
    twin_of,
    wait_for,
)
from support.dagster_servers import DagsterProcess, dagster_command, write_workspace
from support.slack_standin import SlackStandin

from billing_pipelines.constants import REBUILD_ACCOUNTS_JOB
from billing_pipelines.resources import SlackResource
from billing_pipelines.sensors import run_failure_slack_sensor

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "billing"
FAULT = "rebuild run worker SIGKILLed, relaunched by the daemon"
STARTED_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


class DaemonHome:
    """A DAGSTER_HOME with the repository's dagster.yaml, a `dagster-daemon` serving it, and its instance."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "dagster_home"
        self.home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.workspace = write_workspace(root / "workspace.yaml", LOCATION)
        self.env: dict[str, str] = {}
        # Create the SQLite storage before two processes race to migrate it.
        self.instance = dg.DagsterInstance.from_config(str(self.home))
        self.daemon: DagsterProcess | None = None

    def start(self, env: dict[str, str]) -> None:
        """Start the daemon; it and the code servers it runs read `env` (laid over ours) once, here."""
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(self.home)}
        self.env.pop("BILLING_SLACK_BOT_TOKEN", None)
        self.daemon = DagsterProcess(dagster_command("dagster-daemon", "run", "-w", str(self.workspace)),
                                     env=self.env, log=self.root / "daemon.log", cwd=self.root, own_session=True)

    def check_alive(self) -> None:
        assert self.daemon is not None and not self.daemon.exited(), self.daemon and self.daemon.log_tail()

    def launch(self, job: str, run_config: dict[str, Any]) -> None:
        """Submit a run the way an operator's launch does: to the queue, for the daemon to start."""
        config = self.root / f"{job}.yaml"
        config.write_text(yaml.safe_dump(run_config))
        done = subprocess.run(dagster_command("dagster", "job", "launch", "-w", str(self.workspace), "-l", LOCATION,
                                              "-j", job, "-c", str(config)),
                              env=self.env, cwd=self.root, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def runs(self, job: str) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(filters=dg.RunsFilter(job_name=job)))

    def worker_pid(self, run_id: str) -> int | None:
        for entry in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            match = STARTED_PID.search(entry.message or "")
            if match:
                return int(match.group(1))
        return None

    def messages(self, run_id: str) -> list[str]:
        return [entry.message or "" for entry in self.instance.all_logs(run_id)]

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        self.instance.dispose()


@pytest.fixture
def daemon_home(tmp_path: Path) -> Iterator[DaemonHome]:
    home = DaemonHome(tmp_path)
    try:
        yield home
    finally:
        home.close()


def _rebuild_config() -> dict[str, Any]:
    return {"ops": {"rebuild_account_projections": {"config": {
        "reason": "reliability: a killed run must be retried", "all": True, "dry_run": False}}}}


def test_the_daemon_relaunches_a_killed_rebuild_run_and_the_retry_finishes_it(
        servers: Any, database_url: str, figures: Any, daemon_home: DaemonHome) -> None:
    damaged = damaged_history(servers.bootstrap_servers, database_url, seed=43, accounts=200)
    twin = twin_of(damaged, servers.database_url)
    rebuild_all_accounts(twin)
    daemon_home.start({
        "BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_TOPIC_PARTITIONS": "3",
        "BILLING_DATABASE_URL": damaged.database_url,
        "BILLING_TOPIC_PREFIX": damaged.event_store.topics.accounts.removesuffix("account-events")})
    blocker = block_row(damaged, next(i for i in sorted(damaged.corrupted)))
    figures.injected(FAULT)
    try:
        daemon_home.launch(REBUILD_ACCOUNTS_JOB, _rebuild_config())
        with damaged.engine.connect() as probe:
            def blocked() -> bool:
                daemon_home.check_alive()
                return advisory_locks(probe) == 1 and lock_waiters(probe) >= 1
            wait_for(blocked, 180, "the rebuild run to start and block on the held row")
            [first] = daemon_home.runs(REBUILD_ACCOUNTS_JOB)
            pid = daemon_home.worker_pid(first.run_id)
            assert pid is not None, daemon_home.messages(first.run_id)
            os.kill(pid, signal.SIGKILL)
            blocker.rollback()
            wait_for(lambda: advisory_locks(probe) == 0, 30, "the advisory lock to go with the connection")
    finally:
        blocker.close()

    def retried() -> bool:
        daemon_home.check_alive()
        runs = {r.run_id: r for r in daemon_home.runs(REBUILD_ACCOUNTS_JOB)}
        retries = [r for r in runs.values() if r.tags.get("dagster/parent_run_id") == first.run_id]
        return bool(retries) and retries[0].is_finished
    wait_for(retried, 240, "the daemon to relaunch the killed run and the retry to finish")

    killed = daemon_home.instance.get_run_by_id(first.run_id)
    assert killed is not None and killed.status == dg.DagsterRunStatus.FAILURE
    assert any("terminated by signal 9" in m for m in daemon_home.messages(first.run_id))
    [retry] = [r for r in daemon_home.runs(REBUILD_ACCOUNTS_JOB) if r.run_id != first.run_id]
    assert retry.status == dg.DagsterRunStatus.SUCCESS, daemon_home.messages(retry.run_id)[-20:]
    assert retry.tags.get("dagster/retry_number") == "1"
    assert dump_projections(damaged.engine) == dump_projections(twin.engine)
    _assert_alert_says_how_the_worker_ended(daemon_home.instance, killed)
    figures.rows_checked_after_races += len(twin.projections.read_accounts())
    figures.survived(FAULT)


def _assert_alert_says_how_the_worker_ended(instance: dg.DagsterInstance, killed: dg.DagsterRun) -> None:
    """The failure sensor on the real failed run: Slack hears of the signal, not "marked as failed"."""
    failure = next(e.dagster_event for e in instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
                   if e.dagster_event is not None)
    slack = SlackStandin().start()
    try:
        resource = SlackResource(bot_token="xoxb-retry", channel="#alerts", api_url=slack.url, ui_base_url="http://ui")
        with dg.build_run_status_sensor_context(sensor_name="s", dagster_event=failure, dagster_instance=instance,
                                                dagster_run=killed, resources={"slack": resource}) as context:
            run_failure_slack_sensor(context.for_run_failure())
        [alert] = slack.messages
    finally:
        slack.stop()
    assert "terminated by signal 9 (SIGKILL)" in alert["text"] and killed.run_id in alert["text"]
