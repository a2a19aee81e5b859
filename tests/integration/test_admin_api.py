"""The admin API over real HTTP: uvicorn on a free port, the embedded PostgreSQL and broker, one real
dagster-webserver for the rebuilds, and the OpenAPI schema fuzzed with schemathesis.

All tests of this module share one small history (support.builders.stuck_transfer_history, with the faults of
support.admin_api_history) and one set of servers; the tests that read run before the rebuild that repairs acc-c.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from support.admin_api_history import project_with_faults
from support.admin_api_servers import (
    Answer,
    call,
    create_database,
    dagster_webserver,
    free_port,
    serve_in_thread,
)
from support.builders import EventFactory, stuck_transfer_history
from support.dagster_servers import DagsterProcess, wait_for_webserver, webserver_command, write_workspace

from billing_api.app import create_app
from billing_api.audit import ApiAuditStore
from billing_api.queries import Reads
from billing_api.settings import ApiSettings
from billing_domain.bootstrap import Services, open_services
from billing_domain.config import Settings, Topics

READ_TOKEN = f"read-{uuid.uuid4().hex}"
WRITE_TOKEN = f"write-{uuid.uuid4().hex}"
ADMIN = "/api/v1/admin"
ORIGINAL_ENDPOINTS = {
    ("get", "/accounts/{account_id}/reconcile"), ("get", "/accounts/reconcile-all"),
    ("get", "/accounts/accounting-equation"), ("get", "/transactions/{transaction_id}/reconcile"),
    ("get", "/transactions/reconcile-all"), ("get", "/transactions/stuck"),
    ("post", "/accounts/{account_id}/rebuild"), ("post", "/accounts/rebuild-all"),
    ("post", "/transactions/{transaction_id}/rebuild"), ("post", "/transactions/rebuild-all"),
}


CAPTURED_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "billing_api")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass(frozen=True)
class World:
    api: str
    dagster: str
    services: Services
    logs: _Capture
    webserver_log: Any
    env: dict[str, str]

    def get(self, path: str, token: str | None = READ_TOKEN) -> Answer:
        return call(self.api, "GET", f"{ADMIN}{path}", token=token)

    def post(self, path: str, body: Any, token: str | None = WRITE_TOKEN) -> Answer:
        return call(self.api, "POST", f"{ADMIN}{path}", token=token, body=body)


@pytest.fixture(scope="module")
def world(servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    database_url = create_database(servers.database_url)
    topics = Topics.with_prefix(f"t{uuid.uuid4().hex[:10]}.")
    services = open_services(Settings(kafka_bootstrap_servers=servers.bootstrap_servers, database_url=database_url,
                                      topics=topics, topic_partitions=3))
    # Stuck is judged on the server's clock: the history ends now, so tx-2 has been pending for 26 minutes.
    events = stuck_transfer_history(EventFactory(datetime.now(UTC) - timedelta(minutes=30)))
    services.event_store.append(events)
    project_with_faults(events, services.projections)
    workdir = tmp_path_factory.mktemp("admin_api")
    env = {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
           "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3"}
    capture = _Capture()
    loggers = [logging.getLogger(n) for n in CAPTURED_LOGGERS]
    try:
        with dagster_webserver(workdir, env) as dagster_url:
            settings = ApiSettings(read_token=READ_TOKEN, write_token=WRITE_TOKEN, dagster_ui_url=dagster_url,
                                   dagster_graphql_url=f"{dagster_url}/graphql")
            with serve_in_thread(create_app(settings, services)) as api:
                for logger in loggers:
                    logger.addHandler(capture)
                yield World(api, dagster_url, services, capture, workdir / "webserver.log", env)
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
        services.close()


# Runs are queued and, with no daemon, never dequeued: a launch answers 202 with a real run id and nothing runs.
QUEUED_RUNS_DAGSTER_YAML = ("telemetry:\n  enabled: false\nrun_coordinator:\n"
                            "  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n")


@contextmanager
def _queued_runs_webserver(workdir: Path, env: dict[str, str]) -> Iterator[str]:
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(QUEUED_RUNS_DAGSTER_YAML)
    port = free_port()
    webserver = DagsterProcess(webserver_command(port, write_workspace(workdir / "workspace.yaml")),
                               env={**os.environ, **env, "DAGSTER_HOME": str(home)}, log=workdir / "webserver.log",
                               cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_webserver(url, [webserver], time.monotonic() + 90)
        yield url
    finally:
        webserver.stop()


@pytest.fixture(scope="module")
def queued(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API on the world's services, launching into a Dagster that queues runs and never starts them."""
    with _queued_runs_webserver(tmp_path_factory.mktemp("queued"), world.env) as dagster_url:
        settings = ApiSettings(read_token=READ_TOKEN, write_token=WRITE_TOKEN, dagster_ui_url=dagster_url,
                               dagster_graphql_url=f"{dagster_url}/graphql")
        with serve_in_thread(create_app(settings, world.services)) as api:
            # Starting uvicorn applies its logging config again, which drops the world's capture: put it back.
            for name in CAPTURED_LOGGERS:
                if world.logs not in logging.getLogger(name).handlers:
                    logging.getLogger(name).addHandler(world.logs)
            yield api


