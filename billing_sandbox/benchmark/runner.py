"""Run every stage of one size in order, each in a fresh process, and gather the figures."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing_sandbox.benchmark import peers, stages
from billing_sandbox.benchmark.environment import PARTITIONS, bench_target, machine, uses_configured_servers
from billing_sandbox.benchmark.isolation import run_isolated
from billing_sandbox.benchmark.sizes import Size
from billing_sandbox.benchmark.targets import evaluate

Figures = dict[str, Any]
INCREMENT = 0.01  # the incremental run follows 1% more events
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
    say: Callable[[str], None] = field(default=lambda message: None)


def run_bench(options: BenchOptions) -> Figures:
    """Build the data, run the stages, evaluate the targets; write the JSON and PNG if asked."""
    size, seed, say = options.size, options.seed, options.say
    began = time.perf_counter()
    figures: Figures = {"size": size.name, "started_at": datetime.now(UTC).isoformat(), "machine": machine()}
    warning = embedded_broker_warning(size)
    if warning:
        say(warning)
    with bench_target(options.stack_dir, keep=options.keep, partitions=options.partitions) as target:
        say(f"simulating {size.accounts:,} accounts over {size.days} day(s) (clean, no faults)")
        simulated = run_isolated(stages.simulate_stage, target, size.accounts, size.days, seed)
        events = simulated["counts"]["events"]
        say(f"{events:,} events appended; the floor (read every message's bytes)")
        floor = run_isolated(stages.floor_stage, target)
        say("full reconciliation")
        full = run_isolated(stages.reconcile_stage, target, True)
        say(f"appending {INCREMENT:.0%} more events and projecting them")
        appended = run_isolated(stages.append_stage, target, max(1, round(events * INCREMENT)),
                                simulated["history_end"], seed)
        say("incremental reconciliation")
        incremental = run_isolated(stages.reconcile_stage, target, False)
        say(f"single-account reconcile x{options.single_sample}")
        single = run_isolated(stages.single_stage, target, options.single_sample, seed)
        say("peer: one account at a time")
        one_at_a_time = run_isolated(peers.one_at_a_time_stage, target, size.peer_sample, size.scan_sample, seed)
        say("peer: datacompy against our diff")
        datacompy = run_isolated(peers.diff_vs_datacompy_stage, target)
        say("rebuild of every account (all balances corrupted first)")
        rebuild = run_isolated(stages.rebuild_stage, target)
    figures |= {
        "dataset": {"events": events, "accounts": simulated["counts"]["accounts"],
                    "transactions": simulated["counts"]["transactions"], "faults": False,
                    "config": simulated["config"], "simulate_s": simulated["seconds"],
                    "nominal_events": size.nominal_events, "partitions_per_topic": target.partitions,
                    "appended_events": appended["events"],
                    "events_stored_at_single": events + appended["events"]},
        "floor": floor, "full": full, "append": appended, "incremental": incremental, "single": single,
        "rebuild": rebuild, "peers": {"one_at_a_time": one_at_a_time, "datacompy": datacompy},
        "peak_rss_bytes": {name: stage["peak_rss_bytes"] for name, stage in (
            ("simulate", simulated), ("floor", floor), ("full", full), ("append", appended),
            ("incremental", incremental), ("single", single), ("peer_one_at_a_time", one_at_a_time),
            ("peer_datacompy", datacompy), ("rebuild", rebuild))},
        "bench_s": time.perf_counter() - began,
    }
    figures["ratios"] = ratios(figures)
    figures["targets"] = evaluate(figures)
    if options.json_out:
        options.json_out.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    if options.png:
        from billing_sandbox.benchmark.chart import write_chart

        write_chart(figures, options.png)
    return figures


def embedded_broker_warning(size: Size) -> str | None:
    """Why this size should not run on the embedded stack, when it would; else None."""
    if size.nominal_events <= EMBEDDED_BROKER_SERVES or uses_configured_servers():
        return None
    return (f"warning: the embedded broker has not served {size.nominal_events:,} events in any try (the floor "
            "stalls for hours; docs/features/benchmark.md); set BILLING_KAFKA_BOOTSTRAP_SERVERS and "
            "BILLING_DATABASE_URL to run this size on Apache Kafka")


def ratios(figures: Figures) -> dict[str, float]:
    full_s = figures["full"]["seconds"]
    peer = figures["peers"]["one_at_a_time"]
    compare = figures["peers"]["datacompy"]
    return {
        "full_to_floor": full_s / figures["floor"]["seconds"],
        "full_with_checkpoint_to_floor": figures["full"]["seconds_with_checkpoint"] / figures["floor"]["seconds"],
        # like for like: both runs write their checkpoint, as `reconcile all` does
        "incremental_to_full": (figures["incremental"]["seconds_with_checkpoint"]
                                / figures["full"]["seconds_with_checkpoint"]),
        "speedup_vs_one_at_a_time_indexed": peer["indexed"]["extrapolated_s"] / full_s,
        "speedup_vs_one_at_a_time_scan": peer["scan"]["extrapolated_s"] / full_s if peer["scan"]["sample"] else 0.0,
        "datacompy_to_diff": compare["speedup"],
    }
