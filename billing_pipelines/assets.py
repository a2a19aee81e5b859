"""The reconciliation assets: one replay of the event store per run, described as four assets.

`reconciliation` reads the projections, folds one cut of both topics (once), diffs per entity
type and stores the findings under the Dagster run id in `billing_recon` (what the contract asks of
`daily_reconciliation`). Each asset's materialization carries its counts as numbers, so the UI
plots them across runs.
"""


import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import dagster as dg

from billing_domain.config import Settings
from billing_domain.core.findings import Finding, ReconciliationReport
from billing_domain.services.reconcile import ReconcileOptions, ReplayOutcome, entity_counts
from billing_domain.services.run_reconciliation import ReconciliationRequest, run_reconciliation
from billing_pipelines.constants import PROGRESS_EVERY_EVENTS, RECONCILIATION_GROUP, SOURCE
from billing_pipelines.resources import EventStoreResource, ProjectionsResource

REPLAYED_STATE = dg.AssetKey("replayed_state")
ACCOUNT_REPORT = dg.AssetKey("account_reconciliation_report")
TRANSACTION_REPORT = dg.AssetKey("transaction_reconciliation_report")
LEDGER_REPORT = dg.AssetKey("accounting_equation_report")
# asset -> the entity types of its report
REPORT_ENTITY_TYPES: dict[dg.AssetKey, tuple[str, ...]] = {
    ACCOUNT_REPORT: ("account",),
    TRANSACTION_REPORT: ("transaction",),
    LEDGER_REPORT: ("ledger",),
}
ALL_RECONCILIATION_KEYS = (REPLAYED_STATE, *REPORT_ENTITY_TYPES)


class ReconciliationConfig(dg.Config):
    full_replay: bool = False
    """Replay the whole log instead of resuming from the last checkpoint (which is also used when
    it cannot be trusted: another code version, a recreated topic)."""


def _spec(key: dg.AssetKey, description: str, deps: tuple[dg.AssetKey, ...] = ()) -> dg.AssetSpec:
    return dg.AssetSpec(key, description=description, deps=deps, group_name=RECONCILIATION_GROUP,
                        kinds={"kafka", "postgres"}, skippable=False)


@dg.multi_asset(
    name="reconciliation",
    specs=[
        _spec(REPLAYED_STATE, "Account and transaction state folded from one cut of the event store."),
        _spec(ACCOUNT_REPORT, "Account projections against the events: missing, orphan, mismatched, lagging, "
                              "version-ahead rows, broken invariants and corrupt streams.", (REPLAYED_STATE,)),
        _spec(TRANSACTION_REPORT, "Transaction projections against the events, stuck transfers and sagas whose "
                                  "money does not match their status.", (REPLAYED_STATE,)),
        _spec(LEDGER_REPORT, "The accounting identities per currency.", (REPLAYED_STATE,)),
    ],
)
def reconciliation(context: dg.AssetExecutionContext, config: ReconciliationConfig, event_store: EventStoreResource,
                   projections: ProjectionsResource) -> Iterator[dg.MaterializeResult]:
    options = ReconcileOptions.from_settings(Settings.from_env())  # the thresholds, lag window, projector group
    request = ReconciliationRequest(run_id=context.run.run_id, source=SOURCE, full=config.full_replay, delta=True)
    run = run_reconciliation(projections.run_stores(event_store), request, options,
                             progress=_progress_logger(context))
    assert run.outcome is not None  # a whole-log run always has its replay
    context.log.info(f"replay: {run.outcome.mode} ({run.outcome.mode_reason})")
    context.log.info(f"stored {len(run.report.findings)} findings under run {context.run.run_id} in billing_recon")
    yield dg.MaterializeResult(asset_key=REPLAYED_STATE, metadata=_replay_metadata(run.outcome))
    for key, types in REPORT_ENTITY_TYPES.items():
        yield dg.MaterializeResult(asset_key=key, metadata=report_metadata(part_of(run.report, types)))


def _progress_logger(context: dg.AssetExecutionContext) -> Any:
    seen = {"events": 0, "logged": 0, "started": time.perf_counter()}

    def progress(batch: int) -> None:
        seen["events"] += batch
        if seen["events"] - seen["logged"] >= PROGRESS_EVERY_EVENTS:
            seen["logged"] = seen["events"]
            rate = seen["events"] / max(time.perf_counter() - seen["started"], 1e-9)
            context.log.info(f"replay: {seen['events']:,} events read ({rate:,.0f} events/s)")

    return progress


