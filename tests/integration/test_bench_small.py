"""The benchmark program runs end to end at the small size (the one CI runs) and reports every figure.

No timing assertions: only that each figure is there and the figures agree with each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from billing_cli.bench import results_table
from billing_sandbox.benchmark import SIZES, BenchOptions, run_bench

STAGES = ("simulate", "floor", "full", "append", "incremental", "single", "peer_one_at_a_time", "peer_datacompy",
          "rebuild")


@pytest.mark.slow
def test_the_bench_reports_every_figure_at_the_small_size(servers: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", servers.bootstrap_servers)
    monkeypatch.setenv("BILLING_DATABASE_URL", servers.database_url)
    json_out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    run_bench(BenchOptions(SIZES["small"], json_out=json_out, png=png, single_sample=20))

    f = json.loads(json_out.read_text())
    events, accounts = f["dataset"]["events"], f["dataset"]["accounts"]
    assert 100_000 <= events <= 140_000 and accounts == 10_000
    assert f["floor"]["messages"] == f["full"]["events_read"] == events
    assert f["full"]["mode"] == "full" and f["full"]["findings"] == 0
    appended = f["append"]["events"]
    assert appended == round(events * 0.01) == f["dataset"]["appended_events"]
    # The daily run after the append diffs only what changed (reconcile.delta).
    assert f["incremental"]["mode"] == "delta" and f["incremental"]["events_read"] == appended
    assert f["incremental"]["findings"] == 0
    assert f["single"]["samples"] == 20 and f["single"]["modes"] == {"incremental": 20}
    assert f["single"]["findings"] == 0 and f["single"]["p50_ms"] <= f["single"]["p95_ms"] <= f["single"]["max_ms"]
    assert f["rebuild"]["corrupted"] == f["rebuild"]["written"] == accounts
    assert f["rebuild"]["outcomes"] == {"fixed": accounts}
    peer = f["peers"]["one_at_a_time"]
    assert peer["accounts"] == accounts and peer["indexed"]["mismatches"] == peer["scan"]["mismatches"] == 0
    compare = f["peers"]["datacompy"]
    assert compare["datacompy_matches"] and compare["ours_findings"] == 0 and compare["rows"] == accounts
    assert set(compare["money_dtypes"].values()) == {"int64"}
    assert set(f["peak_rss_bytes"]) == set(STAGES) and all(v > 0 for v in f["peak_rss_bytes"].values())
    for name in ("full_to_floor", "incremental_to_full", "speedup_vs_one_at_a_time_indexed", "datacompy_to_diff"):
        assert f["ratios"][name] > 0
    assert f["ratios"]["full_to_floor"] == pytest.approx(f["full"]["seconds"] / f["floor"]["seconds"])
    assert f["full"]["seconds"] <= f["full"]["seconds_with_checkpoint"]
    figures = {row["figure"] for row in f["targets"]}
    assert {"full reconcile / floor", "incremental / full", "single account p50", "rebuild rows/s",
            "speedup vs one at a time (partition scan)", "diff: ours vs datacompy (accounts)",
            "peak RSS, full reconcile"} <= figures
    assert f["machine"]["nproc"] >= 1 and f["machine"]["cpu_model"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results_table(f).row_count == len(f["targets"])
