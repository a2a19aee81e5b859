"""Security: least-privilege roles (billing_domain.security) and secrets that never leak.

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
from sqlalchemy.engine import make_url
from support.slack_standin import SlackStandin

from billing_domain.adapters.kafka import KafkaEventStore
from billing_domain.adapters.postgres import ProjectionStore
from billing_domain.adapters.recon_store import ReconStore
from billing_domain.config import Topics
from billing_domain.exceptions import ConfigurationError
from billing_domain.security import RoleSettings, create_roles, scram_sha256_verifier
from billing_domain.simulate import SimulationConfig, simulate
from billing_pipelines.definitions import build_defs
from billing_pipelines.sensors import reconciliation_findings_sensor, run_failure_slack_sensor

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


def test_the_reconciliation_role_reads_but_cannot_write_projections_and_the_rebuild_role_can(
        database_url: str, roles: RoleSettings, figures: Any) -> None:
    with psycopg.connect(_as(database_url, roles.recon_role, roles.recon_password), autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM billing.account_projection")
        for statement in (f"INSERT INTO billing.account_projection VALUES ({ROW})",
                          "UPDATE billing.account_projection SET balance_minor = 1",
                          "DELETE FROM billing.transaction_projection",
                          "CREATE TABLE billing.evil (x int)", "DROP TABLE billing.account_projection",
                          "UPDATE billing_recon.rebuild_audit SET actor = 'x'",
                          "DELETE FROM billing_recon.rebuild_audit"):
            figures.bad_input(refused=True)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        conn.execute("INSERT INTO billing_recon.rebuild_audit (actor, reason, operation, dry_run, entity_type, "
                     "entity_ids, outcome) VALUES ('a', 'r', 'o', true, 'account', '[]', 'dry_run')")
    with psycopg.connect(_as(database_url, roles.rebuild_role, roles.rebuild_password), autocommit=True) as conn:
        conn.execute(f"INSERT INTO billing.account_projection VALUES ({ROW})")
        conn.execute("UPDATE billing.account_projection SET balance_minor = 1 WHERE account_id = 'acc-new'")
        for statement in ("UPDATE billing_recon.rebuild_audit SET actor = 'x'", "TRUNCATE billing_recon.rebuild_audit",
                          "CREATE TABLE billing.evil (x int)"):
            figures.bad_input(refused=True)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    owner = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(owner, autocommit=True) as conn:  # even a superuser meets the trigger
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM billing_recon.rebuild_audit")
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


def test_passwords_come_from_the_environment_and_name_the_missing_variable() -> None:
    with pytest.raises(ConfigurationError, match="BILLING_REBUILD_ROLE_PASSWORD"):
        RoleSettings.from_env({"BILLING_RECON_ROLE_PASSWORD": "x"})
    settings = RoleSettings.from_env({"BILLING_RECON_ROLE_PASSWORD": "s3cret-a", "BILLING_REBUILD_ROLE_PASSWORD": "b"})
    assert "s3cret-a" not in repr(settings)


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

    from billing_domain.cli import app

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
