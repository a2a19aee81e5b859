"""The Dagster jobs and CLI commands of saga recovery, the lifecycle and the shadow rebuild, on the real servers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_dagster_jobs import keys, run_job, seeded, slack  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from billing_cli.app import app
from billing_domain.config import Topics


def _op_metadata(result: Any) -> dict[str, Any]:
    output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    return output.event_specific_data.metadata


def test_recover_stuck_sagas_plans_by_default_and_appends_when_asked(seeded: dict[str, Any]) -> None:  # noqa: F811
    bad = run_job(seeded, "recover_stuck_sagas", {"ops": {"recover_stuck_sagas_op": {"config": {"reason": " "}}}},
                  raise_on_error=False)
    assert not bad.success
    dry = run_job(seeded, "recover_stuck_sagas", {"ops": {"recover_stuck_sagas_op": {"config": {"reason": "outage"}}}})
    metadata = _op_metadata(dry)
    assert metadata["action/fail"].value == 1 and metadata["appended"].value == 0
    assert "tx-2" in metadata["plan"].value and "TransactionFailed tx-2 v2" in metadata["plan"].value
    done = run_job(seeded, "recover_stuck_sagas", {"ops": {"recover_stuck_sagas_op": {"config": {
        "reason": "outage", "dry_run": False, "ids": ["tx-2"]}}}})
    assert _op_metadata(done)["appended"].value == 1
    operations = [(a["operation"], a["outcome"]) for a in seeded["recon"].audit_operations()]
    assert operations[:2] == [("saga_recovery", "applied"), ("saga_recovery", "dry_run")]


def test_shadow_rebuild_job_diffs_then_swaps_on_approval(seeded: dict[str, Any]) -> None:  # noqa: F811
    diff = run_job(seeded, "shadow_rebuild", {"ops": {"shadow_rebuild_op": {"config": {"reason": "weekly check"}}}})
    metadata = _op_metadata(diff)
    assert metadata["account/repair"].value == 1 and metadata["account/insert"].value == 1
    assert "acc-a" in metadata["diff"].value and "balance_minor=7507" in metadata["diff"].value
    swapped = run_job(seeded, "shadow_rebuild", {"ops": {"shadow_rebuild_op": {"config": {
        "reason": "repair", "approve": True}}}})
    assert _op_metadata(swapped)["written/account"].value == 2
    after = run_job(seeded, "daily_reconciliation")
    assert keys(seeded["recon"], after.run_id) == {("account", "acc-zz", "orphan_projection"),
                                                   ("transaction", "tx-2", "stuck")}


def test_the_cli_commands(seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                          servers: Any, topics: Topics, database_url: str) -> None:
    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", servers.bootstrap_servers)
    monkeypatch.setenv("BILLING_DATABASE_URL", database_url)
    monkeypatch.setenv("BILLING_TOPIC_PREFIX", topics.accounts.removesuffix("account-events"))
    monkeypatch.setenv("BILLING_TOPIC_PARTITIONS", "3")
    runner = CliRunner()
    plan = runner.invoke(app, ["recover-sagas", "--reason", "outage", "--json"])
    assert plan.exit_code == 0, plan.output
    assert [a["action"] for a in json.loads(plan.output)["actions"]] == ["fail"]

    assert runner.invoke(app, ["reconcile", "all", "--json"]).exit_code == 1
    listed = runner.invoke(app, ["findings", "list", "--status", "new", "--json"])
    assert ("account", "acc-a") in {(r["entity_type"], r["entity_id"]) for r in json.loads(listed.output)}
    ack = runner.invoke(app, ["findings", "ack", "account", "acc-zz", "orphan_projection", "--note", "legacy row",
                              "--operator", "alice", "--accept"])
    assert ack.exit_code == 0 and "accepted by alice" in ack.output

    shadow = runner.invoke(app, ["shadow-rebuild", "--reason", "check", "--json"])
    assert json.loads(shadow.output)["counts"]["account"]["repair"] == 1
