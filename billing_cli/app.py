"""`billing-recon`: the original engine's admin endpoints as commands, over the same services
the Dagster jobs call.

Exit codes a script can use: 0 clean, 1 findings (or refusals), 2 error.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer

from billing_cli import api, bench, engine, point_in_time, projector_lag, recovery, security
from billing_cli.support import (
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_FINDINGS,
    ActorOption,
    ErrorPathGroup,
    JsonOption,
    ReasonOption,
    cli_services,
    err,
    id_list,
    minutes_option,
    progress_bar,
)
from billing_domain.core.row_diff import changed_columns

if TYPE_CHECKING:  # each command imports what it runs in its body: `--help` starts without the adapters
    from billing_domain.bootstrap import Services
    from billing_domain.core.findings import ReconciliationReport
    from billing_domain.services.rebuild import RebuildResult, RebuildSelection
    from billing_domain.services.reconcile import ProgressCallback
    from billing_domain.services.run_reconciliation import ReconciliationRequest

app = typer.Typer(help="Reconcile and repair the billing engine's projections.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=ErrorPathGroup)
reconcile_app = typer.Typer(help="Compare projections with the events.", no_args_is_help=True)
rebuild_app = typer.Typer(help="Rebuild projections from the events (guarded, audited).", no_args_is_help=True)
stack_app = typer.Typer(help="The embedded PostgreSQL and broker.", no_args_is_help=True)
app.add_typer(reconcile_app, name="reconcile")
app.add_typer(rebuild_app, name="rebuild")
app.add_typer(stack_app, name="stack")
FullOption = Annotated[bool, typer.Option("--full", help="Replay the whole log, not just since the checkpoint.")]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _size(services: Services, full: bool) -> tuple[int | None, bool]:
    """The progress bar's total: about the whole log for a full replay; unknown when resuming."""
    from billing_domain.adapters.kafka.offsets import estimated_cut_size

    return (estimated_cut_size(services.event_store), True) if full else (None, False)


def _reconcile(services: Services, request: ReconciliationRequest, progress: ProgressCallback | None = None,
               **overrides: Any) -> ReconciliationReport:
    """The use case every reconcile command runs: replay, report, then store report, lifecycle, checkpoint."""
    from billing_domain.services.reconcile import ReconcileOptions
    from billing_domain.services.run_reconciliation import run_reconciliation

    options = ReconcileOptions.from_settings(services.settings, **overrides)
    return run_reconciliation(services.run_stores(), request, options, progress=progress).report


def _show(report: ReconciliationReport, as_json: bool) -> None:
    from billing_cli.report_text import render_report

    if as_json:
        sys.stdout.write(report.to_json_bytes().decode() + "\n")
    else:
        sys.stdout.write(render_report(report))
    raise typer.Exit(EXIT_CLEAN if report.is_clean else EXIT_FINDINGS)


# --- reconcile ---------------------------------------------------------------------------------------
@reconcile_app.command("accounts")
def reconcile_accounts(as_json: JsonOption = False, full: FullOption = False) -> None:
    """Every account against one cut of the log (and the ledger identities)."""
    _reconcile_scope("accounts", ("account", "ledger"), as_json, full=full)


@reconcile_app.command("transactions")
def reconcile_transactions(as_json: JsonOption = False, full: FullOption = False,
                           stuck_minutes: Annotated[float | None, minutes_option(
                               "--stuck-minutes", "Stuck threshold.")] = None) -> None:
    """Every transfer saga: status, fields, stuck transfers, money per transfer."""
    stuck_after = None if stuck_minutes is None else timedelta(minutes=stuck_minutes)
    _reconcile_scope("transactions", ("transaction",), as_json, full=full, stuck_after=stuck_after)


@reconcile_app.command("all")
def reconcile_everything(as_json: JsonOption = False, full: FullOption = False) -> None:
    """Accounts, transactions and the accounting equation in one pass."""
    from billing_domain.services.reconcile import ALL_ENTITY_TYPES

    _reconcile_scope("all", ALL_ENTITY_TYPES, as_json, full=full, delta=True)


def _reconcile_scope(scope: str, entity_types: tuple[str, ...], as_json: bool, *, full: bool = False,
                     delta: bool = False, stuck_after: timedelta | None = None) -> None:
    from billing_domain.services.reconcile import new_run_id
    from billing_domain.services.run_reconciliation import ReconciliationRequest

    label = "reconciling" if scope == "all" else f"reconciling {scope}"
    with cli_services() as services, progress_bar(label, as_json, *_size(services, full)) as progress:
        request = ReconciliationRequest(new_run_id(), "cli", scope, entity_types, full=full, delta=delta)
        overrides = {} if stuck_after is None else {"stuck_after": stuck_after}
        _show(_reconcile(services, request, progress, **overrides), as_json)


@reconcile_app.command("account")
def reconcile_one_account(account_id: str, as_json: JsonOption = False) -> None:
    """One account: its events against its projection row."""
    _reconcile_one("account", account_id, as_json)


