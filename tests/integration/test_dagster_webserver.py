"""A real dagster-webserver on the project's definitions: launch daily_reconciliation over GraphQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.histories import project, stuck_transfer_history
from test_dagster_jobs import inject_faults

from billing_domain.adapters.recon_store import ReconStore
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Runs launch at once (no daemon in the test): the default coordinator, not the queued one.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nrun_coordinator:\n"
                                       "  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: billing_pipelines.definitions\n"
                         "      location_name: billing\n")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers,
           "BILLING_DATABASE_URL": database_url, "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"),
           "BILLING_TOPIC_PARTITIONS": "3"}
    env.pop("BILLING_SLACK_BOT_TOKEN", None)
    log = open(tmp_path / "webserver.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p",
                                str(port), "-w", str(workspace)], env=env, stdout=log, stderr=subprocess.STDOUT,
                               cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "webserver.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


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
