"""The PNG: seconds of each whole command against the floor and the peers (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_chart(f: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peer, compare = f["peers"]["one_at_a_time"], f["peers"]["datacompy"]
    bars = [  # whole processes, timed from outside
        ("python -c pass", f["start"]["python_pass"]["wall_s"], "#888888"),
        ("billing-recon --help", f["start"]["recon_help"]["wall_s"], "#888888"),
        ("floor: bare consume", f["floor"]["wall_s"], "#888888"),
        ("reconcile all --full", f["full"]["wall_s"], "#1f77b4"),
        ("first run (incl. checkpoint)", f["first_run"]["wall_s"], "#1f77b4"),
        ("daily run after +1%", f["daily"]["wall_s"], "#1f77b4"),
        ("rebuild accounts --all", f["rebuild"]["wall_s"], "#1f77b4"),
        ("reconcile account ID, p50", f["single"]["command"]["p50_ms"] / 1000, "#1f77b4"),
        # stages in one process, on the same frames
        ("our diff (accounts)", compare["ours_s"], "#2ca02c"),
        ("datacompy Pandas compare", compare["pandas"]["compare_s"], "#d62728"),
        ("datacompy Polars compare", compare["polars"]["compare_s"], "#d62728"),
        ("one at a time, indexed (extrap.)", peer["indexed"]["extrapolated_s"], "#d62728"),
    ]
    if peer["scan"]["sample"]:
        bars.append(("one at a time, scan (extrap.)", peer["scan"]["extrapolated_s"], "#d62728"))
    labels, seconds, colours = zip(*bars, strict=True)
    figure, axes = plt.subplots(figsize=(10, 0.5 * len(bars) + 1.5))
    positions = range(len(bars))
    axes.barh(list(positions), seconds, color=colours)
    axes.set_yticks(list(positions), labels)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlim(right=max(seconds) * 8)  # room for the value labels
    axes.set_xlabel("seconds (log scale)")
    d = f["dataset"]
    axes.set_title(f"billing-recon bench --size {f['size']}: {d['events']:,} events, {d['accounts']:,} accounts")
    for y, value in zip(positions, seconds, strict=True):
        axes.text(value, y, f" {value:,.2f} s", va="center", fontsize=8)
    axes.axvline(f["floor"]["wall_s"], color="#888888", linestyle="--", linewidth=1)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
