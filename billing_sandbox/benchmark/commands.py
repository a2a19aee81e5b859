"""The user's commands, each run as a whole process on the run's servers, timed from outside (see processes).

`billing-recon` is the console script next to this interpreter, as a user runs it; the servers and
topics reach it through the environment (`BenchTarget.command_env`). The stage timings a command
prints in its `--json` stats become the breakdown of its figure: what the command's own clock saw,
and the rest (process start, imports, connecting, storing the report, printing) by difference.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billing_sandbox.benchmark.environment import BenchTarget
from billing_sandbox.benchmark.processes import CommandRun, repeated, run_command, summary

Figures = dict[str, Any]
ANSWERED = (0, 1)  # billing-recon: 0 clean, 1 findings or refusals; both are answers, 2 is an error
# The parts of a reconcile the command times itself (its report's stats), in the order they happen.
TIMED_PARTS = ("read_projections_s", "load_checkpoint_s", "read_tail_s", "replay_s", "diff_s", "checkpoint_s")
FLOOR_MODULE = "billing_sandbox.benchmark.floor"
# What a reconcile command imports before it reads a byte: the CLI, the composition root with its adapters
# (SQLAlchemy, confluent-kafka) and the use case. Not Alembic: on a database at the latest revisions the
# migration check is one query (ReconStore.migrate).
RECONCILE_IMPORTS = ("import billing_cli.app, billing_domain.bootstrap, billing_domain.services.run_reconciliation, "
                     "billing_domain.services.reconcile")


def recon_command() -> list[str]:
    """`billing-recon` as installed beside this interpreter, else the same app through `-m`."""
    script = Path(sys.executable).with_name("billing-recon")
    return [str(script)] if script.exists() else [sys.executable, "-m", "billing_cli.app"]


@dataclass(frozen=True, slots=True)
class Commands:
    """The commands of one benchmark run, bound to its servers and topics."""

    target: BenchTarget
    timeout_s: float = 3_600.0

    def run(self, argv: Sequence[str], accept: tuple[int, ...] = (0,)) -> CommandRun:
        return run_command(argv, env=self.target.command_env(), accept=accept, timeout_s=self.timeout_s)

    def recon(self, *args: str) -> CommandRun:
        return self.run([*recon_command(), *args], accept=ANSWERED)

    def python_start(self, times: int) -> Figures:
        """What a command pays before it does anything: the interpreter, our CLI, a reconcile's imports."""
        bare = [self.run([sys.executable, "-c", "pass"]) for _ in range(times)]
        helped = [self.run([*recon_command(), "--help"]) for _ in range(times)]
        imported = [self.run([sys.executable, "-c", RECONCILE_IMPORTS]) for _ in range(times)]
        return {"python_pass": summary(bare), "recon_help": summary(helped), "reconcile_imports": summary(imported)}

    def floor(self, times: int) -> Figures:
        """The bare consume of both topics as a whole process; `times` runs, the median."""
        runs = repeated([sys.executable, "-m", FLOOR_MODULE], times, env=self.target.command_env(),
                        timeout_s=self.timeout_s)
        read = [run.json() for run in runs]
        figures = summary(runs)
        return figures | {"messages": read[0]["messages"], "bytes": read[0]["bytes"],
                          "read_s": statistics.median(r["read_s"] for r in read),
                          "events_per_s": read[0]["messages"] / figures["wall_s"]}

    def reconcile_all(self, *, full: bool, times: int = 1) -> Figures:
        """`billing-recon reconcile all [--full] --json`, `times` runs; the breakdown is the median run's."""
        args = ["reconcile", "all", "--json", *(["--full"] if full else [])]
        runs = [self.recon(*args) for _ in range(times)]
        middle = sorted(runs, key=lambda run: run.wall_s)[(len(runs) - 1) // 2]
        return summary(runs) | {"command": f"billing-recon {' '.join(args)}"} | report_figures(middle)

    def reconcile_accounts(self, account_ids: Sequence[str]) -> Figures:
        """`billing-recon reconcile account ID --json`, one whole process per account."""
        runs = [self.recon("reconcile", "account", account_id, "--json") for account_id in account_ids]
        reports = [run.json() for run in runs]
        modes: dict[str, int] = {}
        for report in reports:
            mode = str(report["stats"].get("replay_mode"))
            modes[mode] = modes.get(mode, 0) + 1
        walls = sorted(run.wall_s for run in runs)
        return summary(runs) | {"samples": len(runs), "p50_ms": 1000 * statistics.median(walls),
                                "p95_ms": 1000 * walls[max(0, round(0.95 * len(walls)) - 1)],
                                "max_ms": 1000 * walls[-1], "modes": modes,
                                "findings": sum(report["summary"]["total"] for report in reports)}

    def rebuild_all_accounts(self) -> Figures:
        """`billing-recon rebuild accounts --all --reason bench --json`; rows/s from the rows it says it wrote."""
        args = ["rebuild", "accounts", "--all", "--reason", "bench", "--operator", "billing-recon bench", "--json"]
        run = self.recon(*args)
        result = run.json()
        outcomes: dict[str, int] = {}
        for value in result["outcome"].values():
            outcomes[value] = outcomes.get(value, 0) + 1
        return run.figures() | {"command": f"billing-recon {' '.join(args)}", "written": result["written"],
                                "counts": result["counts"], "outcomes": outcomes,
                                "rows_per_s": result["written"] / run.wall_s}


def report_figures(run: CommandRun) -> Figures:
    """What a reconcile command's JSON report says of itself, and its stage timings as the breakdown."""
    report = run.json()
    stats = report["stats"]
    parts = {name: float(stats[name]) for name in TIMED_PARTS if name in stats}
    # What the command's own clock did not see: process start, imports, connecting, storing the report
    # and its lifecycle, printing the JSON.
    parts["rest_s"] = run.wall_s - sum(parts.values())
    return {"breakdown": parts, "events_read": stats["events_read"], "mode": stats["replay_mode"],
            "mode_reason": stats.get("replay_mode_reason"), "accounts": stats["accounts"],
            "transactions": stats["transactions"], "findings": report["summary"]["total"],
            "checkpoint_rows_written": stats.get("checkpoint_rows_written", 0), "report_bytes": len(run.stdout),
            "events_per_s": stats["events_read"] / run.wall_s}
