"""Profile the stages that miss their targets (cProfile, in one process), for the lead.

    python benchmarks/profile_stages.py --size small [--top 18]

Builds its own data (fresh database and topics), like the bench, then profiles: the full and the
incremental reconcile, single-account reconciles (also with `fetch.wait.max.ms` lowered, to show
the fixed wait at each partition's end), our account diff, and the rebuild of every account.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.core.diff import diff_accounts
from billing_domain.services.reconcile import replay_all
from billing_domain.services.single import reconcile_entity
from billing_sandbox.benchmark import SIZES
from billing_sandbox.benchmark.environment import bench_target
from billing_sandbox.benchmark.stages import append_stage, rebuild_stage, reconcile_stage, simulate_stage


def profiled(label: str, top: int, call: Callable[[], Any]) -> Any:
    profile = cProfile.Profile()
    began = time.perf_counter()
    result = profile.runcall(call)
    elapsed = time.perf_counter() - began
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        body = out.getvalue()
        sys.stdout.write(f"\n===== {label}: {elapsed:.3f} s (profiled), by {order} =====\n")
        sys.stdout.write(body[body.find("ncalls"):])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--top", type=int, default=18)
    args = parser.parse_args()
    size, top = SIZES[args.size], args.top
    with bench_target(Path(".billing-stack-bench").absolute()) as target:
        simulated = simulate_stage(target, size.accounts, size.days, 7)
        profiled("full reconcile (replay, diff, reports, checkpoint)", top, lambda: reconcile_stage(target, True))
        append_stage(target, max(1, round(simulated["counts"]["events"] * 0.01)), simulated["history_end"], 7)
        profiled("incremental reconcile", top, lambda: reconcile_stage(target, False))
        services = target.open()
        ids = sorted(services.projections.read_accounts())[:20]

        def singles(event_store: KafkaEventStore) -> list[float]:
            took = []
            for account_id in ids:
                began = time.perf_counter()
                reconcile_entity(event_store, services.projections, "account", account_id,
                                 checkpoints=services.checkpoints)
                took.append(time.perf_counter() - began)
            return took

        profiled("20 single-account reconciles", top, lambda: singles(services.event_store))
        for wait_ms in (500, 100, 10):
            store = KafkaEventStore(target.bootstrap_servers, target.topics, partitions=target.partitions,
                                    client_config={"fetch.wait.max.ms": wait_ms})
            sys.stdout.write(f"\nsingle-account p50 with fetch.wait.max.ms={wait_ms}: "
                             f"{1000 * statistics.median(singles(store)):.1f} ms\n")
        outcome = replay_all(services.event_store, services.projections)
        profiled("diff_accounts", top, lambda: diff_accounts(outcome.replay, outcome.account_rows))
        services.close()
        profiled("rebuild of every account", top, lambda: rebuild_stage(target))


if __name__ == "__main__":
    main()
