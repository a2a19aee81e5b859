"""The reconciliation assets' metadata for a person (issue 18.8 and 18.10): durations rounded to the
millisecond, no replay rate where nothing was replayed, counts before timings both in the asset page's table
(insertion order) and in its plots (the UI sorts them by label), and every detail a table cuts reachable whole."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from billing_domain.config import Topics
from billing_domain.core.cut import Cut
from billing_domain.core.findings import Finding, Kind, ReconciliationReport
from billing_domain.core.replay import Replay
from billing_domain.services.outcome import ReplayOutcome
from billing_pipelines.assets import (
    TIMING_PREFIX,
    WORST_FINDINGS_WHOLE,
    _replay_metadata,
    findings_markdown,
    replay_timings,
    report_metadata,
)

RAW = 0.00009974800013878848  # the issue's `diff_s`


def _report(stats: dict[str, Any], findings: list[Finding] | None = None) -> ReconciliationReport:
    return ReconciliationReport("run-1", "all", datetime(2026, 3, 1, tzinfo=UTC), findings=findings or [],
                                stats=stats)


def _numbers(metadata: dict[str, Any]) -> list[str]:
    """The labels the UI plots: the numeric entries."""
    return [k for k, v in metadata.items() if isinstance(v, dg.IntMetadataValue | dg.FloatMetadataValue)]


def _counts_then_timings(labels: list[str]) -> bool:
    timing = [label.startswith(TIMING_PREFIX) for label in labels]
    return any(timing) and not all(timing) and timing == sorted(timing)  # every count before every timing


def test_a_delta_run_that_replayed_nothing_has_rounded_durations_and_no_rate() -> None:
    metadata = report_metadata(_report({"diff_s": RAW, "replay_s": 0.0, "events_read": 0}))
    assert metadata[f"{TIMING_PREFIX}diff_s"] == dg.MetadataValue.float(0.0)
    assert metadata[f"{TIMING_PREFIX}replay_s"] == dg.MetadataValue.float(0.0)
    assert not any(label.endswith("events_per_s") for label in metadata), list(metadata)
    assert "diff_s" not in metadata and "events_per_s" not in metadata


def test_a_replay_rate_is_whole_events_per_second_and_durations_are_milliseconds() -> None:
    metadata = report_metadata(_report({"diff_s": 0.0123456, "replay_s": 0.123456, "events_read": 1_000}))
    assert metadata[f"{TIMING_PREFIX}diff_s"] == dg.MetadataValue.float(0.012)
    assert metadata[f"{TIMING_PREFIX}replay_s"] == dg.MetadataValue.float(0.123)
    assert metadata[f"{TIMING_PREFIX}events_per_s"] == dg.MetadataValue.int(8_100)


def test_report_counts_come_before_timings_in_the_table_and_in_the_plots() -> None:
    finding = Finding.of("account", "acc-1", Kind.BALANCE_MISMATCH, "balance 1 at v1, events say 2")
    metadata = report_metadata(_report({"diff_s": RAW, "replay_s": 0.5, "events_read": 10}, [finding]))
    assert _counts_then_timings(_numbers(metadata))  # the table: insertion order
    assert _counts_then_timings(sorted(_numbers(metadata)))  # the plots: sorted by label
    assert next(iter(metadata)) == "findings"


def test_replay_counts_come_before_timings_in_the_table_and_in_the_plots() -> None:
    outcome = ReplayOutcome(Replay(Topics.with_prefix("t.")), Cut(), {}, {},
                            timings={"load_checkpoint_s": RAW, "read_projections_s": 0.25, "replay_s": 1.0})
    outcome.replay.events_read = 0  # a delta run whose tail was empty
    metadata = _replay_metadata(outcome) | replay_timings(outcome)
    labels = _numbers(metadata)
    assert "transactions" in labels and "events_read" in labels
    assert _counts_then_timings(labels) and _counts_then_timings(sorted(labels))
    assert metadata[f"{TIMING_PREFIX}load_checkpoint_s"] == dg.MetadataValue.float(0.0)
    assert not any(label.endswith("events_per_s") for label in metadata)


def test_a_detail_cut_in_the_table_is_whole_beside_it_and_in_the_export() -> None:
    long = "in flight: " + ", ".join(f"transfer_out on acc-{i} 3.0 s before the read" for i in range(20))
    finding = Finding.of("transaction", "tx-1", Kind.SAGA_MISMATCH, long)
    metadata = report_metadata(_report({}, [finding]))
    table = metadata["worst_findings"].value
    assert "…" in table and long not in table
    assert f"`{WORST_FINDINGS_WHOLE}`" in table and "billing-recon export-findings --run run-1" in table
    whole = metadata[WORST_FINDINGS_WHOLE].value
    assert whole["findings"][0]["detail"] == long and (whole["shown"], whole["total"]) == (1, 1)
    assert "export-findings --run run-1" in whole["every_finding"]


def test_a_table_that_cuts_nothing_says_nothing_of_it() -> None:
    table = findings_markdown([Finding.of("account", "acc-1", Kind.LAGGING, "behind by 1 event(s)")])
    assert "…" not in table and "export-findings" not in table
