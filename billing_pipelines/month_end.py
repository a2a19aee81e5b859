"""Finance: every account's balance at the end of each month, from the event store alone.

One partition per month (UTC). The as-of time is the month's last instant: an event counts when its
own occurred_at falls in or before the month. The balances go to a CSV file under the export
directory (integer minor units) and the totals per currency to the materialization's metadata.
"""


import os
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from billing_domain.services.point_in_time import AsOfBalances, balances_from, cut_at, format_utc, replay_to
from billing_pipelines.progress_log import progress_log
from billing_pipelines.resources import EventStoreResource

FINANCE_GROUP = "finance"
ENV_EXPORT_DIR = "BILLING_EXPORT_DIR"
DEFAULT_EXPORT_DIR = "exports"
MONTHLY = dg.MonthlyPartitionsDefinition(start_date="2024-01-01", timezone="UTC")


class MonthEndConfig(dg.Config):
    export_dir: str | None = None
    """Where the CSV goes; default $BILLING_EXPORT_DIR, else ./exports."""


def export_dir(config: MonthEndConfig) -> Path:
    return Path(config.export_dir or os.environ.get(ENV_EXPORT_DIR) or DEFAULT_EXPORT_DIR).absolute()


@dg.asset(name="month_end_balances", partitions_def=MONTHLY, group_name=FINANCE_GROUP, kinds={"kafka", "csv"},
          description="Each account's balance, currency, version and status at the last instant of the month "
                      "(UTC), folded from the events whose occurred_at is at or before it; totals per currency.")
def month_end_balances(context: dg.AssetExecutionContext, config: MonthEndConfig,
                       event_store: EventStoreResource) -> dg.MaterializeResult:
    window = context.partition_time_window
    month = window.start.strftime("%Y-%m")
    at = window.end.astimezone(UTC) - timedelta(microseconds=1)
    store = event_store.get_store()
    cut = cut_at(store, at)
    context.log.info(f"month end {month}: stop-cut at {format_utc(at)} holds {cut.events:,} events "
                     f"({cut.scanned:,} read to find it)")
    progress = progress_log(context, f"month end {month}", cut.events)
    balances = balances_from(replay_to(store, cut, progress), cut)
    path = balances.write_csv(export_dir(config) / f"month_end_balances_{month}.csv")
    context.log.info(f"month end {month}: {len(balances.accounts):,} accounts written to {path}")
    return dg.MaterializeResult(metadata={**balances_metadata(balances), "csv": dg.MetadataValue.path(str(path)),
                                          **progress.metadata()})


def balances_metadata(balances: AsOfBalances) -> dict[str, Any]:
    """Totals per currency and row counts as integers (minor units), so the UI plots them across months."""
    metadata: dict[str, Any] = {
        "as_of": dg.MetadataValue.text(balances.as_of),
        "accounts": dg.MetadataValue.int(len(balances.accounts)),
        "events_read": dg.MetadataValue.int(balances.events_read),
        "corrupt_accounts": dg.MetadataValue.int(len(balances.corrupt_accounts)),
        "late_events": dg.MetadataValue.int(balances.late_events),
        "cut": dg.MetadataValue.json(balances.cut.to_json()),
    }
    metadata |= {f"total_minor/{c}": dg.MetadataValue.int(t) for c, t in balances.totals().items()}
    metadata |= {f"accounts/{c}": dg.MetadataValue.int(n) for c, n in balances.counts().items()}
    return metadata


month_end_balances_job = dg.define_asset_job(
    "month_end_balances_job", selection=dg.AssetSelection.assets(month_end_balances),
    description="Month-end balances for one month (a partition).")
# Runs just after each month ends (00:30 UTC on the 1st), for the month that ended.
month_end_balances_schedule = dg.build_schedule_from_partitioned_job(
    month_end_balances_job, hour_of_day=0, minute_of_hour=30, name="month_end_balances_schedule")
