"""The Dagster layer on the real embedded servers: daily_reconciliation, checks, rebuild jobs, sensors.

The history is hand-built (support.builders.stuck_transfer_history, with two faults in the account projections,
an orphan row and a stuck transfer), so every expected finding is known. Resources point at this test's database
and topics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from support.builders import EventFactory, project, stuck_transfer_history
from support.slack_standin import SlackStandin

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_domain.core.events import AccountCredited, AccountDebited, AccountOpened
from billing_pipelines.definitions import build_defs
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, SlackResource
from billing_pipelines.sensors import auto_repair_sensor, reconciliation_findings_sensor, run_failure_slack_sensor


def inject_faults(projections: ProjectionStore) -> None:
    """acc-a balance +7 (balance_mismatch, identity 1), acc-c row gone (missing), acc-zz an orphan row."""
    with projections.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 "
                             "WHERE account_id = 'acc-a'")
        conn.exec_driver_sql("DELETE FROM billing.account_projection WHERE account_id = 'acc-c'")
        conn.exec_driver_sql(
            "INSERT INTO billing.account_projection VALUES ('acc-zz', 'nobody', 'EUR', 0, 0, 100, 'active', 1, "
            "NULL, now())")


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    standin = SlackStandin().start()
    yield standin
    standin.stop()


def make_resources(bootstrap_servers: str, topics: Topics, database_url: str, slack: SlackStandin) -> dict[str, Any]:
    return {
        "event_store": EventStoreResource(bootstrap_servers=bootstrap_servers,
                                          topic_prefix=topics.accounts.removesuffix("account-events"), partitions=3),
        "projections": ProjectionsResource(database_url=database_url),
        "slack": SlackResource(bot_token="xoxb-test-token", channel="#billing-alerts", api_url=slack.url,
                               ui_base_url="http://dagster.test"),
    }


@pytest.fixture
def seeded(servers: Any, topics: Topics, database_url: str, event_store: KafkaEventStore,
           projection_store: ProjectionStore, slack: SlackStandin) -> dict[str, Any]:
    events = stuck_transfer_history()
    event_store.append(events)
    project(events, projection_store)
    inject_faults(projection_store)
    resources = make_resources(servers.bootstrap_servers, topics, database_url, slack)
    return {"defs": build_defs(resources), "resources": resources, "projections": projection_store,
            "recon": ReconStore(projection_store.engine), "instance": dg.DagsterInstance.ephemeral()}


def run_job(seeded: dict[str, Any], name: str, config: dict[str, Any] | None = None,
            raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    job = seeded["defs"].resolve_job_def(name)
    return job.execute_in_process(instance=seeded["instance"], run_config=config or {},
                                  raise_on_error=raise_on_error)


def rebuild_config(entity_type: str, **config: Any) -> dict[str, Any]:
    return {"ops": {f"rebuild_{entity_type}_projections": {"config": config}}}


def keys(recon: ReconStore, run_id: str) -> set[tuple[str, str, str]]:
    return {f.key for f in recon.findings(run_id)}


FAULTS = {("account", "acc-a", "balance_mismatch"), ("account", "acc-c", "missing_projection"),
          ("account", "acc-zz", "orphan_projection"), ("transaction", "tx-2", "stuck")}


def test_daily_reconciliation_stores_findings_under_the_run_id(seeded: dict[str, Any]) -> None:
    result = run_job(seeded, "daily_reconciliation")
    assert result.success
    found = keys(seeded["recon"], result.run_id)
    assert found >= FAULTS
    assert any(k[0] == "ledger" and k[2] == "accounting_equation" for k in found)
    assert seeded["recon"].latest_run_id() == result.run_id

    materialized = {e.asset_key.to_user_string(): e.materialization.metadata  # type: ignore[union-attr]
                    for e in result.get_asset_materialization_events()}
    assert set(materialized) == {"replayed_state", "account_reconciliation_report",
                                 "transaction_reconciliation_report", "accounting_equation_report"}
    assert materialized["replayed_state"]["events_read"].value == len(stuck_transfer_history())
    accounts = materialized["account_reconciliation_report"]
    assert accounts["kind/balance_mismatch"] == dg.MetadataValue.int(1)
    assert accounts["severity/critical"].value == 2
    assert "acc-a" in accounts["worst_findings"].value
    assert materialized["transaction_reconciliation_report"]["kind/stuck"].value == 1

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["no_critical_account_findings"].passed
    assert checks["no_critical_account_findings"].severity == dg.AssetCheckSeverity.ERROR
    assert not checks["accounting_equation_holds"].passed
    assert not checks["no_stuck_transfers"].passed
    assert checks["no_stuck_transfers"].severity == dg.AssetCheckSeverity.WARN
    assert checks["no_critical_transaction_findings"].passed
    assert checks["account_projections_not_lagging"].passed


def _projection_rows(projections: ProjectionStore) -> tuple[Any, ...]:
    return (sorted(projections.read_accounts().items()), sorted(projections.read_transactions().items()))


def _applied_audits(recon: ReconStore) -> list[dict[str, Any]]:
    """Audit rows of rebuilds that wrote (anything but a dry run, a refusal or nothing to do)."""
    return [r for r in recon.audit_records() if not r["dry_run"] and r["outcome"] in ("applied", "partial")]


@pytest.mark.parametrize(("config", "message"), [
    ({"reason": "", "dry_run": False, "all": True}, "reason"),
    ({"reason": "fix", "dry_run": False, "all": True, "ids": ["acc-a"]}, "ids / all"),
    ({"reason": "fix", "dry_run": False, "ids": ["acc-nope"]}, "acc-nope"),
])
def test_a_rebuild_with_bad_config_fails_before_writing(seeded: dict[str, Any], config: dict[str, Any],
                                                        message: str) -> None:
    run_job(seeded, "daily_reconciliation")
    before = _projection_rows(seeded["projections"])
    result = run_job(seeded, "rebuild_accounts", rebuild_config("account", **config), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert message in failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert "Fix the run config" in failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert _projection_rows(seeded["projections"]) == before
    assert _applied_audits(seeded["recon"]) == []


def test_rebuild_jobs_fix_what_the_latest_report_flagged(seeded: dict[str, Any]) -> None:
    first = run_job(seeded, "daily_reconciliation")
    dry = run_job(seeded, "rebuild_accounts", rebuild_config("account", reason="check first"))
    assert dry.success and _applied_audits(seeded["recon"]) == []

    result = run_job(seeded, "rebuild_accounts", rebuild_config("account", reason="fix the test faults",
                                                                dry_run=False, actor="alice"))
    output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["written"].value == 2
    assert metadata["still_wrong_after_rebuild"].value == 0
    table = metadata["changes"].value
    assert "acc-a" in table and "balance_minor=7507" in table and "balance_minor=7500" in table
    assert "acc-zz" in table  # the orphan is kept (delete_orphans is off) and says so
    audit = _applied_audits(seeded["recon"])
    assert audit and audit[0]["actor"] == "alice"

    second = run_job(seeded, "daily_reconciliation")
    remaining = keys(seeded["recon"], second.run_id)
    assert remaining == {("account", "acc-zz", "orphan_projection"), ("transaction", "tx-2", "stuck")}
    assert first.run_id != second.run_id


def test_a_dry_runs_metadata_and_table_say_why_each_entity_is_refused_or_kept_and_count_them_apart(
        seeded: dict[str, Any], event_store: KafkaEventStore) -> None:
    """acc-bad's own events overdraw it (refused), acc-zz is an orphan row (kept): two counts, two reasons."""
    event = EventFactory()
    bad = [event("acc-bad", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
           event("acc-bad", 2, AccountCredited(10, None, "deposit"), 1),
           event("acc-bad", 3, AccountDebited(50, None, "withdrawal"), 2)]
    event_store.append(bad)
    project(bad, seeded["projections"])
    run_job(seeded, "daily_reconciliation")
    result = run_job(seeded, "rebuild_accounts", rebuild_config("account", reason="look first", all=True))
    output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    assert (metadata["refused"].value, metadata["kept_orphans"].value) == (1, 1)
    assert (metadata["action/refused"].value, metadata["action/kept_orphan"].value) == (1, 1)
    assert "1 refused, 1 kept (orphan)" in metadata["summary"].value, metadata["summary"].value
    table = metadata["changes"].value
    rows = {line.split("|")[1].strip(" `"): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in table.splitlines()[2:]}
    assert rows["acc-bad"][0] == "refused" and rows["acc-bad"][3].startswith(
        "would be refused: the events break a rule ("), rows["acc-bad"]
    assert rows["acc-zz"] == ["kept (orphan)", "row", "left as it is",
                              "would be kept: an orphan row (no events); delete_orphans removes it"]
    assert rows["acc-a"][0] == "to update" and rows["acc-a"][3] == "would be updated"
    # The counts agree with the table's rows.
    assert sum(r[0] == "refused" for r in rows.values()) == metadata["refused"].value
    assert sum(r[0] == "kept (orphan)" for r in rows.values()) == metadata["kept_orphans"].value
    assert "would refused" not in table and "kept_orphan" not in table


def _sensor_context(seeded: dict[str, Any], result: dg.ExecuteInProcessResult) -> dg.RunStatusSensorContext:
    instance = seeded["instance"]
    run = instance.get_run_by_id(result.run_id)
    event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS")
    return dg.build_run_status_sensor_context(sensor_name="s", dagster_event=event, dagster_instance=instance,
                                              dagster_run=run, resources=seeded["resources"])


def test_findings_sensor_sends_one_message_and_tells_new_from_still_open(seeded: dict[str, Any],
                                                                        slack: SlackStandin) -> None:
    first = run_job(seeded, "daily_reconciliation")
    with _sensor_context(seeded, first) as context:
        reconciliation_findings_sensor(context)
    assert len(slack.messages) == 1
    message = slack.messages[0]
    assert message["channel"] == "#billing-alerts"
    assert f"http://dagster.test/runs/{first.run_id}" in message["text"]
    # Every warning or critical finding of a first run is new: the count is exactly theirs, the four faults among them.
    alertable = [f for f in seeded["recon"].findings(first.run_id) if f.severity.value != "info"]
    assert {("account", "acc-a", "balance_mismatch"), ("account", "acc-c", "missing_projection"),
            ("account", "acc-zz", "orphan_projection"), ("transaction", "tx-2", "stuck")} <= {f.key for f in alertable}
    assert f"({len(alertable)} new, 0 still open" in message["text"], message["text"]
    blocks = str(message["blocks"])
    assert "balance_mismatch" in blocks and "acc-a" in blocks and "NEW" in blocks
    assert "no_critical_account_findings" in blocks  # the failed ERROR check is in the alert
    assert "xoxb" not in str(message)

    second = run_job(seeded, "daily_reconciliation")
    with _sensor_context(seeded, second) as context:
        reconciliation_findings_sensor(context)
    assert len(slack.messages) == 2
    text = slack.messages[1]["text"]
    assert "0 new" in text and "still open" in text and "NEW" not in str(slack.messages[1]["blocks"])


def test_auto_repair_requests_rebuilds_and_respects_the_cap(seeded: dict[str, Any], slack: SlackStandin,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_job(seeded, "daily_reconciliation")
    with _sensor_context(seeded, run) as context:
        requests = auto_repair_sensor(context)
    assert isinstance(requests, list) and len(requests) == 1
    request = requests[0]
    assert request.job_name == "rebuild_accounts"
    config = request.run_config["ops"]["rebuild_account_projections"]["config"]
    assert config["ids"] == ["acc-a", "acc-c"] and config["dry_run"] is False

    monkeypatch.setenv("BILLING_AUTO_REPAIR_MAX", "1")
    with _sensor_context(seeded, run) as context:
        skipped = auto_repair_sensor(context)
    assert isinstance(skipped, dg.SkipReason)
    assert "cap" in slack.messages[-1]["text"]


def test_a_failed_run_is_reported_to_slack(seeded: dict[str, Any], slack: SlackStandin) -> None:
    result = run_job(seeded, "rebuild_transactions", rebuild_config("transaction", reason=" "), raise_on_error=False)
    assert not result.success
    instance = seeded["instance"]
    event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    with dg.build_run_status_sensor_context(sensor_name="s", dagster_event=event, dagster_instance=instance,
                                            dagster_run=instance.get_run_by_id(result.run_id),
                                            resources=seeded["resources"]) as context:
        run_failure_slack_sensor(context.for_run_failure())
    [message] = slack.messages
    assert "rebuild_transactions" in message["text"] and f"/runs/{result.run_id}" in message["text"]
    # The cause, not Dagster's "Steps failed: [...]": which step, and what to fix.
    assert "step rebuild_transaction_projections: Nothing was written. Fix the run config" in message["text"]
    assert "reason" in message["text"]