def _kinds(answer: Answer, key: str = "issues") -> set[str]:
    return {f["kind"] for f in answer.body[key]}


# --- docs and auth ----------------------------------------------------------------------------------
def test_swagger_ui_and_schema_list_every_original_endpoint(world: World) -> None:
    docs = call(world.api, "GET", "/api-docs")
    assert docs.status == 200 and "swagger-ui" in docs.body.lower()
    schema = call(world.api, "GET", "/api-docs/openapi.json").body
    served = {(method, path.removeprefix(ADMIN)) for path, ops in schema["paths"].items() for method in ops}
    assert served >= ORIGINAL_ENDPOINTS
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_every_call_needs_the_right_token(world: World) -> None:
    missing = world.get("/accounts/acc-b/reconcile", token=None)
    assert missing.status == 401 and missing.body["error"] == "unauthorized"
    assert missing.headers.get("www-authenticate", missing.headers.get("WWW-Authenticate")) == "Bearer"
    assert world.get("/accounts/acc-b/reconcile", token=READ_TOKEN + "x").status == 401
    assert world.get("/accounts/acc-b/reconcile", token=WRITE_TOKEN).status == 200  # the write token also reads
    refused = world.post("/accounts/acc-b/rebuild", {"reason": "try"}, token=READ_TOKEN)
    assert refused.status == 403 and "write token" in refused.body["message"]
    assert world.post("/accounts/acc-b/rebuild", {"reason": "try"}, token=None).status == 401
    # The token is checked before the body is read: a bad body tells a caller without the token nothing.
    garbage = call(world.api, "POST", f"{ADMIN}/accounts/rebuild-all", token=READ_TOKEN, raw_body=b"\xff\xfe")
    assert garbage.status == 403


# --- reads ------------------------------------------------------------------------------------------
def test_reconcile_one_account_names_its_issues(world: World) -> None:
    corrupted = world.get("/accounts/acc-a/reconcile")
    assert corrupted.status == 200
    assert corrupted.body["match"] is False and _kinds(corrupted) == {"balance_mismatch"}
    issue = corrupted.body["issues"][0]
    assert issue["expected"]["balance_minor"] + 7 == issue["actual"]["balance_minor"]
    healthy = world.get("/accounts/acc-b/reconcile")
    assert healthy.body["match"] is True and healthy.body["issues"] == []
    unknown = world.get("/accounts/no-such-account/reconcile")
    assert unknown.status == 404 and "no-such-account" in unknown.body["message"]


def test_reconcile_one_transaction(world: World) -> None:
    completed = world.get("/transactions/tx-1/reconcile")
    assert completed.status == 200 and completed.body["match"] is True
    unknown = world.get("/transactions/tx-404/reconcile")
    assert unknown.status == 404 and unknown.body["error"] == "not_found"


def test_reconcile_all_counts_matches_and_mismatches(world: World) -> None:
    accounts = world.get("/accounts/reconcile-all")
    assert accounts.status == 200, accounts.body
    assert (accounts.body["total"], accounts.body["matches"], accounts.body["mismatches"]) == (3, 1, 2)
    assert {"balance_mismatch", "missing_projection", "accounting_equation"} <= _kinds(accounts, "findings")
    transactions = world.get("/transactions/reconcile-all")
    assert (transactions.body["total"], transactions.body["mismatches"]) == (2, 1)
    assert _kinds(transactions, "findings") == {"stuck"}
    runs = world.services.recon_store.findings(accounts.body["run_id"])
    assert {f.kind.value for f in runs} == _kinds(accounts, "findings")  # stored in billing_recon too


