"""Security: least-privilege roles (billing_domain.adapters.postgres.security) and secrets that never leak.

The roles are created on a real PostgreSQL; the reconciliation role is refused a projection write,
the rebuild role may write, and neither may edit the audit. Then a daily_reconciliation runs as the
reconciliation role with a password-bearing BILLING_DATABASE_URL and a Slack token, both from the
environment (dg.EnvVar): neither appears in logs, output, the Dagster event log, errors or Slack bodies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from typing import Any

import dagster as dg
import psycopg
import psycopg.errors
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from support.slack_standin import SlackStandin

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import AuditRecord, ReconStore
from billing_domain.adapters.postgres.security import RoleSettings, create_roles, scram_sha256_verifier
from billing_domain.config import Topics
from billing_domain.core.operators import AuthMethod, Operator
from billing_domain.services.rebuild import RebuildSelection, rebuild
from billing_pipelines.definitions import build_defs
from billing_pipelines.sensors import reconciliation_findings_sensor, run_failure_slack_sensor
from billing_sandbox.simulate import SimulationConfig, simulate

ROW = ("'acc-new', 'o', 'EUR', 0, 0, 100, 'active', 1, NULL, now()")


@pytest.fixture
def roles(database_url: str, projection_store: ProjectionStore) -> RoleSettings:
    ReconStore(projection_store.engine).migrate()
    suffix = uuid.uuid4().hex[:6]
    settings = RoleSettings(f"recon-{secrets.token_hex(8)}", f"rebuild-{secrets.token_hex(8)}",
                            f"billing_reconciler_{suffix}", f"billing_rebuilder_{suffix}")
    create_roles(projection_store.engine, settings)
    create_roles(projection_store.engine, settings)  # idempotent
    return settings


def _as(database_url: str, role: str, password: str) -> str:
    url = make_url(database_url).set(drivername="postgresql", username=role, password=password)
    return url.render_as_string(hide_password=False)


def _refused(conn: psycopg.Connection[Any], statement: str, error: type[Exception], figures: Any) -> None:
    """Try `statement`; count it as refused only if the server refused it with `error`."""
    try:
        conn.execute(statement)
    except error:
        figures.bad_input(refused=True)
        return
    figures.bad_input(refused=False)
    pytest.fail(f"not refused: {statement}")


AUDIT_INSERT = ("INSERT INTO billing_recon.rebuild_audit (actor, reason, operation, dry_run, entity_type, "
                "entity_ids, outcome, db_role) VALUES ('someone-else', 'r', 'o', true, 'account', '[]', 'dry_run', "
                "'billing_rebuilder')")
API_AUDIT_INSERT = ("INSERT INTO billing_recon.api_audit (role, method, endpoint, path, status, duration_ms) "
                    "VALUES ('write', 'POST', '/x', '/x', 202, 1)")


def test_the_reconciliation_role_reads_but_cannot_write_projections_and_the_rebuild_role_can(
        database_url: str, roles: RoleSettings, figures: Any) -> None:
    denied = psycopg.errors.InsufficientPrivilege
    with psycopg.connect(_as(database_url, roles.recon_role, roles.recon_password), autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM billing.account_projection")
        for statement in (f"INSERT INTO billing.account_projection VALUES ({ROW})",
                          "UPDATE billing.account_projection SET balance_minor = 1",
                          "DELETE FROM billing.transaction_projection",
                          "CREATE TABLE billing.evil (x int)", "DROP TABLE billing.account_projection"):
            _refused(conn, statement, denied, figures)
    with psycopg.connect(_as(database_url, roles.rebuild_role, roles.rebuild_password), autocommit=True) as conn:
        conn.execute(f"INSERT INTO billing.account_projection VALUES ({ROW})")
        conn.execute("UPDATE billing.account_projection SET balance_minor = 1 WHERE account_id = 'acc-new'")
        _refused(conn, "CREATE TABLE billing.evil (x int)", denied, figures)
    owner = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(owner, autocommit=True) as conn:
        verifier = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                                (roles.recon_role,)).fetchone()[0]  # type: ignore[index]
    assert verifier.startswith("SCRAM-SHA-256$") and roles.recon_password not in verifier
    iterations, salt = verifier.split("$")[1].split(":")
    assert verifier == scram_sha256_verifier(roles.recon_password, salt=base64.b64decode(salt),
                                             iterations=int(iterations))
    # The stored key is what a SCRAM login checks: SHA256(HMAC(salted password, "Client Key")).
    salted = hashlib.pbkdf2_hmac("sha256", roles.recon_password.encode(), base64.b64decode(salt), int(iterations))
    stored = base64.b64encode(hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest())
    assert stored.decode() in verifier


def test_no_secret_reaches_logs_run_metadata_errors_or_slack(
        servers: Any, database_url: str, projection_store: ProjectionStore, roles: RoleSettings,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
        figures: Any) -> None:
    topics = Topics.with_prefix(f"sec{uuid.uuid4().hex[:6]}.")
    store = KafkaEventStore(servers.bootstrap_servers, topics, partitions=3)
    simulate(store, projection_store, SimulationConfig(seed=5, accounts=40, days=1, bulk_projections=True))
    store.close()
    token = f"xoxb-{secrets.token_hex(12)}"
    secret_values = [roles.recon_password, token]
    slack = SlackStandin().start()
    env = {"BILLING_DATABASE_URL": _as(database_url, roles.recon_role, roles.recon_password),
           "BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_TOPIC_PARTITIONS": "3",
           "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_SLACK_BOT_TOKEN": token,
           "BILLING_SLACK_CHANNEL": "#billing", "BILLING_SLACK_API_URL": slack.url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    try:
        defs, instance = build_defs(), dg.DagsterInstance.ephemeral()
        daily = defs.resolve_job_def("daily_reconciliation").execute_in_process(instance=instance)
        assert daily.success, "the reconciliation role is enough for a daily run"
        success = next(e for e in daily.all_events if e.event_type_value == "PIPELINE_SUCCESS")
        resources = dict(defs.resources or {})
        with dg.build_run_status_sensor_context(sensor_name="s", dagster_event=success, dagster_instance=instance,
                                                dagster_run=_run(instance, daily.run_id),
                                                resources=resources) as context:
            reconciliation_findings_sensor(context)

        figures.injected("rebuild attempted with the reconciliation role")
        refused = defs.resolve_job_def("rebuild_accounts").execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"ops": {"rebuild_account_projections": {"config": {"reason": "r", "all": True,
                                                                           "dry_run": False}}}})
        assert not refused.success
        step_failure = next(e for e in refused.all_events if e.is_step_failure)
        error_text = step_failure.step_failure_data.error.to_string()  # type: ignore[union-attr]
        assert "permission denied" in error_text  # the least-privilege role cannot write projections
        figures.survived("rebuild attempted with the reconciliation role")
        failure = next(e for e in refused.all_events if e.event_type_value == "PIPELINE_FAILURE")
        with dg.build_run_status_sensor_context(sensor_name="s", dagster_event=failure, dagster_instance=instance,
                                                dagster_run=_run(instance, refused.run_id),
                                                resources={"slack": resources["slack"]}) as context:
            run_failure_slack_sensor(context.for_run_failure())
    finally:
        slack.stop()

    assert len(slack.messages) == 2
    assert all(r.headers["Authorization"] == f"Bearer {token}" for r in slack.requests)  # the token is used...
    out, err = capfd.readouterr()
    places = {
        "logs": caplog.text, "stdout": out, "stderr": err, "exception": error_text,
        "slack bodies": json.dumps([r.body for r in slack.requests]),
        "event log": "\n".join(repr(entry) for run in (daily, refused) for entry in instance.all_logs(run.run_id)),
        "runs": "\n".join(repr(instance.get_run_by_id(run.run_id)) for run in (daily, refused)),
    }
    for place, text in places.items():  # ...and shown nowhere
        for secret in secret_values:
            assert secret not in text, f"a secret appears in {place}"
    assert "STEP_FAILURE" in places["event log"] and len(places["logs"]) > 1000  # real text was searched


def _run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run


def test_roles_create_command_needs_both_passwords_and_is_idempotent(
        database_url: str, projection_store: ProjectionStore, servers: Any, figures: Any) -> None:
    from typer.testing import CliRunner

    from billing_cli.app import app

    ReconStore(projection_store.engine).migrate()
    env = {"BILLING_DATABASE_URL": database_url, "BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers,
           "BILLING_RECON_ROLE_PASSWORD": "pw-a", "BILLING_REBUILD_ROLE_PASSWORD": ""}
    refused = CliRunner().invoke(app, ["roles", "create"], env=env)
    figures.bad_input(refused.exit_code == 2 and "BILLING_REBUILD_ROLE_PASSWORD" in refused.output)
    assert refused.exit_code == 2 and "BILLING_REBUILD_ROLE_PASSWORD" in refused.output
    suffix = uuid.uuid4().hex[:6]
    args = ["roles", "create", "--recon-role", f"r_{suffix}", "--rebuild-role", f"w_{suffix}"]
    for _ in range(2):
        created = CliRunner().invoke(app, args, env={**env, "BILLING_REBUILD_ROLE_PASSWORD": "pw-b"})
        assert created.exit_code == 0, created.output
        assert "pw-a" not in created.output and "pw-b" not in created.output


# --- the audit trail: rows only through its function, never edited, never emptied ---------------------------
def _owner(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _record(name: str = "ana", how: AuthMethod = "cli_option", outcome: str = "dry_run",
            completes: int | None = None) -> AuditRecord:
    return AuditRecord(operator=Operator(name, how), reason="test", operation="rebuild_accounts", dry_run=True,
                       entity_type="account", entity_ids=["acc-1"], outcome=outcome, completes=completes)


def _role_logins(database_url: str, roles: RoleSettings) -> list[tuple[str, str]]:
    return [(roles.recon_role, _as(database_url, roles.recon_role, roles.recon_password)),
            (roles.rebuild_role, _as(database_url, roles.rebuild_role, roles.rebuild_password))]


def _audit_rows(database_url: str) -> list[dict[str, Any]]:
    engine = make_engine(_owner(database_url))
    try:
        return ReconStore(engine).audit_records()
    finally:
        engine.dispose()


def test_no_role_may_insert_an_audit_row_directly_not_even_the_owner(
        database_url: str, roles: RoleSettings, figures: Any) -> None:
    denied = psycopg.errors.InsufficientPrivilege
    for _, login in _role_logins(database_url, roles):
        with psycopg.connect(login, autocommit=True) as conn:
            _refused(conn, AUDIT_INSERT, denied, figures)
            _refused(conn, API_AUDIT_INSERT, denied, figures)
            # The setting the function uses to let its own INSERT through is no key: the privilege is missing.
            conn.execute("SELECT set_config('billing_recon.audit_writer', 'append_rebuild_audit', false)")
            _refused(conn, AUDIT_INSERT, denied, figures)
    with psycopg.connect(_owner(database_url), autocommit=True) as conn:  # the owner (here a superuser) keeps
        _refused(conn, AUDIT_INSERT, denied, figures)  # INSERT for the function; the trigger refuses the rest
        _refused(conn, API_AUDIT_INSERT, denied, figures)
    assert _audit_rows(database_url) == []


def test_no_role_may_truncate_the_audit_by_privilege_and_not_even_the_owner_by_trigger(
        database_url: str, roles: RoleSettings, figures: Any) -> None:
    ReconStore(make_engine(_as(database_url, roles.rebuild_role, roles.rebuild_password))).write_audit(_record())
    with psycopg.connect(_owner(database_url), autocommit=True) as conn:
        for role in (roles.recon_role, roles.rebuild_role):
            for table in ("billing_recon.rebuild_audit", "billing_recon.api_audit"):
                granted = conn.execute(
                    "SELECT has_table_privilege(%(r)s, %(t)s, 'INSERT'), has_table_privilege(%(r)s, %(t)s, 'UPDATE'), "
                    "has_table_privilege(%(r)s, %(t)s, 'DELETE'), has_table_privilege(%(r)s, %(t)s, 'TRUNCATE'), "
                    "has_table_privilege(%(r)s, %(t)s, 'SELECT')", {"r": role, "t": table}).fetchone()
                assert granted == (False, False, False, False, True), (role, table)
            assert conn.execute("SELECT has_function_privilege(%s, 'billing_recon.append_rebuild_audit(text, text, "
                                "text, text, text, boolean, text, jsonb, jsonb, jsonb, jsonb, text, jsonb, bigint)', "
                                "'EXECUTE')", (role,)).fetchone() == (True,)
    for _, login in _role_logins(database_url, roles):
        with psycopg.connect(login, autocommit=True) as conn:
            _refused(conn, "TRUNCATE billing_recon.rebuild_audit", psycopg.errors.InsufficientPrivilege, figures)
            _refused(conn, "TRUNCATE billing_recon.api_audit", psycopg.errors.InsufficientPrivilege, figures)
    with psycopg.connect(_owner(database_url), autocommit=True) as conn:  # a superuser passes every privilege check
        _refused(conn, "TRUNCATE billing_recon.rebuild_audit", psycopg.errors.RaiseException, figures)
        _refused(conn, "TRUNCATE billing_recon.api_audit", psycopg.errors.RaiseException, figures)
    assert len(_audit_rows(database_url)) == 1


def test_audit_rows_are_never_updated_or_deleted_and_the_update_trigger_holds_for_the_owner(
        database_url: str, roles: RoleSettings, figures: Any) -> None:
    ReconStore(make_engine(_as(database_url, roles.recon_role, roles.recon_password))).write_audit(_record())
    [before] = _audit_rows(database_url)
    for _, login in _role_logins(database_url, roles):
        with psycopg.connect(login, autocommit=True) as conn:
            for statement in ("UPDATE billing_recon.rebuild_audit SET actor = 'x'",
                              "DELETE FROM billing_recon.rebuild_audit",
                              "UPDATE billing_recon.api_audit SET role = 'x'", "DELETE FROM billing_recon.api_audit"):
                _refused(conn, statement, psycopg.errors.InsufficientPrivilege, figures)
    with psycopg.connect(_owner(database_url), autocommit=True) as conn:
        for statement in ("UPDATE billing_recon.rebuild_audit SET actor = 'x', db_role = 'x'",
                          "DELETE FROM billing_recon.rebuild_audit"):
            try:
                conn.execute(statement)
            except psycopg.errors.RaiseException as exc:
                assert "append-only" in str(exc)
                figures.bad_input(refused=True)
            else:
                figures.bad_input(refused=False)
                pytest.fail(f"the trigger let through: {statement}")
    assert _audit_rows(database_url) == [before]


def test_the_function_records_the_session_role_and_the_operator_whoever_writes(
        database_url: str, roles: RoleSettings) -> None:
    for role, login in _role_logins(database_url, roles):
        engine = make_engine(login)
        ReconStore(engine).write_audit(_record(f"ana-as-{role}"))
        engine.dispose()
    with psycopg.connect(_owner(database_url)) as conn:  # even the owner cannot choose db_role
        conn.execute("SELECT set_config('billing_recon.audit_writer', 'append_rebuild_audit', true)")
        conn.execute(AUDIT_INSERT)
        owner_role = conn.execute("SELECT session_user").fetchone()[0]  # type: ignore[index]
    rows = {r["actor"]: r for r in _audit_rows(database_url)}
    for role in (roles.recon_role, roles.rebuild_role):
        row = rows[f"ana-as-{role}"]
        assert (row["db_role"], row["operator_auth"]) == (role, "cli_option")
        assert row["details"]["operator"] == {"name": f"ana-as-{role}", "authenticated_by": "cli_option",
                                              "self_declared": True, "declared": None}
    assert rows["someone-else"]["db_role"] == owner_role != "billing_rebuilder"

    engine = make_engine(_as(database_url, roles.rebuild_role, roles.rebuild_password))
    store = ReconStore(engine)
    try:
        dry_run_id = rows[f"ana-as-{roles.rebuild_role}"]["audit_id"]
        with pytest.raises(sa_exc.DBAPIError, match="is not a pending"):  # only a pending row is completed
            store.write_audit(_record(outcome="applied", completes=dry_run_id))
        with pytest.raises(sa_exc.IntegrityError):  # how the operator was known is one of the documented ways
            store.write_audit(_record(how="trust-me"))  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_a_rebuild_audit_names_operator_and_role_and_the_cut_offsets_of_the_log(
        servers: Any, database_url: str, projection_store: ProjectionStore, roles: RoleSettings) -> None:
    topics = Topics.with_prefix(f"aud{uuid.uuid4().hex[:6]}.")
    store = KafkaEventStore(servers.bootstrap_servers, topics, partitions=3)
    simulate(store, projection_store, SimulationConfig(seed=9, accounts=12, days=1, faults=False,
                                                       bulk_projections=True))
    with projection_store.engine.begin() as conn:
        gone = conn.exec_driver_sql("DELETE FROM billing.account_projection WHERE account_id = "
                                    "(SELECT min(account_id) FROM billing.account_projection) "
                                    "RETURNING account_id").scalar_one()
    ends: dict[str, int] = {}
    for batch in store.read_cut():  # the log's own ends, counted message by message
        for message in batch:
            name = f"{message.topic()}:{message.partition()}"
            ends[name] = max(ends.get(name, 0), (message.offset() or 0) + 1)
    engine = make_engine(_as(database_url, roles.rebuild_role, roles.rebuild_password))
    try:
        result = rebuild(store, ProjectionStore(engine), ReconStore(engine), entity_type="account",
                         selection=RebuildSelection(all=True), dry_run=False, reason="restore",
                         operator=Operator("BILLING_API_WRITE_TOKEN", "api_token", declared="alice"))
    finally:
        engine.dispose()
        store.close()
    assert result.outcome[gone] == "fixed"
    completion, pending = _audit_rows(database_url)[:2]
    assert (pending["outcome"], completion["outcome"], completion["completes"]) == ("pending", "applied",
                                                                                   pending["audit_id"])
    for row in (pending, completion):
        assert (row["actor"], row["operator_auth"], row["db_role"]) == ("BILLING_API_WRITE_TOKEN", "api_token",
                                                                        roles.rebuild_role)
        assert row["details"]["operator"]["declared"] == "alice"
    assert pending["after"][gone]["account_id"] == gone and pending["before"][gone] is None
    account_partitions = {f"{topics.accounts}:{p}" for p in range(3)}
    assert account_partitions <= set(pending["cut"])
    assert pending["cut"] == {name: {"start": 0, "end": ends.get(name, 0)} for name in pending["cut"]}
    assert sum(c["end"] for n, c in pending["cut"].items() if n in account_partitions) == sum(
        e for n, e in ends.items() if n in account_partitions) > 0
