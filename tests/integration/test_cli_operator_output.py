"""What `billing-recon` prints for a person (issue 18.7, 18.8, 18.10), as an operator runs it: a real process
against the real test servers. `findings list` puts new and critical findings first, not the store's order;
the texts give amounts with their currency; no Python dict or dataclass repr reaches the output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.builders import EventFactory, project, stuck_transfer_history

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.config import Topics

CLI = "from billing_cli.app import app; app(prog_name='billing-recon')"
# A dict's or a dataclass's repr: `{'insert': 2`, `{"accounts": 200`, `StackInfo(`, `: None`.
REPR = re.compile(r"\{['\"]\w+['\"]: |\b[A-Z]\w+\(\w+=|: None\b")


def billing_recon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    return subprocess.run([sys.executable, "-c", CLI, *args], env=base | env, capture_output=True, text=True,
                          timeout=120, check=False)


def assert_words(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output and not REPR.search(output), output


@pytest.fixture
def env(servers: Any, topics: Topics, database_url: str) -> dict[str, str]:
    return {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
            "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3"}


def test_findings_list_puts_the_new_critical_findings_before_the_older_warning(
        env: dict[str, str], event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    events = stuck_transfer_history(EventFactory(datetime.now(UTC) - timedelta(hours=1)))
    event_store.append(events)
    project(events, projection_store)
    first = billing_recon(env, "reconcile", "all", "--full")  # tx-2 is stuck: a warning, first seen now
    assert first.returncode == 1, first.stdout + first.stderr
    with projection_store.engine.begin() as conn:  # then acc-a's balance goes wrong: critical, and new
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 "
                             "WHERE account_id = 'acc-a'")
    second = billing_recon(env, "reconcile", "all", "--full")
    assert second.returncode == 1, second.stdout + second.stderr

    listed = billing_recon(env, "findings", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    lines = listed.stdout.splitlines()
    rows = [(line.split()[0], line.split()[1], line.split()[2]) for line in lines[:-1]]
    assert rows[-1] == ("open", "warning", "transaction/tx-2/stuck"), listed.stdout
    assert {r[2] for r in rows[:-1]} >= {"account/acc-a/balance_mismatch"}, listed.stdout
    assert all(status == "new" and severity == "critical" for status, severity, _ in rows[:-1]), listed.stdout
    assert lines[-1] == f"{len(rows)} finding(s)"

    assert "(difference 7), in EUR minor units" in second.stdout, second.stdout  # the balance, with its currency
    assert_words(second)

    synced = billing_recon(env, "findings", "sync")
    assert synced.returncode == 0 and "already applied; " in synced.stdout and "1 open" in synced.stdout, synced.stdout
    assert_words(synced)
    planned = billing_recon(env, "recover-sagas", "--reason", "test: the stuck transfer", "--operator", "ci")
    assert "1 compensate" in planned.stdout or "1 fail" in planned.stdout, planned.stdout
    assert_words(planned)


def test_simulate_and_reconcile_print_words(env: dict[str, str], tmp_path: Path) -> None:
    simulated = billing_recon(env, "simulate", "--accounts", "12", "--days", "1", "--manifest",
                              str(tmp_path / "manifest.json"))
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    assert re.match(r"simulated 12 accounts, \d+ transactions, [\d,]+ events, \d+ fault messages;",
                    simulated.stdout), simulated.stdout
    assert_words(simulated)
    nothing_yet = billing_recon(env, "export-findings")  # no report stored yet: said so, not "run None"
    assert nothing_yet.returncode == 2 and "None" not in nothing_yet.stderr, nothing_yet.stderr
    assert "no reconciliation is stored in billing_recon yet" in nothing_yet.stderr, nothing_yet.stderr
    reconciled = billing_recon(env, "reconcile", "all")
    assert reconciled.returncode == 1, reconciled.stdout + reconciled.stderr
    assert re.search(r"cut: [\d,]+ message\(s\) on 6 partition\(s\) of 2 topic\(s\)", reconciled.stdout)
    assert_words(reconciled)


def test_stack_status_says_in_words_where_the_stack_runs_or_that_none_is_recorded(
        servers: Any, tmp_path: Path) -> None:
    none = billing_recon({"BILLING_STACK_DIR": str(tmp_path / "no-stack")}, "stack", "status")
    assert none.returncode == 1 and none.stdout.startswith("not running: no stack recorded in "), none.stdout
    assert_words(none)
    if servers.stack is None:
        pytest.skip("the servers were given (BILLING_* set): no embedded stack of this session to describe")
    running = billing_recon({"BILLING_STACK_DIR": str(servers.stack.dir)}, "stack", "status")
    assert running.returncode == 0 and running.stdout.startswith("running: "), running.stdout
    assert "StackInfo" not in running.stdout
    assert_words(running)