def test_stuck_transactions_and_a_bad_threshold(world: World) -> None:
    stuck = world.get("/transactions/stuck?minutes=5")
    assert stuck.status == 200 and stuck.body["count"] == 1
    assert stuck.body["transactions"][0]["entity_id"] == "tx-2"
    assert world.get("/transactions/stuck?minutes=60").body["count"] == 0
    for bad in ("0", "-1", "abc", "1e9", "nan"):
        answer = world.get(f"/transactions/stuck?minutes={bad}")
        assert answer.status == 422 and answer.body["field"] == "query.minutes", answer.body
    misspelt = world.get("/transactions/stuck?minute=10")
    assert misspelt.status == 422 and misspelt.body["field"] == "query.minute"
    assert "allowed: minutes" in misspelt.body["message"]


def test_stuck_without_minutes_follows_the_servers_setting(world: World) -> None:
    """No `minutes`: the threshold is BILLING_STUCK_AFTER_MINUTES (tx-2 has been pending for 26 minutes)."""
    by_default = world.get("/transactions/stuck")
    assert by_default.status == 200 and by_default.body["threshold_minutes"] == 5 and by_default.body["count"] == 1
    patient = replace(world.services, settings=replace(world.services.settings, stuck_after_minutes=60.0))
    answer = Reads(patient).stuck()
    assert answer.threshold_minutes == 60 and answer.count == 0


def test_accounting_equation_breaks_on_the_corrupted_balance(world: World) -> None:
    equation = world.get("/accounts/accounting-equation")
    assert equation.status == 200 and equation.body["holds"] is False
    broken = {i["identity"] for i in equation.body["identities"] if not i["holds"]}
    assert broken == {"balances_match_events"}


# --- rebuilds ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "field", "says"), [
    ({}, "body.reason", "Field required"),
    ({"reason": ""}, "body.reason", "at least 1 character"),
    ({"reason": "   "}, "body.reason", "say why you rebuild"),
    ({"reason": "fix", "actor": " "}, "body.actor", "name who asks"),
    ({"reason": "fix", "dry_run": "perhaps"}, "body.dry_run", "boolean"),
    ({"reason": "fix", "ids": ["acc-a"]}, "body.ids", "Extra inputs"),
])
def test_rebuild_input_is_refused_with_the_field_named(world: World, body: dict[str, Any], field: str,
                                                       says: str) -> None:
    answer = world.post("/accounts/acc-a/rebuild", body)
    assert answer.status == 422 and answer.body["field"] == field and says in answer.body["message"], answer.body


def test_rebuild_of_unknown_id_or_broken_json(world: World) -> None:
    unknown = world.post("/transactions/tx-404/rebuild", {"reason": "fix"})
    assert unknown.status == 404 and "tx-404" in unknown.body["message"]
    for raw in (b"{not json", b"\xff\xfe", b""):
        broken = call(world.api, "POST", f"{ADMIN}/accounts/rebuild-all", token=WRITE_TOKEN, raw_body=raw)
        assert broken.status == 422 and broken.body["error"] == "validation_error", (raw, broken.body)


