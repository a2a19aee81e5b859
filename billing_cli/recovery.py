"""`billing-recon` commands for saga recovery, the finding lifecycle and the shadow rebuild.

    billing-recon recover-sagas [--ids ...] [--execute | --plan AUDIT_ID] --reason TEXT [--json]
    billing-recon findings list [--status open] [--json]
    billing-recon findings ack ENTITY_TYPE ENTITY_ID KIND --note TEXT --operator NAME [--accept]
    billing-recon findings sync
    billing-recon shadow-rebuild --reason TEXT [--approve] [--delete-orphans] [--json]

Registered by `billing_cli.app`; same exit codes: 0 clean, 1 refusals or findings, 2 error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from billing_cli.support import (
    EXIT_CLEAN,
    EXIT_FINDINGS,
    ActorOption,
    JsonOption,
    ReasonOption,
    cli_services,
    counts_text,
    err,
    id_list,
    minutes_option,
)
from billing_domain.core.exceptions import ConcurrentOperationError
from billing_domain.core.lifecycle import STATUSES
from billing_domain.core.operators import from_cli

if TYPE_CHECKING:  # the services are imported by the commands that run them (`--help` stays fast)
    from billing_domain.services.saga_recovery import RecoveryPlan

SHOWN_ROWS = 1_000  # `findings list` prints at most this many (the first in attention order); --json has them all
ALL_ROWS = 10_000_000  # read every row: the order is decided here, not by the store's first-seen order
findings_app = typer.Typer(help="The finding lifecycle: new, open, escalated, acknowledged, accepted, resolved.",
                           no_args_is_help=True)


@contextmanager
def _refusal_exits_1() -> Iterator[None]:
    """Another recovery or rebuild holds the lock: a refusal of this request (exit 1), not an error of the tool."""
    try:
        yield
    except ConcurrentOperationError as exc:
        err.print(f"refused: {exc}")
        raise typer.Exit(EXIT_FINDINGS) from exc


def _write_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


# --- recover-sagas ----------------------------------------------------------------------------------
def recover_sagas(reason: ReasonOption,
                  ids: Annotated[list[str] | None, typer.Option("--ids", help="Repeat or comma-separate.")] = None,
                  execute: Annotated[bool, typer.Option("--execute", help="Append the plan's events.")] = False,
                  plan_audit: Annotated[int | None, typer.Option("--plan", min=1, help="Execute the plan a dry run "
                                                                             "stored under this audit id.")] = None,
                  max_sagas: Annotated[int | None, typer.Option("--max", min=1, help="At most this many sagas.")]
                  = None,
                  stuck_minutes: Annotated[float | None, minutes_option("--stuck-minutes", "Stuck threshold.")] = None,
                  actor: ActorOption = "", as_json: JsonOption = False) -> None:
    """Resolve stuck transfers: show the plan (default), or append it with --execute (re-read first)."""
    from billing_domain.services.saga_recovery import execute_plan, load_plan, plan_recovery

    chosen = list(id_list(ids) or ())  # --ids given but empty is an error, not every stuck saga
    with cli_services() as services, _refusal_exits_1():
        operator = from_cli(actor)  # a blank --operator is an error (exit 2), like every bad option
        minutes = stuck_minutes if stuck_minutes is not None else services.settings.stuck_after_minutes
        if plan_audit is not None:
            plan = load_plan(services.recon_store, plan_audit)
        else:
            plan = plan_recovery(services.event_store, services.projections, services.recon_store, reason=reason,
                                 operator=operator, ids=chosen, max_sagas=max_sagas,
                                 stuck_after=timedelta(minutes=minutes))
        if not execute and plan_audit is None:
            _print_plan(plan, as_json, executed=False, appended=0, audit_id=plan.audit_id)
            raise typer.Exit(EXIT_FINDINGS if any(a.action == "refused" for a in plan.actions) else EXIT_CLEAN)
        result = execute_plan(services.event_store, services.projections, services.recon_store, plan,
                              reason=reason, operator=operator)
        _print_plan(plan, as_json, executed=True, appended=result.appended, audit_id=result.audit_id)
        raise typer.Exit(EXIT_FINDINGS if result.refused else EXIT_CLEAN)


def _print_plan(plan: RecoveryPlan, as_json: bool, *, executed: bool, appended: int, audit_id: int | None) -> None:
    if as_json:
        _write_json(plan.to_json() | {"executed": executed, "appended": appended, "audit_id": audit_id})
        return
    mode = "executed" if executed else "plan (dry run; --execute to append)"
    sys.stdout.write(f"saga recovery {mode}, cut at {plan.cut_time}, audit #{audit_id}: "
                     f"{counts_text(plan.counts(), empty='no stuck transfer')}; {appended} event(s) appended\n")
    for a in plan.actions:
        events = ", ".join(f"{e.event_type} {e.aggregate_id} v{e.aggregate_version}" for e in a.appends)
        sys.stdout.write(f"  {a.transaction_id}: {a.action} ({a.reason}){' -> ' + events if events else ''}"
                         f"{' [' + a.outcome + ']' if a.outcome else ''}\n")


# --- findings ---------------------------------------------------------------------------------------
@findings_app.command("list")
def findings_list(status: Annotated[str | None, typer.Option(help=f"One of {', '.join(STATUSES)}.")] = None,
                  as_json: JsonOption = False) -> None:
    """Findings by identity across runs, new and critical first: by status (new, escalated, open, acknowledged,
    accepted, resolved), then severity, then the longest open (the newest full run is applied first if it was not
    yet)."""
    from billing_domain.services.lifecycle import by_attention, list_findings, sync_latest

    with cli_services() as services:
        sync_latest(services.recon_store)
        rows = by_attention(list_findings(services.recon_store, status, limit=ALL_ROWS))
        if as_json:
            _write_json([r.to_json() for r in rows])
            return
        for r in rows[:SHOWN_ROWS]:
            note = f" — {r.operator}: {r.note}" if r.note else ""
            sys.stdout.write(f"{r.status:<12} {r.severity:<8} {r.entity_type}/{r.entity_id}/{r.kind} "
                             f"first {r.first_seen_at:%Y-%m-%d %H:%M} ({r.days_open:g} d), seen {r.runs_seen}x"
                             f"{note}\n")
        more = f"; the first {SHOWN_ROWS:,} shown (--status narrows, --json has all)" if len(rows) > SHOWN_ROWS else ""
        sys.stdout.write(f"{len(rows):,} finding(s){more}\n")


@findings_app.command("ack")
def findings_ack(entity_type: str, entity_id: str, kind: str,
                 note: Annotated[str, typer.Option("--note", help="Why (kept with the finding).")],
                 operator: Annotated[str, typer.Option("--operator", help="Who acknowledges.")],
                 accept: Annotated[bool, typer.Option("--accept", help="Accept: known, tolerated, never alerted.")]
                 = False, as_json: JsonOption = False) -> None:
    """Acknowledge (or --accept) one open finding, with a note and your name."""
    from billing_domain.services.lifecycle import acknowledge, sync_latest

    with cli_services() as services:
        sync_latest(services.recon_store)
        [row] = acknowledge(services.recon_store, [(entity_type, entity_id, kind)], note=note, operator=operator,
                            accept=accept)
        if as_json:
            _write_json(row.to_json())
        else:
            sys.stdout.write(f"{row.entity_type}/{row.entity_id}/{row.kind}: {row.status} by {row.operator}\n")


@findings_app.command("sync")
def findings_sync() -> None:
    """Apply the newest full reconciliation to the lifecycle (the daily job does this itself)."""
    from billing_domain.services.lifecycle import sync_latest

    with cli_services() as services:
        update = sync_latest(services.recon_store)
        if update is None:
            sys.stdout.write("no full run to apply\n")
        else:
            statuses = counts_text(update.counts(), empty="no finding") if update.statuses or update.applied else ""
            done = "applied" if update.applied else update.reason  # "already applied", "a newer run is ..."
            sys.stdout.write(f"{update.run_id}: {done}{'; ' + statuses if statuses else ''}\n")


# --- shadow-rebuild ---------------------------------------------------------------------------------
def shadow_rebuild_command(reason: ReasonOption,
                           approve: Annotated[bool, typer.Option("--approve", help="Swap the shadow in.")] = False,
                           delete_orphans: Annotated[bool, typer.Option("--delete-orphans")] = False,
                           actor: ActorOption = "", as_json: JsonOption = False) -> None:
    """Rebuild every projection into shadow tables and show the diff; --approve swaps it in (version-guarded)."""
    from billing_domain.services.shadow_rebuild import diff_markdown, shadow_rebuild

    with cli_services() as services, _refusal_exits_1():
        result = shadow_rebuild(services.event_store, services.projections, services.recon_store, reason=reason,
                                operator=from_cli(actor), approve=approve, delete_orphans=delete_orphans)
        if as_json:
            _write_json(result.to_json())
        else:
            sys.stdout.write(f"shadow rebuild {'swapped' if approve else 'diff (dry run; --approve to swap)'}, "
                             f"audit #{result.audit_id}\n{diff_markdown(result)}\n")
        raise typer.Exit(EXIT_FINDINGS if result.remaining else EXIT_CLEAN)


def register(app: typer.Typer) -> None:
    app.command("recover-sagas")(recover_sagas)
    app.command("shadow-rebuild")(shadow_rebuild_command)
    app.add_typer(findings_app, name="findings")
