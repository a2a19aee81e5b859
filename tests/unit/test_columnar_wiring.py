"""The columnar engine behind `ReconcileOptions.engine` / BILLING_REPLAY_ENGINE: a full `reconcile all` on the
in-memory fakes gives the aggregates' report, and the checkpoint it writes resumes as the aggregates' does."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from support.builders import EventFactory, fold, stuck_transfer_history
from support.fakes import InMemoryCheckpointStore, InMemoryEventLog, InMemoryProjectionStore, InMemoryReconStore

from billing_domain import columnar
from billing_domain.config import ConfigurationError, Settings, Topics
from billing_domain.core.events import AccountCredited, AccountDebited, Event
from billing_domain.core.findings import ReconciliationReport
from billing_domain.services.reconcile import ReconcileOptions, reconcile_all


@dataclass(frozen=True)
class Raw:
    topic: str
    key: bytes | None
    value: bytes | None


def _world() -> tuple[InMemoryEventLog, InMemoryProjectionStore, list[Event]]:
    event = EventFactory(id_prefix="evt")
    history = stuck_transfer_history(event)
    log = InMemoryEventLog(Topics.with_prefix("wire."), partitions=3)
    log.append(history)
    projections = InMemoryProjectionStore()
    folded = fold(history)
    projections.upsert("account", [a.state() for a in folded.accounts.values()])
    projections.upsert("transaction", [t.state() for t in folded.transactions.values()])
    acc_b = projections.read_accounts(["acc-b"])["acc-b"]
    projections.upsert("account", [msgspec.structs.replace(acc_b, balance_minor=acc_b.balance_minor + 1)])
    log.append([event("acc-c", 2, AccountDebited(5, None, "withdrawal"), 31)])  # overdrawn, not projected
    log.append([event("acc-a", 4, AccountCredited(1, None, "deposit"), 31)] * 2)  # a redelivery
    log.append_raw([Raw(log.topics.accounts, b"acc-c", b"{not json")])  # poison on acc-c
    return log, projections, history


def _findings(report: ReconciliationReport) -> list[Any]:
    return [[f.to_json() for f in report.findings], [asdict(i) for i in report.ledger]]


def _options(engine: str, clock_from: Event) -> ReconcileOptions:
    at = clock_from.occurred_at + timedelta(hours=1)
    return ReconcileOptions(engine=engine, clock=lambda: at)


@pytest.mark.parametrize("with_checkpoints", [False, True])
def test_a_full_run_by_columns_reports_what_the_aggregates_report(with_checkpoints: bool,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log, projections, history = _world()
    splits: list[columnar.FoldSplit] = []
    fold_into = columnar.fold_into
    monkeypatch.setattr(columnar, "fold_into", lambda replay, records: splits.append(fold_into(replay, records))
                        or splits[-1])
    reports = {}
    for engine in ("aggregate", "columnar"):
        checkpoints = InMemoryCheckpointStore() if with_checkpoints else None
        first = reconcile_all(log, projections, options=_options(engine, history[-1]), checkpoints=checkpoints,
                              full=True, reports=InMemoryReconStore())
        reports[engine] = [_findings(first)]
        if checkpoints is not None:  # the next run resumes from the checkpoint the full run wrote
            again = reconcile_all(log, projections, options=_options("aggregate", history[-1]),
                                  checkpoints=checkpoints, reports=InMemoryReconStore())
            assert again.stats["replay_mode"] == "incremental"
            reports[engine].append(_findings(again))
    assert reports["columnar"] == reports["aggregate"]
    [split] = splits  # only the columnar full run took the columnar engine, and it folded plain streams by columns
    assert split.columnar > 0 and split.reference > 0
    kinds = {f["kind"] for f in reports["columnar"][0][0]}
    assert {"stream_corrupt", "balance_mismatch", "stuck"} <= kinds  # the comparison is not of empty reports


def test_the_engine_is_a_checked_setting() -> None:
    assert Settings.from_env({}).replay_engine == "aggregate"
    assert Settings.from_env({"BILLING_REPLAY_ENGINE": "columnar"}).replay_engine == "columnar"
    assert ReconcileOptions.from_settings(Settings(replay_engine="columnar")).engine == "columnar"
    with pytest.raises(ConfigurationError, match="BILLING_REPLAY_ENGINE"):
        Settings.from_env({"BILLING_REPLAY_ENGINE": "pandas"})
    with pytest.raises(ValueError, match="engine"):
        ReconcileOptions(engine="pandas")
