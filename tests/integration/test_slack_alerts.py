"""The reconciliation's alerting on the real servers without Slack and with Slack down: the sensor logs the whole
alert, and the run and its alerting succeed. Delivery itself (content, rate limits, no token, Slack down) is
tests/unit/test_slack_notifier.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from support.builders import project, stuck_transfer_history
from support.slack_standin import SlackStandin
from test_dagster_jobs import make_resources, run_job  # shared helpers of the Dagster tests


def test_without_slack_the_sensors_log_holds_the_whole_findings_alert(
        servers: Any, topics: Any, database_url: str, event_store: Any, projection_store: Any,
        capfd: pytest.CaptureFixture[str]) -> None:
    """The sensor's own log (`context.log`: its tick's, in the UI) says not only "not sent" but what the alert
    said. A built sensor context logs to Dagster's console logger, on stderr."""
    import dagster as dg
    from test_dagster_jobs import inject_faults

    from billing_pipelines.definitions import build_defs
    from billing_pipelines.resources import SlackResource
    from billing_pipelines.sensors import reconciliation_findings_sensor

    events = stuck_transfer_history()
    event_store.append(events)
    project(events, projection_store)
    inject_faults(projection_store)
    standin = SlackStandin().start()
    try:
        resources = make_resources(servers.bootstrap_servers, topics, database_url, standin)
        resources["slack"] = SlackResource(bot_token=None, channel="#billing-alerts", ui_base_url="http://ui")
        seeded = {"defs": build_defs(resources), "instance": dg.DagsterInstance.ephemeral()}
        result = run_job(seeded, "daily_reconciliation")
        run = seeded["instance"].get_run_by_id(result.run_id)
        event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS")
        capfd.readouterr()  # only the sensor's output from here
        with dg.build_run_status_sensor_context(sensor_name="s", dagster_event=event,
                                                dagster_instance=seeded["instance"], dagster_run=run,
                                                resources=resources) as context:
            assert reconciliation_findings_sensor(context) is None
    finally:
        standin.stop()
    assert standin.requests == []
    err = capfd.readouterr().err
    said = " - dagster - WARNING - " + f"run {result.run_id}: findings alert not sent to Slack (not configured)"
    assert err.count(said) == 1, err
    told = err[err.index(said):]
    for line in ("*New and escalated findings*", "*balance_mismatch* account `acc-a`", "*stuck* transaction `tx-2`",
                 f"Open the run in Dagster: http://ui/runs/{result.run_id}"):
        assert line in told, (line, told)


def test_the_reconciliation_and_its_alerting_succeed_while_slack_is_down(
        servers: Any, topics: Any, database_url: str, event_store: Any, projection_store: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    import dagster as dg
    from test_dagster_jobs import inject_faults

    from billing_domain.adapters.postgres.recon_store import ReconStore
    from billing_pipelines.definitions import build_defs
    from billing_pipelines.sensors import reconciliation_findings_sensor

    events = stuck_transfer_history()
    event_store.append(events)
    project(events, projection_store)
    inject_faults(projection_store)
    down = SlackStandin().start()
    down.stop()
    resources = make_resources(servers.bootstrap_servers, topics, database_url, down)
    seeded = {"defs": build_defs(resources), "instance": dg.DagsterInstance.ephemeral()}
    result = run_job(seeded, "daily_reconciliation")
    assert result.success
    assert ReconStore(projection_store.engine).findings(result.run_id)
    run = seeded["instance"].get_run_by_id(result.run_id)
    event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS")
    with (dg.build_run_status_sensor_context(sensor_name="s", dagster_event=event,
                                             dagster_instance=seeded["instance"], dagster_run=run,
                                             resources=resources) as context,
          caplog.at_level(logging.WARNING, logger="billing_domain.adapters.slack")):
        outcome = reconciliation_findings_sensor(context)  # raises nothing
    assert outcome is None, outcome  # there were findings to alert on: the sensor tried, it did not skip
    [warning] = [r.getMessage() for r in caplog.records if r.name == "billing_domain.adapters.slack"]
    # The failed delivery is logged with the alert's own text (the run's link), so the alert is not lost.
    assert "Slack unreachable" in warning and f"/runs/{result.run_id}" in warning, warning