def _wait_for_run(world: World, run_id: str) -> str:
    deadline = time.monotonic() + 150
    status = ""
    while time.monotonic() < deadline:
        status = world.get(f"/runs/{run_id}").body["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    return status


@pytest.mark.timeout(300)
def test_a_dry_runs_before_and_after_is_in_its_run_status_once_it_ended(world: World) -> None:
    """The operator sees what a dry run would change through the API alone, not only in the Dagster UI."""
    before = world.get("/accounts/acc-a/reconcile").body["issues"]
    launched = world.post("/accounts/acc-a/rebuild", {"reason": "what would change", "actor": "alice"})
    assert launched.status == 202 and launched.body["dry_run"] is True, launched.body
    run_id = launched.body["run_id"]
    assert _wait_for_run(world, run_id) == "SUCCESS"
    answer = world.get(f"/runs/{run_id}")
    assert answer.status == 200 and answer.body["run_url"] == f"{world.dagster}/runs/{run_id}"
    rebuild = answer.body["rebuild"]
    assert rebuild is not None, answer.body
    assert (rebuild["operation"], rebuild["entity_type"], rebuild["dry_run"], rebuild["outcome"]) == (
        "rebuild_accounts", "account", True, "dry_run")
    assert rebuild["summary"] == "1 to update" and rebuild["counts"] == {"update": 1} and rebuild["written"] == 0
    [change] = rebuild["changes"]
    assert (change["entity_id"], change["action"], change["outcome"]) == ("acc-a", "update", "would be updated")
    assert change["before"]["balance_minor"] == change["after"]["balance_minor"] + 7  # the fault, and its repair
    assert (rebuild["changes_total"], rebuild["changes_shown"], rebuild["refused"], rebuild["kept"]) == (1, 1, {}, {})
    audit = world.services.recon_store.audit_record(rebuild["audit_id"])
    assert audit is not None and audit["run_id"] == run_id  # read back from the run's own audit record
    assert world.get("/accounts/acc-a/reconcile").body["issues"] == before  # a dry run wrote nothing


@pytest.mark.timeout(300)
def test_rebuild_launches_the_dagster_job_and_repairs_the_projection(world: World) -> None:
    launched = world.post("/accounts/acc-c/rebuild", {"reason": "restore the deleted row", "dry_run": False,
                                                      "actor": "alice"})
    assert launched.status == 202, launched.body
    run_id = launched.body["run_id"]
    assert launched.body["job"] == "rebuild_accounts"
    assert launched.body["run_url"] == f"{world.dagster}/runs/{run_id}"
    assert _wait_for_run(world, run_id) == "SUCCESS"
    assert world.get("/accounts/acc-c/reconcile").body["match"] is True
    audit = next(r for r in world.services.recon_store.audit_operations() if r["run_id"] == run_id)
    assert (audit["actor"], audit["reason"], audit["outcome"], audit["dry_run"]) == (
        "BILLING_API_WRITE_TOKEN", "restore the deleted row", "applied", False)  # the token that asked
    assert audit["operator_auth"] == "api_token" and audit["details"]["operator"]["declared"] == "alice"
    with world.services.recon_store.engine.connect() as conn:  # the API's own trail names the token too
        calls = conn.exec_driver_sql("SELECT token_name, db_role FROM billing_recon.api_audit "
                                     "WHERE dagster_run_id = %(r)s", {"r": run_id}).all()
    assert [name for name, _ in calls] == ["BILLING_API_WRITE_TOKEN"] and calls[0][1]

    applied = world.get(f"/runs/{run_id}").body["rebuild"]  # a rebuild that wrote: its plan and its outcome
    assert (applied["outcome"], applied["dry_run"], applied["written"], applied["completion_id"]) == (
        "applied", False, 1, audit["completion_id"])
    assert [(c["entity_id"], c["action"], c["outcome"], c["before"]) for c in applied["changes"]] == [
        ("acc-c", "insert", "fixed", None)]

    dry = world.post("/transactions/rebuild-all", {"reason": "check before the release"})
    assert dry.status == 202 and dry.body["dry_run"] is True and dry.body["all"] is True
    assert _wait_for_run(world, dry.body["run_id"]) == "SUCCESS"
    assert world.get(f"/runs/{dry.body['run_id']}").body["rebuild"]["changes"] == []  # nothing would change
    assert world.get("/runs/00000000-0000-0000-0000-000000000000").status == 404


def test_an_unreachable_dagster_is_a_503_that_says_where(world: World) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = ApiSettings(read_token=READ_TOKEN, write_token=WRITE_TOKEN, dagster_ui_url=nowhere,
                           dagster_graphql_url=f"{nowhere}/graphql", dagster_timeout_s=5)
    with serve_in_thread(create_app(settings, world.services)) as api:
        answer = call(api, "POST", f"{ADMIN}/accounts/acc-b/rebuild", token=WRITE_TOKEN, body={"reason": "try"})
    assert answer.status == 503 and answer.body["error"] == "dagster_unavailable"
    assert nowhere in answer.body["message"]


def test_without_given_services_the_app_opens_them_from_the_environment(world: World,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    settings = ApiSettings(read_token=READ_TOKEN, write_token=WRITE_TOKEN)
    with serve_in_thread(create_app(settings)) as api:
        answer = call(api, "GET", f"{ADMIN}/accounts/acc-b/reconcile", token=READ_TOKEN)
    assert answer.status == 200 and answer.body["match"] is True


# --- audit ------------------------------------------------------------------------------------------
def test_every_call_is_audited_and_no_token_is_written_anywhere(world: World, queued: str) -> None:
    # This test's own calls, each answered differently, so it needs no other test to have run first.
    reason = f"audit check {uuid.uuid4().hex[:8]}"
    assert call(queued, "GET", f"{ADMIN}/accounts/acc-b/reconcile").status == 401
    assert call(queued, "GET", f"{ADMIN}/accounts/acc-b/reconcile", token=READ_TOKEN + "x").status == 401
    assert call(queued, "POST", f"{ADMIN}/accounts/acc-b/rebuild", token=READ_TOKEN, body={"reason": "r"}).status == 403
    assert call(queued, "GET", f"{ADMIN}/transactions/stuck?minutes=abc", token=READ_TOKEN).status == 422
    launched = call(queued, "POST", f"{ADMIN}/accounts/acc-b/rebuild", token=WRITE_TOKEN,
                    body={"reason": reason, "actor": "alice"})
    assert launched.status == 202, launched.body
    rows = ApiAuditStore(world.services.recon_store.engine).recent(1_000)
    seen = {(r["role"], r["method"], r["endpoint"], r["status"]) for r in rows}
    assert ("anonymous", "GET", f"{ADMIN}/accounts/{{account_id}}/reconcile", 401) in seen
    assert ("invalid", "GET", f"{ADMIN}/accounts/{{account_id}}/reconcile", 401) in seen
    assert ("read", "POST", f"{ADMIN}/accounts/{{account_id}}/rebuild", 403) in seen
    assert ("read", "GET", f"{ADMIN}/transactions/stuck", 422) in seen
    [launch] = [r for r in rows if r["status"] == 202 and r["params"].get("body", {}).get("reason") == reason]
    assert launch["role"] == "write" and launch["dagster_run_id"] == launched.body["run_id"]
    assert launch["params"]["path"] == {"account_id": "acc-b"}
    assert launch["params"]["body"] == {"reason": reason, "dry_run": True, "actor": "alice"}  # a dry run by default
    assert all(r["recorded_at"] is not None and r["duration_ms"] >= 0 for r in rows)
    everything = json.dumps(rows, default=str) + "\n".join(world.logs.lines)
    everything += world.webserver_log.read_text(errors="replace")
    assert world.logs.lines, "the server logged nothing: the capture is not wired"
    assert READ_TOKEN not in everything and WRITE_TOKEN not in everything


# --- fuzzing ----------------------------------------------------------------------------------------
FUZZ_EXAMPLES = 6  # per operation and mode: 11 operations x 2 modes stay well under a minute


@dataclass
class Fuzzing:
    """One fuzz: where, with which token, every answer, and every failed check (collected, none shrunk)."""

    base_url: str
    token: str
    excluded_checks: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    answers: list[tuple[str, int, Any]] = field(default_factory=list)


def _force_dry_run(body: Any) -> None:
    """A write fuzz never writes: any `dry_run` a rebuild would accept becomes true. A value it would refuse is
    kept (the case stays the invalid input it was drawn as); pydantic's own coercion decides which is which, so
    a 0 or "off" that would mean a real rebuild is caught too."""
    if not isinstance(body, dict):
        return
    try:
        TypeAdapter(bool).validate_python(body.get("dry_run", True))
    except ValidationError:
        return
    body["dry_run"] = True


def _answer_body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _fuzz(operation: Any, mode: Any, fuzzing: Fuzzing) -> None:
    """Up to FUZZ_EXAMPLES generated requests to one operation."""
    from hypothesis import HealthCheck, Phase, given, settings

    label = f"{operation.label} [{mode.value}]"

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def fuzz(case: Any) -> None:
        _force_dry_run(case.body)
        try:
            response = case.call_and_validate(base_url=fuzzing.base_url, excluded_checks=fuzzing.excluded_checks,
                                              headers={"Authorization": f"Bearer {fuzzing.token}"})
        except (Exception, BaseExceptionGroup) as exc:  # collect them all (a FailureGroup too), then fail once
            fuzzing.failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:800]}")
            return
        fuzzing.answers.append((label, response.status_code, _answer_body(response)))

    fuzz()


