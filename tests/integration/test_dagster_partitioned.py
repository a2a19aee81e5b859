"""partitioned_reconciliation: the replay fanned out over partition groups reports like daily_reconciliation."""

from __future__ import annotations

from typing import Any

from test_dagster_jobs import keys, run_job, seeded, slack  # noqa: F401 - fixtures

from billing_domain.services.lifecycle import run_lifecycle


def test_the_fanned_out_job_stores_the_same_findings_as_the_daily_job(seeded: dict[str, Any]) -> None:  # noqa: F811
    daily = run_job(seeded, "daily_reconciliation")
    fanned = run_job(seeded, "partitioned_reconciliation",
                     {"ops": {"plan_account_groups": {"config": {"groups": 3}}}})

    assert fanned.success
    groups = [e for e in fanned.all_events if e.step_key and e.step_key.startswith("fold_partition_group[")
              and e.event_type_value == "STEP_SUCCESS"]
    assert len(groups) == 3
    expected = keys(seeded["recon"], daily.run_id)
    assert expected and keys(seeded["recon"], fanned.run_id) == expected


def test_the_fanned_out_job_updates_the_finding_lifecycle(seeded: dict[str, Any]) -> None:  # noqa: F811
    """It stores its report through run_reconciliation, like every entry point: so the lifecycle (new, open,
    resolved...) follows its findings too (it did not, when the job saved the report itself)."""
    fanned = run_job(seeded, "partitioned_reconciliation")

    assert fanned.success
    lifecycle = run_lifecycle(seeded["recon"], fanned.run_id)
    assert lifecycle is not None, "the partitioned run was not applied to the finding lifecycle"
    found = {(f.entity_type, f.entity_id, f.kind.value) for f in seeded["recon"].findings(fanned.run_id)}
    assert found and set(lifecycle.statuses) == found
