"""A real dagster-webserver on the project's definitions: launch daily_reconciliation over GraphQL."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.builders import project, stuck_transfer_history
from support.dagster_servers import dagster_webserver
from test_dagster_jobs import inject_faults

from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
STATUS = """query Status($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables})
                                     .encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GraphQL {exc.code}: {exc.read().decode()[:2000]}") from exc
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
def webserver(tmp_path: Path, servers: Any, topics: Topics, database_url: str) -> Iterator[str]:
    env = {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
           "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3"}
    # Runs launch at once (no daemon in the test): the default coordinator, not the queued one.
    with dagster_webserver(tmp_path, env) as url:
        yield url


@pytest.mark.timeout(180)
def test_daily_reconciliation_launched_over_graphql_succeeds(webserver: str, event_store: Any,
                                                             projection_store: Any) -> None:
    events = stuck_transfer_history()
    event_store.append(events)
    project(events, projection_store)
    inject_faults(projection_store)
    params = {"selector": {"repositoryLocationName": "billing", "repositoryName": "__repository__",
                           "jobName": "daily_reconciliation"}, "runConfigData": {}}
    launched = _graphql(webserver, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 120
    status = ""
    while time.monotonic() < deadline:
        status = _graphql(webserver, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert status == "SUCCESS"
    kinds = {f.kind.value for f in ReconStore(projection_store.engine).findings(run_id)}
    assert {"balance_mismatch", "missing_projection", "orphan_projection", "stuck"} <= kinds
