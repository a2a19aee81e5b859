"""The reconciliation assets: one replay of the event store per run, described as four assets.

`reconciliation` reads the projections, folds one cut of both topics (once), diffs per entity
type and stores the findings under the Dagster run id in `billing_recon` (what the contract asks of
`daily_reconciliation`). Each asset's materialization carries its counts as numbers, so the UI
plots them across runs.
"""


import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import dagster as dg

from billing_domain.config import Settings
from billing_domain.core.findings import Finding, ReconciliationReport
from billing_domain.core.lifecycle import RESOLVED, Key, LifecycleRow
from billing_domain.core.topic_config import warnings_of
from billing_domain.ports import LifecycleStore
from billing_domain.services.lifecycle import list_findings
from billing_domain.services.reconcile import ReconcileOptions, ReplayOutcome, entity_counts
from billing_domain.services.run_reconciliation import ReconciliationRequest, ReconciliationRun, run_reconciliation
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
    stores = projections.run_stores(event_store)
    run = run_reconciliation(stores, request, options, progress=_progress_logger(context))
    lifecycle = lifecycle_of(stores.reports, run)  # the run has updated it: each finding's status, first seen
    assert run.outcome is not None  # a whole-log run always has its replay
    context.log.info(f"replay: {run.outcome.mode} ({run.outcome.mode_reason})")
    context.log.info(f"stored {len(run.report.findings)} findings under run {context.run.run_id} in billing_recon")
    yield dg.MaterializeResult(asset_key=REPLAYED_STATE, metadata=_replay_metadata(run.outcome)
                               | topic_metadata(run.report.stats) | replay_timings(run.outcome))
    for key, types in REPORT_ENTITY_TYPES.items():
        yield dg.MaterializeResult(asset_key=key, metadata=report_metadata(part_of(run.report, types),
                                                                           lifecycle=lifecycle))


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


# Metadata is for a person. The asset page's table keeps the entries' order (counts first, timings last); its
# plots sort them by label, so every timing's label starts with `wall/`, after every count's ("transactions").
TIMING_PREFIX = "wall/"
DURATION_DECIMALS = 3  # milliseconds: `wall/diff_s 0.0001` says nothing a person can use that `0.0` does not


def timings_metadata(timings: dict[str, Any], events_read: int) -> dict[str, Any]:
    """Durations in seconds, rounded to the millisecond; the replay's rate in whole events per second, and only
    where events were replayed (a delta run that read nothing has no rate, not a rate of 0)."""
    metadata: dict[str, Any] = {f"{TIMING_PREFIX}{name}": dg.MetadataValue.float(round(float(seconds),
                                                                                        DURATION_DECIMALS))
                                for name, seconds in timings.items()}
    replay_s = float(timings.get("replay_s", 0.0))
    if events_read > 0 and replay_s > 0:
        metadata[f"{TIMING_PREFIX}events_per_s"] = dg.MetadataValue.int(round(events_read / replay_s))
    return metadata


def replay_timings(outcome: ReplayOutcome) -> dict[str, Any]:
    timings = {name: outcome.timings.get(name, 0.0) for name in ("load_checkpoint_s", "read_projections_s",
                                                                 "replay_s")}
    return timings_metadata(timings, outcome.replay.events_read)


def _replay_metadata(outcome: ReplayOutcome) -> dict[str, Any]:
    """What the replay read and folded, and against which cut (its timings: `replay_timings`, listed last)."""
    replay = outcome.replay
    return {
        "events_read": dg.MetadataValue.int(replay.events_read),
        "replay_mode": dg.MetadataValue.text(f"{outcome.mode}: {outcome.mode_reason}"),
        "duplicates_ignored": dg.MetadataValue.int(replay.duplicates),
        **{name: dg.MetadataValue.int(count) for name, count in entity_counts(outcome).items()},
        "cut": dg.MetadataValue.json(outcome.cut.to_json()),
        "cut_messages": dg.MetadataValue.int(outcome.cut.message_count),
        # `stuck` and the lag window are judged at the run's clock; the newest event's time is beside it.
        "judged_at": dg.MetadataValue.text(outcome.judge.read_at.isoformat()),
        "newest_event_at": dg.MetadataValue.text(replay.cut_time.isoformat() if replay.cut_time else "no events"),
        "lag_judged_by": dg.MetadataValue.text(f"projector group {outcome.judge.group}"
                                               if outcome.judge.applied is not None
                                               else f"{outcome.judge.window.total_seconds():g} s lag window"),
    }


WORST_FINDINGS_WHOLE = "worst_findings_whole"  # the table's findings, nothing cut (JSON)


