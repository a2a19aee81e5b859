"""`billing-recon bench`: the benchmark as a command (see billing_sandbox/benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from billing_domain.config import DEFAULT_TOPIC_PARTITIONS, REPLAY_ENGINES

SIZE_NAMES = ("tiny", "small", "medium", "large")
WHOLE_PROCESS_NOTE = ("Every headline figure is the command run as a whole process (wall time from outside, peak RSS "
                      "from the OS); the 'of which' rows are its own stage timings. A whole Python process cannot "
                      "meet the 20 ms single-account target: its start alone is above it (the process start row).")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    size: Annotated[str, typer.Option(help="tiny (~5k events), small (~100k), medium (~1M), large (~10M).")] = "small",
    json_out: Annotated[Path | None, typer.Option("--json-out", help="Write every figure as JSON.")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="Write a bar chart of seconds per stage.")] = None,
    seed: Annotated[int, typer.Option(help="The simulation's seed.")] = 7,
    stack_dir: Annotated[Path | None, typer.Option("--stack-dir", help="The embedded stack's folder.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the run's database and topics.")] = False,
    partitions: Annotated[int, typer.Option(
        min=1, help=f"Partitions per topic (the settings' default is {DEFAULT_TOPIC_PARTITIONS}).")
    ] = DEFAULT_TOPIC_PARTITIONS,
    replay_engine: Annotated[str | None, typer.Option(
        "--replay-engine", help="BILLING_REPLAY_ENGINE for the measured commands: aggregate or columnar "
        "(default: the environment's, else aggregate).")] = None,
) -> None:
    """Measure the user's commands as whole processes on a clean simulated history: full, first run, daily
    run, rebuild, single account, beside a bare-consume floor; peak RSS; two peers. Prints one table; not a test."""
    from billing_sandbox.benchmark import SIZES, BenchOptions, run_bench
    from billing_sandbox.benchmark.runner import DEFAULT_STACK_DIR

    if size not in SIZES:
        raise typer.BadParameter(f"--size must be one of {', '.join(SIZES)}")
    if replay_engine is not None and replay_engine not in REPLAY_ENGINES:
        raise typer.BadParameter(f"--replay-engine must be one of {', '.join(REPLAY_ENGINES)}")
    err = Console(stderr=True)
    options = BenchOptions(SIZES[size], json_out=json_out, png=png, seed=seed, keep=keep,
                           stack_dir=stack_dir or DEFAULT_STACK_DIR, partitions=partitions,
                           replay_engine=replay_engine,
                           say=lambda m: err.print(f"[dim]bench:[/] {m}"))
    figures = run_bench(options)
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a file or a pipe: keep each row on one line
    out.print(results_table(figures))
    out.print(WHOLE_PROCESS_NOTE, markup=False)


def results_table(figures: dict[str, Any]) -> Table:
    m = figures["machine"]
    engine = figures.get("replay_engine", "aggregate")
    table = Table(title=f"billing-recon bench --size {figures['size']}, {engine} replay "
                        f"({m['nproc']} cores, {m['cpu_model']})")
    for column in ("figure", "value", "target", "met?"):
        table.add_column(column)
    for row in figures["targets"]:
        table.add_row(row["figure"], row["value"], row["target"], met_text(row))
    return table


def met_text(row: dict[str, Any]) -> str:
    """yes/no where the target applies at this size; (yes)/(no), indicative, where it applies at another."""
    if row["met"] is not None:
        return "yes" if row["met"] else "NO"
    if row["indicative"] is not None:
        return "(yes)" if row["indicative"] else "(no)"
    return ""