def part_of(report: ReconciliationReport, entity_types: tuple[str, ...]) -> ReconciliationReport:
    """The stored report's findings (and identities) of these entity types: what one asset describes."""
    return replace(report, findings=[f for f in report.findings if f.entity_type in entity_types],
                   ledger=report.ledger if "ledger" in entity_types else [], entity_types=entity_types)


def _replay_metadata(outcome: ReplayOutcome) -> dict[str, Any]:
    replay = outcome.replay
    replay_s = outcome.timings.get("replay_s", 0.0)
    return {
        "events_read": dg.MetadataValue.int(replay.events_read),
        "replay_mode": dg.MetadataValue.text(f"{outcome.mode}: {outcome.mode_reason}"),
        "load_checkpoint_s": dg.MetadataValue.float(float(outcome.timings.get("load_checkpoint_s", 0.0))),
        "duplicates_ignored": dg.MetadataValue.int(replay.duplicates),
        **{name: dg.MetadataValue.int(count) for name, count in entity_counts(outcome).items()},
        "read_projections_s": dg.MetadataValue.float(float(outcome.timings.get("read_projections_s", 0.0))),
        "replay_s": dg.MetadataValue.float(float(replay_s)),
        "events_per_s": dg.MetadataValue.float(replay.events_read / replay_s if replay_s > 0 else 0.0),
        "cut": dg.MetadataValue.json(outcome.cut.to_json()),
        "cut_messages": dg.MetadataValue.int(outcome.cut.message_count),
        # `stuck` and the lag window are judged at the run's clock; the newest event's time is beside it.
        "judged_at": dg.MetadataValue.text(outcome.judge.read_at.isoformat()),
        "newest_event_at": dg.MetadataValue.text(replay.cut_time.isoformat() if replay.cut_time else "no events"),
        "lag_judged_by": dg.MetadataValue.text(f"projector group {outcome.judge.group}"
                                               if outcome.judge.applied is not None
                                               else f"{outcome.judge.window.total_seconds():g} s lag window"),
    }


def report_metadata(report: ReconciliationReport, worst: int = 20) -> dict[str, Any]:
    """Counts (numbers, one entry per kind and severity), the worst findings, the cut and the timings."""
    metadata: dict[str, Any] = {"findings": dg.MetadataValue.int(len(report.findings))}
    metadata |= {f"severity/{s}": dg.MetadataValue.int(n) for s, n in report.counts_by_severity().items()}
    metadata |= {f"kind/{k}": dg.MetadataValue.int(n) for k, n in report.counts_by_kind().items()}
    metadata["worst_findings"] = dg.MetadataValue.md(findings_markdown(report.worst(worst)))
    if report.ledger:
        metadata["ledger_identities"] = dg.MetadataValue.md(_ledger_markdown(report))
        metadata["ledger_identities_broken"] = dg.MetadataValue.int(sum(not i.holds for i in report.ledger))
    metadata["cut"] = dg.MetadataValue.json(report.cut.to_json())
    metadata["diff_s"] = dg.MetadataValue.float(float(report.stats.get("diff_s", 0.0)))
    metadata["replay_s"] = dg.MetadataValue.float(float(report.stats.get("replay_s", 0.0)))
    metadata["events_per_s"] = dg.MetadataValue.float(float(report.stats.get("events_per_s", 0.0)))
    return metadata


def findings_markdown(findings: list[Finding]) -> str:
    if not findings:
        return "No findings."
    rows = ["| severity | kind | entity | id | detail |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| {f.severity.value} | {f.kind.value} | {f.entity_type} | `{f.entity_id}` | {_cell(f.detail)} |"
             for f in findings]
    return "\n".join(rows)


def _ledger_markdown(report: ReconciliationReport) -> str:
    rows = ["| currency | identity | left | right | holds |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| {i.currency} | {i.identity} | {i.left} | {i.right} | {'yes' if i.holds else '**no**'} |"
             for i in report.ledger]
    return "\n".join(rows)


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.replace("|", "\\|").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