def report_metadata(report: ReconciliationReport, worst: int = 20,
                    lifecycle: Mapping[Key, LifecycleRow] | None = None) -> dict[str, Any]:
    """Counts (numbers, one entry per kind and severity), the worst findings (a table, and the same findings
    whole), the cut, and the timings last."""
    metadata: dict[str, Any] = {"findings": dg.MetadataValue.int(len(report.findings))}
    metadata |= {f"severity/{s}": dg.MetadataValue.int(n) for s, n in report.counts_by_severity().items()}
    metadata |= {f"kind/{k}": dg.MetadataValue.int(n) for k, n in report.counts_by_kind().items()}
    shown = report.worst(worst)
    metadata["worst_findings"] = dg.MetadataValue.md(findings_markdown(shown, run_id=report.run_id,
                                                                       whole_in=WORST_FINDINGS_WHOLE,
                                                                       lifecycle=lifecycle))
    if shown:
        metadata[WORST_FINDINGS_WHOLE] = dg.MetadataValue.json({
            "findings": [f.to_json() for f in shown], "shown": len(shown), "total": len(report.findings),
            "every_finding": export_command(report.run_id)})
    if report.ledger:
        metadata["ledger_identities"] = dg.MetadataValue.md(_ledger_markdown(report))
        metadata["ledger_identities_broken"] = dg.MetadataValue.int(sum(not i.holds for i in report.ledger))
    metadata["cut"] = dg.MetadataValue.json(report.cut.to_json())
    timings = {name: report.stats.get(name, 0.0) for name in ("diff_s", "replay_s")}
    return (metadata | topic_metadata(report.stats)
            | timings_metadata(timings, int(report.stats.get("events_read", 0))))


TOPIC_CONFIG = "topic_config"  # the metadata entry the findings sensor reads the run's warnings from


def topic_metadata(stats: dict[str, Any]) -> dict[str, Any]:
    """Whether the event topics keep every event (see services/topic_safety.py): loud when one can lose events."""
    if "topic_config_status" not in stats:
        return {}
    warnings = warnings_of(stats)
    metadata: dict[str, Any] = {"event_log": dg.MetadataValue.text(str(stats["topic_config_status"])),
                                TOPIC_CONFIG: dg.MetadataValue.json({
                                    "status": stats["topic_config_status"], "warnings": warnings,
                                    "note": stats.get("topic_config_note"), "topics": stats.get("topic_config")})}
    if warnings:
        metadata["EVENT_LOG_CAN_LOSE_EVENTS"] = dg.MetadataValue.md("\n\n".join(f"**⚠ {w}**" for w in warnings))
    return metadata


def event_log_warnings(metadata: dict[str, Any]) -> list[str]:
    """The warnings `topic_metadata` put in an asset's metadata (none where it put nothing)."""
    value = metadata.get(TOPIC_CONFIG)
    data = value.data if isinstance(value, dg.JsonMetadataValue) else None
    found = data.get("warnings") if isinstance(data, dict) else None
    return [str(w) for w in found] if isinstance(found, list) else []


def export_command(run_id: str | None) -> str:
    """The command that writes every finding of a stored run, whole, as CSV."""
    return f"billing-recon export-findings --run {run_id or '<run id>'} --out findings.csv"


def findings_markdown(findings: list[Finding], *, run_id: str | None = None, whole_in: str | None = None,
                      lifecycle: Mapping[Key, LifecycleRow] | None = None) -> str:
    """A table of findings, each detail on one line (cut with … past `_cell`'s limit); below it, where a detail
    was cut, where it is whole: the JSON entry `whole_in` beside the table, and every finding's CSV export.
    With `lifecycle`, since when: each finding's status, when it was first seen and how many days it is open."""
    if not findings:
        return "No findings."
    since = ["status", "first seen (UTC)", "days open"] if lifecycle is not None else []
    rows = ["| " + " | ".join(["severity", "kind", *since, "entity", "id", "detail"]) + " |",
            "|" + " --- |" * (5 + len(since))]
    for f in findings:
        cells = [f.severity.value, f.kind.value, *(_since(lifecycle.get(f.key)) if lifecycle is not None else []),
                 f.entity_type, f"`{f.entity_id}`", _cell(f.detail)]
        rows.append("| " + " | ".join(cells) + " |")
    if any(_cell(f.detail).endswith("…") for f in findings):
        beside = f"whole in `{whole_in}` beside this table, and " if whole_in else ""
        rows += ["", f"A detail cut with … is {beside}in every finding's export: `{export_command(run_id)}`."]
    return "\n".join(rows)


def lifecycle_of(store: LifecycleStore, run: ReconciliationRun) -> dict[Key, LifecycleRow]:
    """The lifecycle rows of the identities a full run saw, as it left them (read by status: the run's own)."""
    if run.lifecycle is None:  # a partial scope has no lifecycle
        return {}
    counts = Counter(status for status in run.lifecycle.statuses.values() if status != RESOLVED)
    rows = {r.key: r for status, n in counts.items() for r in list_findings(store, status, limit=n + 1_000)}
    return {key: rows[key] for key in run.lifecycle.statuses if key in rows}


def _since(row: LifecycleRow | None) -> list[str]:
    if row is None:
        return ["—", "—", "—"]
    return [row.status, f"{row.first_seen_at:%Y-%m-%d %H:%M}", f"{row.days_open:g}"]


def _ledger_markdown(report: ReconciliationReport) -> str:
    rows = ["| currency | identity | left (minor units) | right (minor units) | holds |",
            "| --- | --- | --- | --- | --- |"]
    rows += [f"| {i.currency} | {i.identity} | {i.left} | {i.right} | {'yes' if i.holds else '**no**'} |"
             for i in report.ledger]
    return "\n".join(rows)


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.replace("|", "\\|").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
