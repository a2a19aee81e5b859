"""The jobs: `daily_reconciliation` over the reconciliation assets, and the two rebuild op jobs.

A rebuild is `billing_domain.services.rebuild.rebuild`; the op only turns launchpad config into its
arguments, turns a `ConfigurationError` into a Dagster failure that says what to fix, and
describes the result (before/after per entity, verification) as output metadata.
"""


from typing import Any, Literal

import dagster as dg
from pydantic import Field

from billing_domain.core.exceptions import ConcurrentOperationError, ConfigurationError
from billing_domain.core.operators import from_dagster_run
from billing_domain.core.row_diff import changed_columns
from billing_domain.services.rebuild import (
    WRITING,
    RebuildResult,
    RebuildSelection,
    action_label,
    describe,
    rebuild,
    validate_rebuild_request,
)
from billing_pipelines.assets import ALL_RECONCILIATION_KEYS
from billing_pipelines.constants import (
    DAILY_RECONCILIATION_JOB,
    PROGRESS_EVERY_EVENTS,
    REBUILD_ACCOUNTS_JOB,
    REBUILD_TAGS,
    REBUILD_TRANSACTIONS_JOB,
    RECONCILE_TAGS,
)
from billing_pipelines.resources import EventStoreResource, ProjectionsResource

MAX_TABLE_ROWS = 200
CHANGED = ("insert", "update", "reset_ahead", "delete")

daily_reconciliation = dg.define_asset_job(
    DAILY_RECONCILIATION_JOB,
    selection=dg.AssetSelection.assets(*ALL_RECONCILIATION_KEYS),
    description="Replay the event store once, diff every projection, check the accounting equation and store "
                "the findings under this run's id in billing_recon.",
    tags=RECONCILE_TAGS,
    # In process: the checks are short predicates over the stored report. Under the default multiprocess
    # executor each check step was a process of its own (about 5 s each here), so a run launched from the UI
    # took 18 to 38 s for under a second of work.
    executor_def=dg.in_process_executor,
)


class RebuildConfig(dg.Config):
    """Launchpad config of a rebuild. With no ids, all or from_run: everything the latest report flagged."""

    reason: str = Field(description="Why you rebuild; goes to the audit trail. Required, not empty.")
    # None, not []: an empty list given on purpose is an error, never "what the latest report flagged".
    ids: list[str] | None = Field(default=None, description="Entity ids to rebuild (not together with all). Leave "
                                                            "it out (not []) for the default selection.")
    all: bool = Field(default=False, description="Rebuild every entity of this type.")
    from_run: str | None = Field(default=None, description="Rebuild what this reconciliation run flagged.")
    dry_run: bool = Field(default=True, description="Show before/after only; write nothing.")
    delete_orphans: bool = Field(default=False, description="Delete projection rows that have no events.")
    actor: str | None = Field(default=None, description="Who asks; defaults to the launching user or 'dagster'.")


def selection_for(config: RebuildConfig, latest_run: str | None) -> RebuildSelection:
    """The rebuild's selection; the default (nothing chosen) is what the latest daily run flagged."""
    if config.ids is not None and not any(i.strip() for i in config.ids):
        raise ConfigurationError("ids: the list is empty; name at least one id, or leave ids out to rebuild what "
                                 "the latest report flagged")
    ids = tuple(config.ids or ())
    from_run = config.from_run
    if not ids and not config.all and not from_run:
        from_run = latest_run
    return RebuildSelection(ids=ids, all=config.all, from_run=from_run)


def actor_for(config: RebuildConfig, run_tags: dict[str, str]) -> str:
    return config.actor or run_tags.get("dagster/user") or run_tags.get("user") or "dagster"