def _fuzz_all(api: str, token: str, methods: set[str], excluded_checks: list[Any] | None = None) -> Fuzzing:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{api}/api-docs/openapi.json")
    fuzzing = Fuzzing(api, token, excluded_checks or [])
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.lower() in methods:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, fuzzing)
    print(f"schemathesis: {len(fuzzing.answers) + len(fuzzing.failures)} calls in {time.monotonic() - started:.1f}s")
    return fuzzing


def _assert_answers_are_2xx_or_4xx_in_the_error_shape(fuzzing: Fuzzing) -> None:
    assert not fuzzing.failures, "\n\n".join(fuzzing.failures[:15])
    for label, status, body in fuzzing.answers:
        assert status < 500, (label, status, body)
        if status >= 400:  # every refusal in the API's one error shape
            assert isinstance(body, dict) and isinstance(body.get("error"), str), (label, status, body)
            assert isinstance(body.get("message"), str) and body["message"], (label, status, body)


@pytest.mark.timeout(120)
def test_openapi_schema_fuzzed_with_schemathesis_has_no_server_errors(world: World) -> None:
    fuzzing = _fuzz_all(world.api, READ_TOKEN, {"get", "post"})
    _assert_answers_are_2xx_or_4xx_in_the_error_shape(fuzzing)
    assert len(fuzzing.answers) >= 40  # a bounded fuzz; its time is printed, not asserted (no timed tests)
    paths = call(world.api, "GET", "/api-docs/openapi.json").body["paths"]
    rows = ApiAuditStore(world.services.recon_store.engine).recent(2_000)
    assert {r["endpoint"] for r in rows} <= set(paths) | {"/api-docs/openapi.json", "/api-docs"}
    assert not [r for r in rows if r["status"] == 500]


