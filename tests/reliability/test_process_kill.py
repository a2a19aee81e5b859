"""Faults 3 and 4: the process running a rebuild is SIGKILLed; two rebuilds of the same entities at once (two
threads blocked in the write, and two real processes with the first stopped before, after or past its write).

To kill the rebuild at a known point, the test holds a row lock on one account in the middle of the id
range: the rebuild commits the batches before it, then blocks inside the batch that holds the row,
with the advisory lock held. That is where SIGKILL lands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from paused_process import finish, start_cli
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

from billing_domain.adapters.postgres.locks import rebuild_lock
from billing_domain.core.exceptions import ConcurrentOperationError
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource

ROOT = Path(__file__).resolve().parents[2]
BATCH = 30
# `billing-recon` itself, with smaller batches so a few hundred accounts make many transactions.
CLI = ("import billing_domain.services.rebuild as r; r.BATCH_SIZE = int(__import__('os').environ['REL_BATCH']); "
       "from billing_cli.app import app; app(prog_name='billing-recon')")


def test_a_killed_rebuild_process_releases_its_lock_and_a_retried_run_completes(
        servers: Any, database_url: str, figures: Any) -> None:
    damaged = damaged_history(servers.bootstrap_servers, database_url, seed=31, accounts=300)
    twin = twin_of(damaged, servers.database_url)
    rebuild_all_accounts(twin)
    expected, before = twin.projections.read_accounts(), damaged.projections.read_accounts()
    to_write = sorted(damaged.deleted + damaged.corrupted)
    blocker_id = next(i for i in to_write[len(to_write) // 2:] if i in damaged.corrupted)

    blocker = block_row(damaged, blocker_id)
    env = {**os.environ, "BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers,
           "BILLING_DATABASE_URL": damaged.database_url, "REL_BATCH": str(BATCH),
           "BILLING_TOPIC_PREFIX": damaged.event_store.topics.accounts.removesuffix("account-events"),
           "BILLING_TOPIC_PARTITIONS": "3"}
    process = subprocess.Popen([sys.executable, "-c", CLI, "rebuild", "accounts", "--all", "--reason", "killed",
                                "--actor", "reliability"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    figures.injected("rebuild process SIGKILLed holding the lock")
    try:
        with damaged.engine.connect() as probe:
            def blocked() -> bool:
                assert process.poll() is None, process.communicate()[1].decode()[-2000:]
                return advisory_locks(probe) == 1 and lock_waiters(probe) >= 1
            wait_for(blocked, 60, "the rebuild to block")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            assert process.returncode == -signal.SIGKILL
            blocker.rollback()
            wait_for(lambda: advisory_locks(probe) == 0, 15, "the advisory lock to go with the connection")
    finally:
        blocker.close()
        if process.poll() is None:
            process.kill()

    after_kill = damaged.projections.read_accounts()
    half_written = [i for i in to_write if after_kill.get(i) not in (expected[i], before.get(i))]
    assert half_written == []
    batches = [to_write[i:i + BATCH] for i in range(0, len(to_write), BATCH)]
    for batch in batches:  # each batch all-or-nothing
        assert len({after_kill.get(i) == expected[i] for i in batch}) == 1
    assert 0 < sum(after_kill.get(i) == expected[i] for i in to_write) < len(to_write), "killed mid-rebuild"

    # The retry: what a re-launched Dagster run does (dagster.yaml run_retries), on a free lock.
    resources = {
        "event_store": EventStoreResource(bootstrap_servers=servers.bootstrap_servers, partitions=3,
                                          topic_prefix=env["BILLING_TOPIC_PREFIX"]),
        "projections": ProjectionsResource(database_url=damaged.database_url),
        "slack": SlackResource(),
    }
    job = build_defs(resources).resolve_job_def("rebuild_accounts")
    retried = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), run_config={
        "ops": {"rebuild_account_projections": {"config": {"reason": "retry of the killed rebuild", "all": True,
                                                           "dry_run": False}}}})
    assert retried.success
    assert dump_projections(damaged.engine) == dump_projections(twin.engine)
    figures.rows_checked_after_races += len(expected)
    figures.survived("rebuild process SIGKILLed holding the lock")


def test_two_rebuilds_of_the_same_entities_one_refuses_and_neither_corrupts(
        servers: Any, database_url: str, figures: Any) -> None:
    damaged = damaged_history(servers.bootstrap_servers, database_url, seed=41, accounts=150)
    twin = twin_of(damaged, servers.database_url)
    rebuild_all_accounts(twin)
    to_write = sorted(damaged.deleted + damaged.corrupted)
    blocker = block_row(damaged, next(i for i in to_write if i in damaged.corrupted))
    outcome: dict[str, Any] = {}
    first = threading.Thread(target=lambda: outcome.setdefault("first", rebuild_all_accounts(damaged, "first")))
    figures.injected("concurrent rebuild of the same entities")
    first.start()
    try:
        with damaged.engine.connect() as probe:
            wait_for(lambda: advisory_locks(probe) == 1 and lock_waiters(probe) >= 1, 60, "the first rebuild to block")
        with pytest.raises(ConcurrentOperationError, match="another account rebuild is running"):
            rebuild_all_accounts(damaged, "second")
    finally:
        blocker.rollback()
        blocker.close()
        first.join(60)
    assert outcome["first"].written == len(to_write)
    assert dump_projections(damaged.engine) == dump_projections(twin.engine)
    outcomes = [r["outcome"] for r in damaged.recon.audit_operations() if not r["dry_run"]]
    assert sorted(outcomes) == ["applied", "refused"]  # the refusal is audited too
    figures.survived("concurrent rebuild of the same entities")


@pytest.mark.parametrize("step", ["rebuild.planned", "rebuild.written", "rebuild.verified"])
def test_a_second_rebuild_process_is_refused_while_the_first_plans_writes_or_verifies(
        servers: Any, database_url: str, step: str, tmp_path: Path, figures: Any) -> None:
    """Two real `billing-recon rebuild` processes: the first stopped at `step` (outside the short write, where the
    lock used to be held), the second is refused with exit 1 and says why; the first then finishes alone."""
    damaged = damaged_history(servers.bootstrap_servers, database_url, seed=43, accounts=45)
    twin = twin_of(damaged, servers.database_url)
    rebuild_all_accounts(twin)
    env = {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": damaged.database_url,
           "BILLING_TOPIC_PREFIX": damaged.event_store.topics.accounts.removesuffix("account-events"),
           "BILLING_TOPIC_PARTITIONS": "3"}
    args = ["rebuild", "accounts", "--all", "--operator", "rel", "--reason"]
    figures.injected("second rebuild process while the first holds the operation")
    first = start_cli([*args, "first"], env, tmp_path, "first", pause_at=step)
    try:
        code, _, err = finish([*args, "second"], env, tmp_path, "second")
        assert code == 1, err
        assert "refused: another account rebuild is running" in err and "wait for it to finish and retry" in err
        assert first.go_on() == 0, first.stderr()[-3000:]
    finally:
        first.close()
    assert dump_projections(damaged.engine) == dump_projections(twin.engine)
    operations = {o["reason"]: o for o in damaged.recon.audit_operations()}
    assert (operations["first"]["outcome"], operations["second"]["outcome"]) == ("applied", "refused")
    assert "another account rebuild is running" in operations["second"]["details"]["error"]
    assert operations["first"]["details"]["written"] == len(damaged.deleted) + len(damaged.corrupted)
    figures.survived("second rebuild process while the first holds the operation")


def test_a_dagster_rebuild_refused_by_the_lock_fails_saying_so_and_is_audited(
        servers: Any, database_url: str) -> None:
    damaged = damaged_history(servers.bootstrap_servers, database_url, seed=47, accounts=15)
    resources = {
        "event_store": EventStoreResource(bootstrap_servers=servers.bootstrap_servers, partitions=3,
                                          topic_prefix=damaged.event_store.topics.accounts.removesuffix(
                                              "account-events")),
        "projections": ProjectionsResource(database_url=damaged.database_url),
        "slack": SlackResource(),
    }
    job = build_defs(resources).resolve_job_def("rebuild_accounts")
    before = dump_projections(damaged.engine)
    with rebuild_lock(damaged.engine, "account"):  # another rebuild holds the operation
        refused = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, run_config={
            "ops": {"rebuild_account_projections": {"config": {"reason": "while another runs", "all": True,
                                                               "dry_run": False, "actor": "ana"}}}})
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error.message)  # type: ignore[union-attr]
    assert "Refused, nothing was written: another account rebuild is running" in message
    assert dump_projections(damaged.engine) == before
    [audit] = damaged.recon.audit_records()
    assert (audit["outcome"], audit["actor"], audit["operator_auth"]) == ("refused", "ana", "run_config")