@reconcile_app.command("transaction")
def reconcile_one_transaction(transaction_id: str, as_json: JsonOption = False) -> None:
    """One transfer saga: its events against its projection row."""
    _reconcile_one("transaction", transaction_id, as_json)


def _reconcile_one(entity_type: str, entity_id: str, as_json: bool) -> None:
    from billing_domain.services.reconcile import new_run_id
    from billing_domain.services.run_reconciliation import ReconciliationRequest

    with cli_services() as services:
        request = ReconciliationRequest(new_run_id(), "cli", f"{entity_type}:{entity_id}", (entity_type,),
                                        entity=(entity_type, entity_id))
        _show(_reconcile(services, request), as_json)


@app.command("accounting-equation")
def accounting_equation(as_json: JsonOption = False) -> None:
    """The contract's accounting identities, per currency."""
    from rich.console import Console

    from billing_cli.report_text import render_ledger
    from billing_domain.services.reconcile import new_run_id
    from billing_domain.services.run_reconciliation import ReconciliationRequest

    with cli_services() as services, progress_bar("replaying", as_json) as progress:
        request = ReconciliationRequest(new_run_id(), "cli", "ledger", ("ledger",))
        report = _reconcile(services, request, progress)
        if as_json:
            sys.stdout.write(json.dumps(report.to_json()["ledger"], indent=2) + "\n")
        else:
            Console().print(render_ledger(report.ledger))
        raise typer.Exit(EXIT_CLEAN if report.is_clean else EXIT_FINDINGS)


@app.command("stuck")
def stuck(minutes: Annotated[float | None, minutes_option("--minutes", "Pending longer than this is stuck.")] = None,
          as_json: JsonOption = False) -> None:
    """Transfers pending longer than the threshold, measured on the run's clock (not the newest event's time)."""
    from billing_domain.services.reconcile import new_run_id
    from billing_domain.services.run_reconciliation import ReconciliationRequest

    with cli_services() as services, progress_bar("replaying", as_json) as progress:
        overrides = {} if minutes is None else {"stuck_after": timedelta(minutes=minutes)}
        request = ReconciliationRequest(new_run_id(), "cli", "stuck", ("transaction",), record=False)
        report = _reconcile(services, request, progress, **overrides)
        stuck_findings = [f for f in report.findings if f.kind.value == "stuck"]
        if as_json:
            sys.stdout.write(json.dumps([f.to_json() for f in stuck_findings], indent=2, default=str) + "\n")
        else:
            for finding in stuck_findings:
                sys.stdout.write(f"{finding.entity_id}: {finding.detail}\n")
            sys.stdout.write(f"{len(stuck_findings)} stuck transfer(s)\n")
        raise typer.Exit(EXIT_FINDINGS if stuck_findings else EXIT_CLEAN)


@app.command("export-findings")
def export_findings(run: Annotated[str | None, typer.Option(help="A run id (default: the latest full run).")] = None,
                    out: Annotated[Path | None, typer.Option(help="CSV file (default: stdout).")] = None) -> None:
    """A stored report's findings as CSV (money and versions as integer columns)."""
    from billing_domain.services.export import findings_csv

    with cli_services() as services:
        run_id = run or services.recon_store.latest_run_id()
        if run_id is None:
            err.print("error: run: no reconciliation is stored in billing_recon yet; `billing-recon reconcile all` "
                      "stores one", markup=False)
            raise typer.Exit(EXIT_ERROR)
        if not services.recon_store.run_exists(run_id):
            err.print(f"error: run: no reconciliation run {run_id} in billing_recon", markup=False)
            raise typer.Exit(EXIT_ERROR)
        text = findings_csv(services.recon_store.findings(run_id))
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        err.print(f"wrote {out}")


# --- rebuild -----------------------------------------------------------------------------------------
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show the before/after, write nothing.")]


def _rebuild(entity_type: str, selection: RebuildSelection, reason: str, actor: str, dry_run: bool,
             delete_orphans: bool, as_json: bool) -> None:
    from billing_domain.core.exceptions import ConcurrentOperationError
    from billing_domain.core.operators import from_cli
    from billing_domain.services.rebuild import rebuild

    with cli_services() as services, progress_bar(f"rebuilding {entity_type}s", as_json) as progress:
        try:
            result = rebuild(services.event_store, services.projections, services.recon_store,
                             entity_type=entity_type, selection=selection, dry_run=dry_run,  # type: ignore[arg-type]
                             reason=reason, operator=from_cli(actor), delete_orphans=delete_orphans,
                             progress=progress, checkpoints=services.checkpoints)
        except ConcurrentOperationError as exc:  # a refusal of this request (exit 1), not an error of the tool
            err.print(f"refused: {exc}")
            raise typer.Exit(EXIT_FINDINGS) from exc
        _print_rebuild(result, as_json)
        raise typer.Exit(EXIT_FINDINGS if result.refused or result.kept or any(
            v.startswith("still") for v in result.outcome.values()) else EXIT_CLEAN)


