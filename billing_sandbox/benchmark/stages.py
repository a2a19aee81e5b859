"""The stages that are not a user's command: building the data, and the in-process figures that break the
whole commands down. Each runs in its own process (see `isolation`) and returns its figures."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from billing_domain.core.accounts import ACTIVE, AccountState
from billing_domain.core.events import AccountCredited, Event
from billing_domain.services.rebuild import RebuildSelection
from billing_domain.services.reconcile import ReconcileOptions, new_run_id
from billing_domain.services.run_reconciliation import ReconciliationRequest, run_reconciliation
from billing_domain.services.single import reconcile_entity
from billing_sandbox.benchmark.environment import BenchTarget
from billing_sandbox.simulate import SimulationConfig, simulate
from billing_sandbox.simulate.history import new_id

Figures = dict[str, Any]
CORRUPT_EVERY_BALANCE = "UPDATE billing.account_projection SET balance_minor = balance_minor + 1"


def simulate_stage(target: BenchTarget, accounts: int, days: int, seed: int) -> Figures:
    """A clean history (no faults), projections written in bulk as a caught-up projector holds them."""
    services = target.open()
    try:
        services.recon_store.migrate()
        config = SimulationConfig(seed=seed, accounts=accounts, days=days, faults=False, bulk_projections=True)
        began = time.perf_counter()
        manifest = simulate(services.event_store, services.projections, config)
        return {"seconds": time.perf_counter() - began, "counts": dict(manifest.counts),
                "history_end": manifest.history_end, "config": config.to_json()}
    finally:
        services.close()


def reconcile_stage(target: BenchTarget, full: bool) -> Figures:
    """What `billing-recon reconcile all` does, in this process, through the same use case (for
    benchmarks/profile_stages.py; the bench runs the command itself). `full=False` resumes from the checkpoint."""
    services = target.open()
    try:
        request = ReconciliationRequest(new_run_id("bench"), "bench", full=full, delta=True)
        t0 = time.perf_counter()
        run = run_reconciliation(services.run_stores(), request, ReconcileOptions())
        total = time.perf_counter() - t0
        report, outcome = run.report, run.outcome
        assert outcome is not None  # a whole-log run always has its replay
        report_bytes = len(report.to_json_bytes())
    finally:
        services.close()
    checkpoint_s = float(report.stats.get("checkpoint_s", 0.0))
    replay_s = sum(outcome.timings.values())
    diff_s = float(report.stats["diff_s"])
    seconds = total - checkpoint_s
    return {"seconds": seconds, "seconds_with_checkpoint": total, "replay_s": replay_s, "diff_s": diff_s,
            "save_report_s": seconds - replay_s - diff_s, "checkpoint_s": checkpoint_s,
            "replay_parts": dict(outcome.timings),
            "events_read": outcome.replay.events_read, "accounts": report.stats["accounts"],
            "transactions": report.stats["transactions"], "findings": len(report.findings),
            "finding_kinds": report.counts_by_kind(), "mode": outcome.mode, "mode_reason": outcome.mode_reason,
            "report_bytes": report_bytes, "events_per_s": outcome.replay.events_read / seconds}


def append_stage(target: BenchTarget, events: int, history_end: str, seed: int) -> Figures:
    """Append `events` valid deposits on random active accounts after the history, and project them."""
    services = target.open()
    try:
        rng = random.Random(seed)
        rows = services.projections.read_accounts()
        state = {k: r for k, r in sorted(rows.items()) if r.status == ACTIVE}
        ids = list(state)
        at = datetime.fromisoformat(history_end.replace("Z", "+00:00"))
        appended: list[Event] = []
        while len(appended) < events:
            row = state[rng.choice(ids)]
            amount = min(rng.randint(100, 10_000), row.max_balance_minor - row.balance_minor)
            if amount <= 0:
                continue
            at += timedelta(milliseconds=1)
            event = Event(new_id(rng), "AccountCredited", 1, "account", row.account_id, row.version + 1, at, None,
                          AccountCredited(amount, None, "deposit"))
            appended.append(event)
            state[row.account_id] = _credited(row, event, amount)
        began = time.perf_counter()
        services.event_store.append(appended)
        touched = {e.aggregate_id for e in appended}
        with services.projections.engine.begin() as conn:
            services.projections.upsert_accounts(conn, [state[i] for i in sorted(touched)])
        return {"events": len(appended), "accounts": len(touched), "seconds": time.perf_counter() - began}
    finally:
        services.close()


def _credited(row: AccountState, event: Event, amount: int) -> AccountState:
    return AccountState(row.account_id, row.owner_id, row.currency, row.balance_minor + amount,
                        row.min_balance_minor, row.max_balance_minor, row.status, event.aggregate_version,
                        event.event_id, event.occurred_at)


def single_stage(target: BenchTarget, sample: int, seed: int, warmup: int = 5) -> Figures:
    """`reconcile_entity` in one process on random accounts with the checkpoint present; latency of each call
    (the figure without the process start that `billing-recon reconcile account ID` pays)."""
    services = target.open()
    try:
        ids = sorted(services.projections.read_accounts())
        chosen = random.Random(seed).sample(ids, min(sample, len(ids)))
        latencies: list[float] = []
        modes: dict[str, int] = {}
        findings = 0
        for i, account_id in enumerate(chosen[:warmup] + chosen):
            began = time.perf_counter()
            report = reconcile_entity(services.event_store, services.projections, "account", account_id,
                                      checkpoints=services.checkpoints)
            elapsed = time.perf_counter() - began
            if i < warmup:
                continue
            latencies.append(elapsed)
            mode = str(report.stats.get("replay_mode"))
            modes[mode] = modes.get(mode, 0) + 1
            findings += len(report.findings)
    finally:
        services.close()
    ordered = sorted(latencies)
    return {"samples": len(latencies), "p50_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * ordered[max(0, round(0.95 * len(ordered)) - 1)], "max_ms": 1000 * ordered[-1],
            "mean_ms": 1000 * statistics.fmean(ordered), "modes": modes, "findings": findings,
            "warmup_calls": warmup, "account_ids": chosen}


def corrupt_balances_stage(target: BenchTarget) -> Figures:
    """Every account balance +1, so that a rebuild of all accounts has every row to write."""
    services = target.open()
    try:
        with services.projections.engine.begin() as conn:
            return {"corrupted": conn.exec_driver_sql(CORRUPT_EVERY_BALANCE).rowcount}
    finally:
        services.close()


def rebuild_stage(target: BenchTarget) -> Figures:
    """Corrupt every balance (+1), then rebuild all accounts for real in this process; its phases timed by
    wrapping them (the breakdown of the `rebuild accounts --all` command)."""
    from billing_domain.services import rebuild as rebuild_module

    services = target.open()
    phases: dict[str, list[float]] = {}
    try:
        with services.projections.engine.begin() as conn:
            corrupted = conn.exec_driver_sql(CORRUPT_EVERY_BALANCE).rowcount
        for name, phase in (("replay_all", "replay_s"), ("_write", "write_s"), ("_verify", "verify_s")):
            setattr(rebuild_module, name, _timed(getattr(rebuild_module, name), phase, phases))
        began = time.perf_counter()
        result = rebuild_module.rebuild(services.event_store, services.projections, services.recon_store,
                                        entity_type="account", selection=RebuildSelection(all=True), dry_run=False,
                                        reason="benchmark: every balance corrupted by +1", actor="billing-recon bench",
                                        checkpoints=services.checkpoints)  # as the CLI and the Dagster job do
        seconds = time.perf_counter() - began
    finally:
        services.close()
    outcomes: dict[str, int] = {}
    for value in result.outcome.values():
        outcomes[value] = outcomes.get(value, 0) + 1
    write_s = sum(phases.get("write_s", [0.0]))
    # replay_all runs twice: to plan, then inside _verify (so verify_s includes the second replay).
    timings = {"plan_replay_s": phases["replay_s"][0], "write_s": write_s, "verify_s": sum(phases.get("verify_s", [])),
               "verify_replay_s": sum(phases["replay_s"][1:])}
    timings["plan_and_audit_s"] = seconds - timings["plan_replay_s"] - write_s - timings["verify_s"]
    return {"seconds": seconds, "corrupted": corrupted, "written": result.written, "counts": result.counts(),
            "outcomes": outcomes, "rows_per_s": result.written / seconds, "phases": timings,
            "write_rows_per_s": result.written / write_s if write_s else 0.0}


def _timed(function: Callable[..., Any], phase: str, phases: dict[str, list[float]]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            phases.setdefault(phase, []).append(time.perf_counter() - began)
    return wrapper