def make_rebuild_job(entity_type: Literal["account", "transaction"], name: str) -> dg.JobDefinition:
    @dg.op(name=f"rebuild_{entity_type}_projections", out=dg.Out(dg.Nothing),
           description=f"Rebuild {entity_type} projections from their events: guarded, audited, verified.")
    def rebuild_op(context: dg.OpExecutionContext, config: RebuildConfig, event_store: EventStoreResource,
                   projections: ProjectionsResource) -> dg.Output[None]:
        recon_store = projections.recon_store()
        actor = actor_for(config, dict(context.run.tags))
        operator = from_dagster_run(config.actor, dict(context.run.tags))  # who, and how Dagster knows it
        try:
            selection = selection_for(config, recon_store.latest_run_id("all"))
            validate_rebuild_request(entity_type, selection, config.reason, actor)
            result = rebuild(event_store.get_store(), projections.projection_store(), recon_store,
                             entity_type=entity_type, selection=selection, dry_run=config.dry_run,
                             reason=config.reason, operator=operator, delete_orphans=config.delete_orphans,
                             run_id=context.run.run_id, progress=_progress(context),
                             checkpoints=projections.checkpoints())
        except ConfigurationError as exc:
            raise dg.Failure(description=f"Nothing was written. Fix the run config: {exc}",
                             allow_retries=False) from exc
        except ConcurrentOperationError as exc:  # a refusal (audited), not a crash: say so, no traceback
            raise dg.Failure(description=f"Refused, nothing was written: {exc}", allow_retries=False) from exc
        context.log.info(f"{'dry run' if result.dry_run else 'rebuild'} of {entity_type}s: {result.summary()}; "
                         f"{result.written:,} row(s) written, audit #{result.audit_id}")
        return dg.Output(None, metadata=rebuild_metadata(result))

    # In-process: the run worker is the process that holds the rebuild's connection and advisory lock. If it
    # dies (OOM, SIGKILL), the code server marks the run failed as a crash, not a step failure, so the daemon's
    # run retries (dagster.yaml) relaunch it; with a step subprocess, the child could outlive a killed worker.
    @dg.job(name=name, tags=REBUILD_TAGS, executor_def=dg.in_process_executor,
            description=f"Rebuild {entity_type} projections (default: what the latest report flagged, dry run).")
    def rebuild_job() -> None:
        rebuild_op()

    return rebuild_job


def _progress(context: dg.OpExecutionContext) -> Any:
    seen = {"events": 0, "logged": 0}

    def progress(batch: int) -> None:
        seen["events"] += batch
        if seen["events"] - seen["logged"] >= PROGRESS_EVERY_EVENTS:
            seen["logged"] = seen["events"]
            context.log.info(f"rebuild replay: {seen['events']:,} events read")

    return progress


def rebuild_metadata(result: RebuildResult) -> dict[str, Any]:
    counts = result.counts()
    still = sorted(i for i, v in result.outcome.items() if v.startswith("still"))
    metadata: dict[str, Any] = {
        "dry_run": dg.MetadataValue.bool(result.dry_run),
        "written": dg.MetadataValue.int(result.written),
        "audit_id": dg.MetadataValue.int(result.audit_id or 0),
        "summary": dg.MetadataValue.text(result.summary()),
        "refused": dg.MetadataValue.int(len(result.refused)),  # a corrupt stream or a broken rule
        "kept_orphans": dg.MetadataValue.int(len(result.kept)),  # counted apart: not refusals
        "still_wrong_after_rebuild": dg.MetadataValue.int(len(still)),
        "verification": dg.MetadataValue.text(
            "dry run: nothing written, nothing to verify" if result.dry_run
            else ("every rebuilt entity reconciles" if not still else f"still wrong: {', '.join(still[:20])}")),
        "changes": dg.MetadataValue.md(changes_markdown(result)),
        "verification_findings": dg.MetadataValue.json(result.verification_findings[:MAX_TABLE_ROWS]),
    }
    metadata |= {f"action/{a}": dg.MetadataValue.int(n) for a, n in sorted(counts.items())}
    return metadata


def changes_markdown(result: RebuildResult) -> str:
    shown = [c for c in result.changes if c.action != "unchanged"]
    if not shown:
        return "Nothing to change."
    rows = ["| entity | action | before | after | outcome and why |", "| --- | --- | --- | --- | --- |"]
    for change in shown[:MAX_TABLE_ROWS]:
        if change.action in ("refused", "kept_orphan"):  # the row is left as it is, whatever it holds
            before, after = ("row" if change.before is not None else "(no row)", "left as it is")
        else:
            before, after = _diff(change.before, change.after)
        outcome = result.outcome_of(change)
        if not result.dry_run and change.action in WRITING:  # what it was verified to be
            outcome = f"{describe(change.action, change.reason, dry_run=False)} -> {outcome}"
        rows.append(f"| `{change.entity_id}` | {action_label(change.action, dry_run=result.dry_run)} | {before} | "
                    f"{after} | {_cell(outcome)} |")
    if len(shown) > MAX_TABLE_ROWS:
        rows.append(f"| … | {len(shown) - MAX_TABLE_ROWS} more | | | |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    """Text inside a Markdown table cell: a `|` would end the cell, a newline the row."""
    return " ".join(text.split()).replace("|", "\\|")


def _diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[str, str]:
    """Only the columns that differ (timestamps and event ids aside), as `col=value` lists."""
    if before is None or after is None:
        return ("(no row)" if before is None else "row", "(no row)" if after is None else "row")
    changed = changed_columns(before, after)
    return (", ".join(f"{column}={old}" for column, old, _ in changed) or "same",
            ", ".join(f"{column}={new}" for column, _, new in changed) or "same")


rebuild_accounts = make_rebuild_job("account", REBUILD_ACCOUNTS_JOB)
rebuild_transactions = make_rebuild_job("transaction", REBUILD_TRANSACTIONS_JOB)
