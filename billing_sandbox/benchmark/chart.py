"""The PNG: seconds per stage against the floor and the peers (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_chart(f: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peer, compare = f["peers"]["one_at_a_time"], f["peers"]["datacompy"]
    bars = [
        ("floor: read every event", f["floor"]["seconds"], "#888888"),
        ("full reconcile", f["full"]["seconds"], "#1f77b4"),
        ("full + checkpoint", f["full"]["seconds_with_checkpoint"], "#1f77b4"),
        ("incremental (+1%)", f["incremental"]["seconds_with_checkpoint"], "#1f77b4"),
        ("rebuild all accounts", f["rebuild"]["seconds"], "#1f77b4"),
        ("our diff (accounts)", compare["ours_s"], "#2ca02c"),
        ("datacompy compare", compare["datacompy_compare_s"], "#d62728"),
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
    axes.axvline(f["floor"]["seconds"], color="#888888", linestyle="--", linewidth=1)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
