"""Run one size: the user's commands as whole processes beside the floor, and the stages that break them
down or compare them with the peers (each in a fresh process); gather the figures."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing_domain.config import stack_broker_setting
from billing_sandbox.benchmark import peers, stages
from billing_sandbox.benchmark.commands import Commands
from billing_sandbox.benchmark.environment import (
    PARTITIONS,
    BenchTarget,
    bench_target,
    machine,
    replay_engine_of,
    uses_configured_servers,
)
from billing_sandbox.benchmark.isolation import run_isolated
from billing_sandbox.benchmark.sizes import Size
from billing_sandbox.benchmark.targets import evaluate

Figures = dict[str, Any]
INCREMENT = 0.01  # the daily run follows 1% more events
START_RUNS = 5  # `python -c pass` and `billing-recon --help`: cheap, and they move by milliseconds
DEFAULT_STACK_DIR = Path(".billing-stack-bench").absolute()

# The largest size measured on the embedded Tansu broker; 10M events never got past the floor.
EMBEDDED_BROKER_SERVES = 1_000_000


@dataclass(frozen=True, slots=True)
class BenchOptions:
    size: Size
    json_out: Path | None = None
    png: Path | None = None
    seed: int = 7
    single_sample: int = 200
    stack_dir: Path = DEFAULT_STACK_DIR
    keep: bool = False  # keep the database and topics (and a stack started for the run)
    partitions: int = PARTITIONS  # per topic
    replay_engine: str | None = None  # BILLING_REPLAY_ENGINE for the commands (None: the environment's)
    say: Callable[[str], None] = field(default=lambda message: None)


def run_bench(options: BenchOptions) -> Figures:
    """Build the data, run the commands and stages, evaluate the targets; write the JSON and PNG if asked."""
    began = time.perf_counter()
    figures: Figures = {"size": options.size.name, "started_at": datetime.now(UTC).isoformat(),
                        "machine": machine(), "load_average": {"start": os.getloadavg()}}
    warning = embedded_broker_warning(options.size)
    if warning:
        options.say(warning)
    with bench_target(options.stack_dir, keep=options.keep, partitions=options.partitions) as target:
        target = replace(target, replay_engine=options.replay_engine)
        figures["replay_engine"] = replay_engine_of(target)
        figures |= measure(options, target)
    figures["bench_s"] = time.perf_counter() - began
    figures["load_average"]["end"] = os.getloadavg()  # the cores are shared: say how busy they were
    figures["peak_rss_bytes"] = peaks(figures)
    figures["ratios"] = ratios(figures)
    figures["targets"] = evaluate(figures)
    if options.json_out:
        options.json_out.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    if options.png:
        from billing_sandbox.benchmark.chart import write_chart

        write_chart(figures, options.png)
    return figures


def measure(options: BenchOptions, target: BenchTarget) -> Figures:
    """Every figure of one run, in an order where each finds the state it needs (the checkpoint, the +1%)."""
    size, seed, say = options.size, options.seed, options.say
    commands = Commands(target)
    say(f"simulating {size.accounts:,} accounts over {size.days} day(s) (clean, no faults)")
    simulated = run_isolated(stages.simulate_stage, target, size.accounts, size.days, seed)
    events = simulated["counts"]["events"]
    say(f"{events:,} events appended; the process start (python -c pass, billing-recon --help)")
    start = commands.python_start(START_RUNS)
    say(f"the floor, a whole process reading every event's bytes (x{size.floor_repeats})")
    floor = commands.floor(size.floor_repeats)
    say("the first run, no checkpoint yet: billing-recon reconcile all --json")
    first = commands.reconcile_all(full=False)
    say(f"billing-recon reconcile all --full --json (x{size.repeats})")
    full = commands.reconcile_all(full=True, times=size.repeats)
    say(f"appending {INCREMENT:.0%} more events and projecting them")
    appended = run_isolated(stages.append_stage, target, max(1, round(events * INCREMENT)),
                            simulated["history_end"], seed)
    say("the daily run: billing-recon reconcile all --json")
    daily = commands.reconcile_all(full=False)
    say(f"single account in one process x{options.single_sample}, then billing-recon reconcile account ID "
        f"x{size.command_sample}")
    single = run_isolated(stages.single_stage, target, options.single_sample, seed)
    single_command = commands.reconcile_accounts(single.pop("account_ids")[:size.command_sample])
    say("peers: one account at a time; datacompy (Pandas, Polars) against our diff")
    one_at_a_time = run_isolated(peers.one_at_a_time_stage, target, size.peer_sample, size.scan_sample, seed)
    datacompy = run_isolated(peers.diff_vs_datacompy_stage, target)
    say("rebuild of every account in one process (its phases), then billing-recon rebuild accounts --all")
    rebuild_phases = run_isolated(stages.rebuild_stage, target)
    corrupted = run_isolated(stages.corrupt_balances_stage, target)["corrupted"]
    rebuild = commands.rebuild_all_accounts() | {"corrupted": corrupted, "in_process": rebuild_phases}
    return {
        "dataset": {"events": events, "accounts": simulated["counts"]["accounts"],
                    "transactions": simulated["counts"]["transactions"], "faults": False,
                    "config": simulated["config"], "simulate_s": simulated["seconds"],
                    "nominal_events": size.nominal_events, "partitions_per_topic": target.partitions,
                    "appended_events": appended["events"], "events_stored_at_single": events + appended["events"]},
        "start": start, "floor": floor, "first_run": first, "full": full, "append": appended, "daily": daily,
        "single": {"command": single_command, "in_process": single}, "rebuild": rebuild,
        "peers": {"one_at_a_time": one_at_a_time, "datacompy": datacompy},
        "stage_peak_rss_bytes": {name: stage["peak_rss_bytes"] for name, stage in (
            ("simulate", simulated), ("append", appended), ("single_in_process", single),
            ("peer_one_at_a_time", one_at_a_time), ("peer_datacompy", datacompy),
            ("rebuild_in_process", rebuild_phases))},
    }


def embedded_broker_warning(size: Size) -> str | None:
    """Why this size should not run on the embedded stack, when it would; else None."""
    if size.nominal_events <= EMBEDDED_BROKER_SERVES or uses_configured_servers() or stack_broker_setting() == "kafka":
        return None
    return (f"warning: the embedded Tansu broker has not served {size.nominal_events:,} events in any try (the "
            "floor stalls for hours; docs/features/benchmark.md); run this size on Apache Kafka: "
            "BILLING_STACK_BROKER=kafka, or BILLING_KAFKA_BOOTSTRAP_SERVERS and BILLING_DATABASE_URL")


def peaks(figures: Figures) -> dict[str, int]:
    """The peak RSS of every whole command, as the OS counted it (the highest of a figure's runs)."""
    return {"floor": figures["floor"]["peak_rss_bytes"], "first_run": figures["first_run"]["peak_rss_bytes"],
            "full": figures["full"]["peak_rss_bytes"], "daily": figures["daily"]["peak_rss_bytes"],
            "reconcile_account": figures["single"]["command"]["peak_rss_bytes"],
            "rebuild": figures["rebuild"]["peak_rss_bytes"],
            "recon_help": figures["start"]["recon_help"]["peak_rss_bytes"]}


def ratios(figures: Figures) -> dict[str, float]:
    """Each whole command against the floor (or the full run); both sides whole processes of this run."""
    floor_s, full_s = figures["floor"]["wall_s"], figures["full"]["wall_s"]
    peer, compare = figures["peers"]["one_at_a_time"], figures["peers"]["datacompy"]
    return {
        "full_to_floor": full_s / floor_s,
        "first_run_to_floor": figures["first_run"]["wall_s"] / floor_s,
        "daily_to_full": figures["daily"]["wall_s"] / full_s,
        "speedup_vs_one_at_a_time_indexed": peer["indexed"]["extrapolated_s"] / full_s,
        "speedup_vs_one_at_a_time_scan": peer["scan"]["extrapolated_s"] / full_s if peer["scan"]["sample"] else 0.0,
        "datacompy_pandas_to_diff": compare["pandas"]["compare_s"] / compare["ours_s"],
        "datacompy_polars_to_diff": compare["polars"]["compare_s"] / compare["ours_s"],
    }
