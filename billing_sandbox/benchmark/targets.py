"""The figures the table shows, each with its target where there is one.

A target names the size it applies to; at other sizes it is still evaluated, shown in
parentheses as indicative only (`met` is then None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Figures = dict[str, Any]
GIB = 1024**3
MEDIUM_UP = ("medium", "large")
ALL = ("tiny", "small", "medium", "large")


def evaluate(f: Figures) -> list[dict[str, Any]]:
    """One row per figure: {figure, value, target, met, indicative}; `met` is None without a target."""
    rows: list[dict[str, Any]] = []
    size = f["size"]

    def row(figure: str, value: str, target: str = "", ok: bool | None = None,
            applies: tuple[str, ...] = ALL) -> None:
        binding = size in applies
        rows.append({"figure": figure, "value": value, "target": target,
                     "met": ok if binding else None, "indicative": ok if (target and not binding) else None})

    d, r, full, inc = f["dataset"], f["ratios"], f["full"], f["incremental"]
    floor, single, rebuild = f["floor"], f["single"], f["rebuild"]
    peer, compare = f["peers"]["one_at_a_time"], f["peers"]["datacompy"]
    row("events / accounts / transfers", f"{d['events']:,} / {d['accounts']:,} / {d['transactions']:,}")
    row("floor: read every event's bytes", f"{floor['seconds']:.2f} s ({floor['events_per_s']:,.0f} ev/s, "
        f"{floor['bytes'] / 2**20:,.0f} MiB)")
    row("full reconcile (replay, diff, reports)", f"{full['seconds']:.2f} s ({full['events_per_s']:,.0f} ev/s)")
    limit = 2.0 if size == "large" else 1.5
    row("full reconcile / floor", f"{r['full_to_floor']:.2f}x", f"<= {limit}x",
        r["full_to_floor"] <= limit, MEDIUM_UP)
    row("  + checkpoint write", f"{full['seconds_with_checkpoint']:.2f} s ({r['full_with_checkpoint_to_floor']:.2f}x "
        "floor)")
    row("incremental after +1% events (with checkpoint)",
        f"{inc['seconds_with_checkpoint']:.2f} s ({inc['events_read']:,} events, {inc['mode']})")
    row("incremental / full", f"{r['incremental_to_full']:.1%}", "<= 10%", r["incremental_to_full"] <= 0.10)
    row("single account p50", f"{single['p50_ms']:.1f} ms", "<= 50 ms", single["p50_ms"] <= 50, MEDIUM_UP)
    row("single account p95", f"{single['p95_ms']:.1f} ms")
    row("rebuild all accounts", f"{rebuild['written']:,} rows in {rebuild['seconds']:.2f} s")
    row("rebuild rows/s", f"{rebuild['rows_per_s']:,.0f}", ">= 50,000", rebuild["rows_per_s"] >= 50_000, MEDIUM_UP)
    row("  of which the guarded write, rows/s", f"{rebuild['write_rows_per_s']:,.0f}")
    row("peer, one at a time (indexed), per account", f"{peer['indexed']['per_account_ms']:.2f} ms "
        f"(n={peer['indexed']['sample']}), all accounts ~{peer['indexed']['extrapolated_s']:,.0f} s (extrapolated)")
    speedup = r["speedup_vs_one_at_a_time_indexed"]
    row("speedup vs one at a time (indexed: lower bound of the peer)", f"{speedup:,.1f}x", ">= 50x", speedup >= 50,
        MEDIUM_UP)
    if peer["scan"]["sample"]:
        row("peer, one at a time (partition scan), per account", f"{peer['scan']['per_account_ms']:,.0f} ms "
            f"(n={peer['scan']['sample']}), all ~{peer['scan']['extrapolated_s']:,.0f} s (extrapolated)")
        scan = r["speedup_vs_one_at_a_time_scan"]
        row("speedup vs one at a time (partition scan)", f"{scan:,.0f}x", ">= 50x", scan >= 50, MEDIUM_UP)
    row("diff: ours vs datacompy (accounts)", f"{compare['ours_s'] * 1000:,.0f} ms vs "
        f"{compare['datacompy_compare_s'] * 1000:,.0f} ms (+ report {compare['datacompy_report_s'] * 1000:,.0f} ms)",
        "ours faster", compare["ours_s"] < compare["datacompy_compare_s"])
    _memory_rows(f, row, size)
    return rows


def _memory_rows(f: Figures, row: Callable[..., None], size: str) -> None:
    rss = f["peak_rss_bytes"]
    row("peak RSS, full reconcile", _mib(rss["full"]), "<= 3 GiB", rss["full"] <= 3 * GIB, ("large",))
    row("peak RSS, other stages", ", ".join(f"{name} {_mib(value)}" for name, value in rss.items() if name != "full"))
    if size == "large":
        row("10M events / 1M accounts completes", "yes", "completes", True, ("large",))


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"
