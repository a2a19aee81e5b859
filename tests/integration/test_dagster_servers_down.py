"""A Dagster run with a server down fails within seconds, saying which server and what to check (issue 18.1).

Before, the event store's resource retried creating the topics for about a minute with Kafka down, and the
failure read as a driver's traceback. Each run here is its own process with a generous timeout (30 s), the
way the daemon launches a run: an unreachable server must end it long before that.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import pytest
from support.tcp_proxy import free_port

from billing_domain.config import Topics

PASSWORD = f"pw-{secrets.token_hex(6)}"
TIMEOUT_S = 30

# Runs the daily job in process with the given resources' fields and prints each failure's messages, causes
# included (Dagster wraps a resource's error in its own), as JSON.
RUN_DAILY_JOB = """
import json, sys
import dagster as dg
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource

fields = json.loads(sys.argv[1])
resources = {"event_store": EventStoreResource(**fields["event_store"]),
             "projections": ProjectionsResource(**fields["projections"]), "slack": SlackResource()}
job = build_defs(resources).resolve_job_def("daily_reconciliation")
result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)

def messages(error):
    while error is not None:
        yield error.message
        error = error.cause

failures = [m for e in result.all_events if e.is_failure or e.is_resource_init_failure
            for m in messages(getattr(e.event_specific_data, "error", None))]
print(json.dumps({"success": result.success, "failures": failures}))
"""


def run_daily_job(event_store: dict[str, Any], projections: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", RUN_DAILY_JOB,
                           json.dumps({"event_store": event_store, "projections": projections})],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert PASSWORD not in done.stdout + done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound, then released: nothing listens there


@pytest.fixture
def event_store_fields(servers: Any, topics: Topics) -> dict[str, Any]:
    return {"bootstrap_servers": servers.bootstrap_servers, "partitions": 3,
            "topic_prefix": topics.accounts.removesuffix("account-events")}


def test_a_closed_kafka_port_fails_the_run_within_seconds_naming_the_broker(
        event_store_fields: dict[str, Any], database_url: str, closed_port: int) -> None:
    outcome = run_daily_job(event_store_fields | {"bootstrap_servers": f"127.0.0.1:{closed_port}"},
                            {"database_url": database_url})

    assert not outcome["success"]
    said = "\n".join(outcome["failures"])
    assert f"cannot reach Kafka at 127.0.0.1:{closed_port}" in said, said
    assert "BILLING_KAFKA_BOOTSTRAP_SERVERS" in said


def test_a_closed_postgres_port_fails_the_run_naming_the_server_with_the_password_masked(
        event_store_fields: dict[str, Any], closed_port: int) -> None:
    url = f"postgresql://billing:{PASSWORD}@127.0.0.1:{closed_port}/billing"
    outcome = run_daily_job(event_store_fields, {"database_url": url})

    assert not outcome["success"]
    said = "\n".join(outcome["failures"])
    assert f"cannot connect to PostgreSQL at postgresql://billing:***@127.0.0.1:{closed_port}/billing" in said, said
    assert "Connection refused" in said
