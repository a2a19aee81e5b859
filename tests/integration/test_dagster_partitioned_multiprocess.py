"""partitioned_reconciliation on Dagster's multiprocess executor, as it runs when launched: each fold step in its
own process, the partial replays handed to the merge through the filesystem IO manager, the same findings as
the daily job's (issue 17: past one machine on an existing engine, here on two cores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from support.partitioned_job import partitioned_job
from test_dagster_jobs import keys, run_job, seeded, slack  # noqa: F401 - fixtures

from billing_domain.config import Topics


def test_the_fold_steps_run_in_their_own_processes_and_merge_to_the_daily_jobs_findings(
        seeded: dict[str, Any], servers: Any, topics: Topics, database_url: str,  # noqa: F811
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers,
                        "BILLING_DATABASE_URL": database_url, "BILLING_TOPIC_PARTITIONS": "3",
                        "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events")}.items():
        monkeypatch.setenv(name, value)  # the step processes build their resources from the environment
    daily = run_job(seeded, "daily_reconciliation")

    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        result = dg.execute_job(dg.reconstructable(partitioned_job), instance=instance,
                                run_config={"ops": {"plan_account_groups": {"config": {"groups": 2}}}})
        assert result.success
        step_processes = {e.pid for e in result.all_events if e.is_step_start}
        folds = {e.step_key for e in result.all_events if e.is_step_success and e.step_key
                 and e.step_key.startswith("fold_partition_group[")}
        run_id = result.run_id

    assert len(folds) == 2 and len(step_processes) >= 3, (folds, step_processes)
    expected = keys(seeded["recon"], daily.run_id)
    assert expected and keys(seeded["recon"], run_id) == expected
