"""Faults 5 and 11: rebuilds racing the live projector under simulated traffic, and a bounded soak.

A sampler reads every row's version every 50 ms while the projector applies the traffic and rebuilds
rewrite the same rows: no row may ever move to a lower version or vanish. At the end, with traffic
stopped and the projector caught up, every row is checked against the events (a full reconcile).
The soak repeats reconciles and rebuilds for BILLING_SOAK_SECONDS (default 20): only `lagging` findings,
and the process's memory stays flat.
"""

from __future__ import annotations

import gc
import time
import uuid
from typing import Any

import psutil
import pytest
from reliability_helpers import (
    RACE_SECONDS,
    SOAK_SECONDS,
    Damaged,
    ProjectorThread,
    Traffic,
    VersionSampler,
    damaged_history,
    rebuild_all_accounts,
)
from support.figures import TestFigures

from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.services.reconcile import reconcile_all, replay_all
from billing_sandbox.projector import LiveProjector

RSS_GROWTH_LIMIT_MB = 80


def _live(damaged: Damaged, seed: int) -> tuple[Traffic, ProjectorThread, VersionSampler]:
    heads = replay_all(damaged.event_store, damaged.projections).replay.accounts
    projector = LiveProjector(damaged.event_store, damaged.engine, f"race-{uuid.uuid4().hex[:8]}")
    return Traffic(damaged.event_store, heads, seed), ProjectorThread(projector), VersionSampler(damaged.engine)


def _alive(*threads: Traffic | ProjectorThread | VersionSampler) -> None:
    """Fail at once if a helper thread died: the race would go on without what it was doing."""
    for thread in threads:
        thread.check()


def _settle(damaged: Damaged, traffic: Traffic, projector: ProjectorThread, sampler: VersionSampler) -> None:
    traffic.stop()  # each stop() raises if its thread died on the way
    projector.stop()
    projector.projector.run_until_caught_up(120)
    projector.projector.close()
    sampler.stop()


@pytest.mark.slow
@pytest.mark.timeout(RACE_SECONDS + 150)
def test_rebuilds_racing_the_projector_never_move_a_row_back_or_lose_an_event(
        servers: Any, database_url: str, figures: TestFigures) -> None:
    damaged = damaged_history(servers.bootstrap_servers, database_url, seed=81, accounts=150)
    traffic, projector, sampler = _live(damaged, seed=81)
    figures.injected("rebuilds racing the live projector")
    sampler.start()
    projector.start()
    traffic.start()
    rebuilds = 0
    deadline = time.monotonic() + RACE_SECONDS
    while time.monotonic() < deadline:
        rebuild_all_accounts(damaged, "race")
        rebuilds += 1
        _alive(traffic, projector, sampler)
    _settle(damaged, traffic, projector, sampler)
    rebuild_all_accounts(damaged, "after the race: repairs a damaged row the projector kept moving past us")

    report = reconcile_all(damaged.event_store, damaged.projections)
    rows = report.stats["account_rows"] + report.stats["transaction_rows"]
    figures.version_samples += sampler.samples
    figures.rows_checked_after_races += rows
    figures.rows_lost_or_moved_backwards += len(sampler.backwards) + len(sampler.vanished)
    assert rebuilds >= 2 and traffic.appended > 0 and sampler.samples > 10 and sampler.comparisons > 0
    assert sampler.backwards == [] and sampler.vanished == []
    assert report.findings == [], [f.to_json() for f in report.findings[:5]]
    assert rows == len(damaged.projections.read_accounts()) + len(damaged.projections.read_transactions())
    figures.survived("rebuilds racing the live projector")


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 150)
def test_a_bounded_soak_finds_only_lag_and_keeps_memory_flat(servers: Any, database_url: str,
                                                             figures: TestFigures) -> None:
    damaged = damaged_history(servers.bootstrap_servers, database_url, seed=91, accounts=150)
    rebuild_all_accounts(damaged, "soak: start from correct projections")
    traffic, projector, sampler = _live(damaged, seed=91)
    figures.injected("soak: traffic, projector, reconciles and rebuilds")
    sampler.start()
    projector.start()
    traffic.start()
    unexpected: list[dict[str, Any]] = []
    modes: list[str] = []
    rounds, baseline = 0, 0.0
    deadline = time.monotonic() + SOAK_SECONDS
    checkpoints = CheckpointStore(damaged.recon.engine)
    while time.monotonic() < deadline or rounds < 3:
        # The daily way: from the checkpoint, the delta path once a report is stored, while the projector writes.
        report = reconcile_all(damaged.event_store, damaged.projections, checkpoints=checkpoints,
                               reports=damaged.recon)
        damaged.recon.save_report(report, source="soak")
        modes.append(str(report.stats["replay_mode"]))
        unexpected += [f.to_json() for f in report.findings if f.kind.value != "lagging"]
        rebuild_all_accounts(damaged, "soak")
        rounds += 1
        _alive(traffic, projector, sampler)
        if rounds == 1:
            baseline = _rss_mb()  # after the first round: imports, pools and caches are warm
    growth = _rss_mb() - baseline
    _settle(damaged, traffic, projector, sampler)
    final = reconcile_all(damaged.event_store, damaged.projections)
    settled = reconcile_all(damaged.event_store, damaged.projections, checkpoints=checkpoints, reports=damaged.recon)
    figures.version_samples += sampler.samples
    figures.rows_checked_after_races += final.stats["account_rows"] + final.stats["transaction_rows"]
    figures.rows_lost_or_moved_backwards += len(sampler.backwards) + len(sampler.vanished)
    print(f"soak: {rounds} rounds in {SOAK_SECONDS:.0f}s, {traffic.appended} events appended, "
          f"RSS {baseline:.0f} MB -> {baseline + growth:.0f} MB")
    assert unexpected == [], unexpected[:5]
    assert "delta" in modes[1:], modes
    assert final.findings == [] and settled.findings == []
    assert settled.stats["replay_mode"] == "delta" and settled.ledger == final.ledger
    # The sampler watched the whole soak: it read the tables many times and compared what it had seen.
    assert sampler.samples > 10 and sampler.comparisons > 0, (sampler.samples, sampler.comparisons)
    assert sampler.backwards == [] and sampler.vanished == []
    assert growth < RSS_GROWTH_LIMIT_MB, f"RSS grew {growth:.0f} MB over {rounds} rounds"
    figures.survived("soak: traffic, projector, reconciles and rebuilds")
