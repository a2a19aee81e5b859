"""Launch Dagster jobs and read their status through the webserver's GraphQL API (plain HTTP, no Dagster import)."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from billing_api.errors import ApiError

log = logging.getLogger(__name__)

REPOSITORIES = """
query Repositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on PythonError { message }
  }
}"""
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
    ... on Error { message }
  }
}"""
STATUS = """
query Status($id: ID!) {
  runOrError(runId: $id) {
    __typename
    ... on Run { runId status jobName startTime endTime }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}"""


@dataclass(frozen=True, slots=True)
class JobHandle:
    location: str
    repository: str
    job: str


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    status: str
    job: str | None = None


class DagsterClient:
    """A small GraphQL client: finds which code location holds a job, launches it, reads a run's status."""

    def __init__(self, graphql_url: str, *, location: str | None = None, timeout_s: float = 30.0) -> None:
        self.graphql_url = graphql_url
        self.location = location
        self.timeout_s = timeout_s
        self._handles: dict[str, JobHandle] = {}
        self._lock = threading.Lock()

    def launch(self, job: str, run_config: dict[str, Any], tags: dict[str, str]) -> RunInfo:
        handle = self._handle(job)
        params = {"selector": {"repositoryLocationName": handle.location, "repositoryName": handle.repository,
                               "jobName": handle.job},
                  "runConfigData": run_config,
                  "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in sorted(tags.items())]}}
        result = self._query(LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            messages = [e["message"] for e in result.get("errors", [])] or [result.get("message", "")]
            raise ApiError(502, "dagster_error", f"Dagster refused to launch {job} ({result['__typename']}): "
                                                 f"{'; '.join(m for m in messages if m)[:1000]}")
        run = result["run"]
        return RunInfo(run["runId"], run["status"], job)

    def run(self, run_id: str) -> RunInfo | None:
        result = self._query(STATUS, {"id": run_id})["runOrError"]
        if result["__typename"] == "RunNotFoundError":
            return None
        if result["__typename"] != "Run":
            raise ApiError(502, "dagster_error", f"Dagster could not read run {run_id}: {result.get('message')}")
        return RunInfo(result["runId"], result["status"], result.get("jobName"))

    def _handle(self, job: str) -> JobHandle:
        with self._lock:
            if job in self._handles:
                return self._handles[job]
        found = self._query(REPOSITORIES, {})["repositoriesOrError"]
        if found["__typename"] != "RepositoryConnection":
            raise ApiError(502, "dagster_error", f"Dagster could not list its code: {found.get('message')}")
        for repo in found["nodes"]:
            location = repo["location"]["name"]
            if self.location and location != self.location:
                continue
            if any(j["name"] == job for j in repo["jobs"]):
                handle = JobHandle(location, repo["name"], job)
                with self._lock:
                    self._handles[job] = handle
                return handle
        where = f"code location {self.location!r}" if self.location else "any code location"
        raise ApiError(502, "dagster_error", f"Dagster has no job {job!r} in {where}; check its workspace")

    def _query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.graphql_url, method="POST",
                                         data=json.dumps({"query": query, "variables": variables}).encode(),
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(502, "dagster_error", f"Dagster GraphQL answered HTTP {exc.code} at "
                                                 f"{self.graphql_url}") from exc
        except (OSError, ValueError) as exc:
            log.warning("Dagster GraphQL unreachable at %s: %s", self.graphql_url, exc)
            raise ApiError(503, "dagster_unavailable", f"the Dagster webserver is unreachable at "
                                                       f"{self.graphql_url}: {exc}") from exc
        if body.get("errors"):
            raise ApiError(502, "dagster_error", "Dagster GraphQL error: "
                           + "; ".join(str(e.get("message")) for e in body["errors"])[:1000])
        data: dict[str, Any] = body["data"]
        return data