def _print_rebuild(result: RebuildResult, as_json: bool) -> None:
    from billing_domain.services.rebuild import WRITING, describe  # here, not at the top: `--help` stays fast

    if as_json:
        # msgspec, not json.dumps: with indent, json falls back to its pure-Python encoder, which took ~20% of a
        # whole `rebuild accounts --all --json` (a before and after per row); the values are JSON's own types.
        encoded = msgspec.json.format(msgspec.json.encode(result.to_json(), enc_hook=str), indent=2)
        sys.stdout.write(encoded.decode() + "\n")
        return
    mode = "dry run" if result.dry_run else "rebuild"
    written = "nothing written" if result.dry_run else f"{result.written:,} row(s) written"
    sys.stdout.write(f"{mode} of {result.entity_type}s ({result.run_id}), audit #{result.audit_id}: "
                     f"{result.summary()}; {written}\n")
    for change in result.changes:
        if change.action == "unchanged":
            continue
        # Every entity says what (would) become of it and why: "acc-7: would be refused: the event stream is
        # corrupt"; a written one what it was verified to be ("updated -> fixed").
        outcome = result.outcome_of(change)
        if not result.dry_run and change.action in WRITING:
            outcome = f"{describe(change.action, change.reason, dry_run=False)} -> {outcome}"
        sys.stdout.write(f"  {change.entity_id}: {outcome}\n")
        if change.action in WRITING and change.before != change.after:
            diff = _diff(change.before, change.after)
            if diff:
                sys.stdout.write(f"      {diff}\n")


def _diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    if before is None or after is None:
        return "(new row)" if before is None else "(row deleted)"
    return ", ".join(f"{column}: {old} -> {new}" for column, old, new in changed_columns(before, after))


def _register_rebuild(entity_type: str) -> None:
    plural = f"{entity_type}s"

    @rebuild_app.command(entity_type, help=f"Rebuild one {entity_type} from its events.")
    def one(entity_id: str, reason: ReasonOption, actor: ActorOption = "", dry_run: DryRunOption = False,
            as_json: JsonOption = False) -> None:
        from billing_domain.services.rebuild import RebuildSelection

        _rebuild(entity_type, RebuildSelection(ids=(entity_id,)), reason, actor, dry_run, False, as_json)

    @rebuild_app.command(plural, help=f"Rebuild {plural}: --all, --ids, or (default) what a report flagged.")
    def many(reason: ReasonOption, all_: Annotated[bool, typer.Option("--all")] = False,
             ids: Annotated[list[str] | None, typer.Option("--ids", help="Repeat or comma-separate.")] = None,
             from_report: Annotated[str | None, typer.Option("--from-report", help="A run id.")] = None,
             delete_orphans: Annotated[bool, typer.Option("--delete-orphans")] = False,
             actor: ActorOption = "", dry_run: DryRunOption = False, as_json: JsonOption = False) -> None:
        from billing_domain.services.rebuild import RebuildSelection

        # --ids given but empty is an error (id_list): only no selection flag at all means the default.
        chosen = id_list(ids) or ()
        _rebuild(entity_type, RebuildSelection(ids=chosen, all=all_, from_run=from_report), reason, actor, dry_run,
                 delete_orphans, as_json)


_register_rebuild("account")
_register_rebuild("transaction")


# --- stack -------------------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up() -> None:
    """Start (or reuse) the embedded PostgreSQL and broker: Tansu (events in memory only) by default, Apache Kafka
    (durable; needs Java and Maven) with BILLING_STACK_BROKER=kafka."""
    from billing_sandbox.stack import EmbeddedStack

    info = EmbeddedStack().up()
    for name, value in info.env().items():
        sys.stdout.write(f"export {name}={value}\n")


@stack_app.command("down")
def stack_down() -> None:
    """Stop both servers (Tansu's events are lost; Apache Kafka's log and PostgreSQL's data folder stay)."""
    from billing_sandbox.stack import EmbeddedStack

    EmbeddedStack().down()


@stack_app.command("status")
def stack_status() -> None:
    """Which broker the stack runs and where; exit 0 running, 1 not running."""
    from billing_sandbox.stack import EmbeddedStack

    stack = EmbeddedStack()
    info = stack.status()
    healthy = stack.is_healthy()
    if info is None:
        sys.stdout.write(f"not running: no stack recorded in {stack.dir}; `stack up` starts broker {stack.broker}\n")
    else:
        sys.stdout.write(f"{'running' if healthy else 'not running'}: {info.describe()}\n")
    raise typer.Exit(EXIT_CLEAN if healthy else EXIT_FINDINGS)


@stack_app.command("env")
def stack_env() -> None:
    """Print the variables to export to use the running embedded stack."""
    from billing_sandbox.stack import EmbeddedStack

    info = EmbeddedStack().status()
    if info is None:
        err.print("the embedded stack is not running: billing-recon stack up")
        raise typer.Exit(EXIT_ERROR)
    for name, value in info.env().items():
        sys.stdout.write(f"export {name}={value}\n")


# --- feature commands --------------------------------------------------------------------------------
# Each feature module exposes `register(app)`; one line here per module keeps this file small.
for feature in (engine, bench, api, point_in_time, security, projector_lag, recovery):
    feature.register(app)

if __name__ == "__main__":
    app()
