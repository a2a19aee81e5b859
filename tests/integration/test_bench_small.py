"""The benchmark program runs end to end at the small size (the one CI runs) and reports every figure.

No timing assertions: only that each figure is there, comes from whole processes where it should,
and that the figures agree with each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from billing_cli.bench import results_table
from billing_sandbox.benchmark import SIZES, BenchOptions, run_bench

WHOLE_COMMANDS = ("floor", "first_run", "full", "daily", "reconcile_account", "rebuild", "recon_help")
STAGES = ("simulate", "append", "single_in_process", "peer_one_at_a_time", "peer_datacompy", "rebuild_in_process")
HEADLINES = ("`reconcile all --full`, whole command", "first run, no checkpoint (incl. its write), whole command",
             "daily run after +1% events (`reconcile all`), whole command", "`rebuild accounts --all`, whole command",
             "`reconcile account ID`, whole process (n=20)", "peak RSS, `reconcile all --full`",
             "diff stage vs datacompy Pandas / Polars compare (accounts, same frames)")


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
    _check_whole_commands(f, events)
    _check_reconciles(f, events)
    _check_single_and_rebuild(f, accounts)
    _check_peers(f, accounts)
    _check_table(f)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_whole_commands(f: dict[str, Any], events: int) -> None:
    assert set(f["peak_rss_bytes"]) == set(WHOLE_COMMANDS) and all(v > 0 for v in f["peak_rss_bytes"].values())
    assert set(f["stage_peak_rss_bytes"]) == set(STAGES)
    start, floor = f["start"], f["floor"]
    assert all(start[name]["runs"] == 5 for name in ("python_pass", "recon_help", "reconcile_imports"))
    # Importing what a reconcile imports starts Python and then some.
    assert start["reconcile_imports"]["wall_s"] > start["python_pass"]["wall_s"]
    assert floor["runs"] == SIZES["small"].floor_repeats and floor["messages"] == events
    # A whole process: its wall time holds its own reading, and its start.
    assert floor["wall_s"] > floor["read_s"] > 0 and floor["wall_s"] > start["python_pass"]["wall_s"]
    assert f["full"]["runs"] == SIZES["small"].repeats and f["first_run"]["runs"] == f["daily"]["runs"] == 1
    for name in ("floor", "first_run", "full", "daily"):
        figure = f[name]
        assert figure["returncodes"] == [0] and len(figure["runs_s"]) == figure["runs"]
        assert min(figure["runs_s"]) <= figure["wall_s"] <= max(figure["runs_s"])


def _check_reconciles(f: dict[str, Any], events: int) -> None:
    first, full, daily = f["first_run"], f["full"], f["daily"]
    assert first["mode"] == "full" and "no checkpoint" in first["mode_reason"]
    assert full["mode"] == "full" and first["events_read"] == full["events_read"] == events
    assert first["findings"] == full["findings"] == daily["findings"] == 0
    appended = f["append"]["events"]
    assert appended == round(events * 0.01) == f["dataset"]["appended_events"]
    # The daily run after the append diffs only what changed (reconcile.delta).
    assert daily["mode"] == "delta" and daily["events_read"] == appended
    for figure in (first, full, daily):
        parts = figure["breakdown"]
        assert {"replay_s", "diff_s", "checkpoint_s", "rest_s"} <= set(parts)
        # The parts are the command's own stage timings plus the rest: together its whole wall time.
        assert sum(parts.values()) == pytest.approx(figure["wall_s"])
        assert parts["rest_s"] > 0 and parts["checkpoint_s"] > 0
    assert first["checkpoint_rows_written"] >= daily["checkpoint_rows_written"] > 0
    r = f["ratios"]
    assert r["full_to_floor"] == pytest.approx(full["wall_s"] / f["floor"]["wall_s"])
    assert r["first_run_to_floor"] == pytest.approx(first["wall_s"] / f["floor"]["wall_s"])
    assert r["daily_to_full"] == pytest.approx(daily["wall_s"] / full["wall_s"])


def _check_single_and_rebuild(f: dict[str, Any], accounts: int) -> None:
    command, in_process = f["single"]["command"], f["single"]["in_process"]
    assert command["samples"] == SIZES["small"].command_sample and command["returncodes"] == [0]
    assert in_process["samples"] == 20 and in_process["modes"] == {"incremental": 20}
    assert command["modes"] == {"incremental": command["samples"]}
    assert command["findings"] == in_process["findings"] == 0
    for figure in (command, in_process):
        assert figure["p50_ms"] <= figure["p95_ms"] <= figure["max_ms"]
    rebuild = f["rebuild"]
    assert rebuild["returncode"] == 0 and rebuild["corrupted"] == rebuild["written"] == accounts
    assert rebuild["outcomes"] == {"fixed": accounts} and rebuild["in_process"]["outcomes"] == {"fixed": accounts}
    assert rebuild["rows_per_s"] == pytest.approx(accounts / rebuild["wall_s"])


def _check_peers(f: dict[str, Any], accounts: int) -> None:
    peer = f["peers"]["one_at_a_time"]
    assert peer["accounts"] == accounts and peer["indexed"]["mismatches"] == peer["scan"]["mismatches"] == 0
    compare = f["peers"]["datacompy"]
    assert compare["ours_findings"] == 0 and compare["rows"] == accounts
    for library in ("pandas", "polars"):
        assert compare[library]["matches"] and compare[library]["compare_s"] > 0
        assert set(compare[library]["money_dtypes"].values()) == {"int64"}  # money never a float column


def _check_table(f: dict[str, Any]) -> None:
    rows = {row["figure"]: row for row in f["targets"]}
    assert set(HEADLINES) <= set(rows)
    assert all(rows[name]["target"] for name in HEADLINES)
    # At small every target but the diff's is another size's: shown as an indication, not as met.
    assert rows["diff stage vs datacompy Pandas / Polars compare (accounts, same frames)"]["met"] is not None
    assert rows["`reconcile all --full`, whole command"]["met"] is None
    assert rows["`reconcile all --full`, whole command"]["indicative"] is not None
    assert any("cannot meet 20 ms" in name for name in rows)
    assert f["machine"]["nproc"] >= 1 and f["machine"]["cpu_model"]
    assert len(f["load_average"]["start"]) == len(f["load_average"]["end"]) == 3  # the shared cores' load, said
    assert results_table(f).row_count == len(f["targets"])