def _projections(world: World) -> tuple[Any, Any]:
    return world.services.projections.read_accounts(), world.services.projections.read_transactions()


def _real_rebuild_audits(world: World) -> int:
    return sum(1 for r in world.services.recon_store.audit_records() if not r["dry_run"])


@pytest.mark.timeout(180)
def test_the_write_endpoints_fuzzed_with_the_write_token_check_their_input_and_write_nothing(
        world: World, queued: str) -> None:
    projections = _projections(world)
    real_rebuilds = _real_rebuild_audits(world)
    audits = ApiAuditStore(world.services.recon_store.engine)
    first_audit_id = max((r["audit_id"] for r in audits.recent(1)), default=0) + 1
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    # Not checked here: that every schema-valid request is accepted. An id the schema allows may name no entity
    # (404). A blank `reason` or `actor` is in the schema now (tests/unit/test_api_schema_bounds.py).
    fuzzing = _fuzz_all(queued, WRITE_TOKEN, {"post"}, excluded_checks=[positive_data_acceptance])
    _assert_answers_are_2xx_or_4xx_in_the_error_shape(fuzzing)
    statuses = {status for _, status, _ in fuzzing.answers}
    # The write token passes the gate (no 403): the endpoints' own input checks answered, and some input was valid.
    assert 403 not in statuses and 422 in statuses and 202 in statuses, statuses
    launched = {label.split(" [")[0] for label, status, _ in fuzzing.answers if status == 202}
    assert {"POST /api/v1/admin/accounts/rebuild-all", "POST /api/v1/admin/transactions/rebuild-all"} <= launched
    rows = [r for r in audits.recent(2_000) if r["audit_id"] >= first_audit_id]  # this fuzz's calls alone
    accepted = [r for r in rows if r["method"] == "POST" and r["status"] == 202 and r["role"] == "write"]
    assert accepted and all(r["params"]["body"]["dry_run"] is True for r in accepted)
    assert _projections(world) == projections  # nothing was written
    assert _real_rebuild_audits(world) == real_rebuilds
