"""A topic whose configuration can lose events: the judgement (core/topic_config.py), the run's stats
(services/topic_safety.py through run_reconciliation, on the fakes), the alert and the assets' metadata."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import dagster as dg
import pytest
from support.builders import fold, transfer_history
from support.fakes import InMemoryCheckpointStore, InMemoryEventLog, InMemoryProjectionStore, InMemoryReconStore

from billing_domain.core.findings import Finding, Kind, ReconciliationReport
from billing_domain.core.records import Topics
from billing_domain.core.topic_config import CAN_LOSE_EVENTS, KEPT_FOREVER, SAFE, UNKNOWN, TopicConfig, TopicSafety
from billing_domain.services import topic_safety
from billing_domain.services.alerts import findings_alert, lifecycle_alert
from billing_domain.services.reconcile import ReconcileOptions
from billing_domain.services.run_reconciliation import ReconciliationRequest, RunStores, run_reconciliation
from billing_pipelines.assets import event_log_warnings, report_metadata, topic_metadata

TOPICS = Topics.with_prefix("fake.")


@pytest.mark.parametrize(("settings", "risks"), [
    (dict(KEPT_FOREVER), []),
    ({**KEPT_FOREVER, "cleanup.policy": "compact"}, ["cleanup.policy=compact: compaction keeps only the newest"]),
    ({**KEPT_FOREVER, "cleanup.policy": "compact, delete"}, ["cleanup.policy=compact, delete: compaction"]),
    ({**KEPT_FOREVER, "retention.ms": "604800000"}, ["retention.ms=604800000 (7 days): events older"]),
    ({**KEPT_FOREVER, "retention.ms": "3600000"}, ["retention.ms=3600000 (1 hours)"]),
    ({**KEPT_FOREVER, "retention.ms": "0"}, ["retention.ms=0 (0 hours)"]),
    ({**KEPT_FOREVER, "retention.bytes": "1073741824"}, ["retention.bytes=1073741824 (1 GiB per partition)"]),
    ({**KEPT_FOREVER, "retention.ms": "forever"}, ["retention.ms=forever: "]),  # unreadable: not trusted
    ({"cleanup.policy": "delete"}, []),  # the rest not described: unknown, not a risk
])
def test_which_settings_can_lose_events(settings: dict[str, str], risks: list[str]) -> None:
    found = TopicConfig("t", settings).risks()
    assert len(found) == len(risks) and all(f.startswith(r) for f, r in zip(found, risks, strict=True)), found


def test_the_verdict_over_both_topics() -> None:
    safe = TopicSafety.of([TopicConfig("b", dict(KEPT_FOREVER)), TopicConfig("a", dict(KEPT_FOREVER))])
    assert (safe.status, safe.warnings, safe.note) == (SAFE, [], None)
    assert [c.topic for c in safe.configs] == ["a", "b"]

    lossy = TopicSafety.of([TopicConfig("a", {**KEPT_FOREVER, "cleanup.policy": "compact"}), TopicConfig("b", None)])
    [warning] = lossy.warnings
    assert lossy.status == CAN_LOSE_EVENTS and lossy.note is None  # a warning says more than "unknown"
    assert warning.startswith("topic a can lose events (cleanup.policy=compact") and "cannot be trusted" in warning

    unknown = TopicSafety.of([TopicConfig("a", None, "no DescribeConfigs here"), TopicConfig("b", None)])
    assert unknown.status == UNKNOWN and unknown.warnings == []
    assert unknown.note == (f"{UNKNOWN}: the broker did not describe cleanup.policy, retention.bytes, retention.ms "
                            "of a, b (no DescribeConfigs here); whether every event is kept cannot be checked")
    assert TopicSafety.of([TopicConfig("a", {"cleanup.policy": "delete"})]).status == UNKNOWN


def _stores(log: InMemoryEventLog) -> RunStores:
    history = transfer_history()
    log.append(history)
    projections = InMemoryProjectionStore()
    folded = fold(history)
    projections.upsert("account", [a.state() for a in folded.accounts.values()])
    projections.upsert("transaction", [t.state() for t in folded.transactions.values()])
    return RunStores(log, projections, InMemoryReconStore(), InMemoryCheckpointStore())


def test_every_run_says_in_its_stats_whether_the_topics_keep_every_event(caplog: pytest.LogCaptureFixture) -> None:
    log = InMemoryEventLog(TOPICS)
    stores = _stores(log)
    clean = run_reconciliation(stores, ReconciliationRequest("r1", "test"), ReconcileOptions()).report
    assert clean.findings == [] and clean.stats["warnings"] == [] and clean.stats["topic_config_status"] == SAFE
    assert clean.stats["topic_config"] == {t: dict(KEPT_FOREVER) for t in TOPICS.all()}

    log.topic_settings[TOPICS.accounts] = {**KEPT_FOREVER, "retention.bytes": "1048576"}
    with caplog.at_level(logging.WARNING, logger="billing_domain.services.topic_safety"):
        warned = run_reconciliation(stores, ReconciliationRequest("r2", "test"), ReconcileOptions()).report
        one = run_reconciliation(stores, ReconciliationRequest("r3", "test", entity=("account", "acc-a")),
                                 ReconcileOptions()).report
    assert warned.findings == []  # no finding kind of its own: the contract's kinds are fixed
    assert warned.stats["topic_config_status"] == CAN_LOSE_EVENTS
    assert [w.split(" (")[0] for w in warned.stats["warnings"]] == [f"topic {TOPICS.accounts} can lose events"]
    assert one.stats["warnings"] == warned.stats["warnings"]  # one entity's report says it too
    assert caplog.text.count("EVENT LOG CAN LOSE EVENTS") == 2


def test_an_unknown_configuration_is_one_note_said_once_and_earlier_warnings_are_kept(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topic_safety, "_noted", set())
    log = InMemoryEventLog(TOPICS)
    log.topic_settings = dict.fromkeys(TOPICS.all())
    with caplog.at_level(logging.INFO, logger="billing_domain.services.topic_safety"):
        for _ in range(3):
            stats = {"warnings": ["said before"]}
            topic_safety.judge_topics(log, stats)
            assert stats["warnings"] == ["said before"] and stats["topic_config_status"] == UNKNOWN
    assert caplog.text.count(UNKNOWN) == 1 and "ERROR" not in caplog.text


def _finding() -> Finding:
    return Finding.of("account", "acc-a", Kind.LAGGING, "behind", expected=None, actual=None)


WARNING = "topic fake.account-events can lose events (cleanup.policy=compact: ...)"


def test_a_warning_alone_makes_an_alert_and_comes_first_in_it() -> None:
    assert findings_alert("run-1", [], [], "http://ui") is None
    alert = findings_alert("run-1", [], [], "http://ui", warnings=[WARNING])
    assert alert is not None and alert.text.startswith(":warning: EVENT LOG CAN LOSE EVENTS: topic fake.account")
    assert "EVENT LOG CAN LOSE EVENTS" in str(alert.blocks[1]) and WARNING in str(alert.blocks[1])
    assert alert.blocks[0]["type"] == "header"

    assert lifecycle_alert("run-2", [_finding()], {}, {}, "http://ui") is None  # info only
    alert = lifecycle_alert("run-2", [_finding()], {}, {}, "http://ui", warnings=[WARNING])
    assert alert is not None and alert.text.startswith(":warning: EVENT LOG CAN LOSE EVENTS")
    assert WARNING in str(alert.blocks)


def test_the_assets_metadata_carries_the_warning_for_the_ui_and_the_sensor() -> None:
    stats = {"topic_config_status": CAN_LOSE_EVENTS, "warnings": [WARNING], "topic_config_note": None,
             "topic_config": {TOPICS.accounts: {"cleanup.policy": "compact"}}}
    metadata = topic_metadata(stats)
    assert metadata["event_log"] == dg.MetadataValue.text(CAN_LOSE_EVENTS)
    assert f"**⚠ {WARNING}**" in str(metadata["EVENT_LOG_CAN_LOSE_EVENTS"].value)
    assert event_log_warnings(metadata) == [WARNING]
    report = ReconciliationReport("r", "all", datetime.now(UTC), stats=stats)
    assert event_log_warnings(report_metadata(report)) == [WARNING]

    quiet = topic_metadata({"topic_config_status": SAFE, "warnings": []})
    assert "EVENT_LOG_CAN_LOSE_EVENTS" not in quiet and event_log_warnings(quiet) == []
    assert topic_metadata({}) == {} and event_log_warnings({}) == []  # a report from before the check
