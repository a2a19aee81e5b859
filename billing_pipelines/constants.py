"""Names shared by the Dagster definitions: groups, jobs, tags and the environment they read."""

from __future__ import annotations

RECONCILIATION_GROUP = "reconciliation"

DAILY_RECONCILIATION_JOB = "daily_reconciliation"
REBUILD_ACCOUNTS_JOB = "rebuild_accounts"
REBUILD_TRANSACTIONS_JOB = "rebuild_transactions"

OPERATION_TAG = "billing/operation"
REBUILD_TAGS = {OPERATION_TAG: "rebuild"}
RECONCILE_TAGS = {OPERATION_TAG: "reconcile"}
SOURCE = "dagster"  # ReconStore.save_report(source=...)

# Environment read by the definitions (the contract's names come from billing_domain.config).
ENV_RECON_CRON = "BILLING_RECON_CRON"
ENV_RECON_TIMEZONE = "BILLING_RECON_TIMEZONE"
DEFAULT_RECON_CRON = "0 6 * * *"
DEFAULT_RECON_TIMEZONE = "UTC"

# How often the replay reports progress in the run log.
PROGRESS_EVERY_EVENTS = 50_000
