"""Selections are explicit (issue 14.2): an empty id list given to a Dagster job or to the admin API is an error
that writes nothing; only a request with no selection at all means the default (what the latest report flagged).

Real servers: the embedded PostgreSQL and broker, the jobs in process, the API on a real uvicorn. The API's
Dagster is a closed port on purpose: a request that got as far as a launch would answer 503, not 422.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from support.admin_api_servers import call, serve_in_thread
from support.builders import project, stuck_transfer_history

from billing_api.app import create_app
from billing_api.settings import ApiSettings
from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.bootstrap import open_services
from billing_domain.config import Settings, Topics
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource

READ_TOKEN = f"read-{uuid.uuid4().hex}"
WRITE_TOKEN = f"write-{uuid.uuid4().hex}"
ADMIN = "/api/v1/admin"


@pytest.fixture
def world(servers: Any, topics: Topics, database_url: str, event_store: KafkaEventStore,
          projection_store: ProjectionStore) -> dict[str, Any]:
    """A history whose default selection is not empty: acc-a's balance is off, tx-2 is stuck."""
    events = stuck_transfer_history()
    event_store.append(events)
    project(events, projection_store)
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 "
                             "WHERE account_id = 'acc-a'")
    resources = {
        "event_store": EventStoreResource(bootstrap_servers=servers.bootstrap_servers,
                                          topic_prefix=topics.accounts.removesuffix("account-events"), partitions=3),
        "projections": ProjectionsResource(database_url=database_url),
        "slack": SlackResource(),
    }
    world = {"defs": build_defs(resources), "instance": dg.DagsterInstance.ephemeral(),
             "projections": projection_store, "event_store": event_store}
    assert _run(world, "daily_reconciliation", {}).success
    return world


def _run(world: dict[str, Any], job: str, run_config: dict[str, Any]) -> dg.ExecuteInProcessResult:
    return world["defs"].resolve_job_def(job).execute_in_process(instance=world["instance"], run_config=run_config,
                                                                 raise_on_error=False)


def _state(world: dict[str, Any]) -> tuple[Any, ...]:
    """What a rebuild or a recovery could write: the projections, the audit trail and the event log's size."""
    projections: ProjectionStore = world["projections"]
    events = sum(len(batch) for batch in world["event_store"].read_cut())
    return (sorted(projections.read_accounts().items()), sorted(projections.read_transactions().items()),
            ReconStore(projections.engine).audit_records(), events)


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return str(failure.step_failure_data.error.message)  # type: ignore[union-attr]


@pytest.mark.parametrize(("job", "op", "ids"), [
    ("rebuild_accounts", "rebuild_account_projections", []),
    ("rebuild_accounts", "rebuild_account_projections", [" "]),
    ("rebuild_transactions", "rebuild_transaction_projections", []),
    ("recover_stuck_sagas", "recover_stuck_sagas_op", []),
    ("recover_stuck_sagas", "recover_stuck_sagas_op", ["", " "]),
])
def test_an_empty_ids_list_fails_the_job_before_any_write(world: dict[str, Any], job: str, op: str,
                                                          ids: list[str]) -> None:
    before = _state(world)
    result = _run(world, job, {"ops": {op: {"config": {"reason": "fix", "dry_run": False, "ids": ids}}}})
    assert not result.success
    message = _failure_message(result)
    assert "Fix the run config" in message and "ids" in message, message
    assert _state(world) == before


def test_leaving_ids_out_is_still_the_default_selection(world: dict[str, Any]) -> None:
    result = _run(world, "rebuild_accounts", {"ops": {"rebuild_account_projections": {"config": {"reason": "look"}}}})
    assert result.success
    output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    assert "acc-a" in output.event_specific_data.metadata["changes"].value  # type: ignore[union-attr]


@pytest.fixture
def api(servers: Any, topics: Topics, database_url: str) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    services = open_services(Settings(kafka_bootstrap_servers=servers.bootstrap_servers, database_url=database_url,
                                      topics=topics, topic_partitions=3))
    settings = ApiSettings(read_token=READ_TOKEN, write_token=WRITE_TOKEN, dagster_ui_url=closed,
                           dagster_graphql_url=f"{closed}/graphql", dagster_timeout_s=2)
    try:
        with serve_in_thread(create_app(settings, services)) as url:
            yield url
    finally:
        services.close()


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/accounts/rebuild-all", {"reason": "fix", "ids": []}, "body.ids"),
    ("/transactions/rebuild-all", {"reason": "fix", "ids": [], "dry_run": False}, "body.ids"),
    ("/accounts/%20/rebuild", {"reason": "fix", "dry_run": False}, "body.ids"),
])
def test_the_api_refuses_an_empty_selection_before_launching(api: str, path: str, body: dict[str, Any],
                                                             field: str) -> None:
    answer = call(api, "POST", f"{ADMIN}{path}", token=WRITE_TOKEN, body=body)
    assert answer.status == 422 and answer.body["field"] == field, answer.body
