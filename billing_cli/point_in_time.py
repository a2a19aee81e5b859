"""`billing-recon as-of` and `billing-recon month-end`: balances and the events' findings at a point in time.

"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from billing_cli.support import (
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_FINDINGS,
    JsonOption,
    cli_services,
    err,
    minutes_option,
    progress_bar,
)
from billing_domain.core.exceptions import ConfigurationError

if TYPE_CHECKING:  # the services are imported by the commands that run them (`--help` stays fast)
    from billing_domain.core.cut import TopicPartitionKey
    from billing_domain.services.point_in_time import AsOfBalances, AsOfCut

CsvOption = Annotated[Path | None, typer.Option("--csv", help="Write the balances as CSV (integer minor units).")]


def register(app: typer.Typer) -> None:
    app.command("as-of")(as_of)
    app.command("month-end")(month_end_command)


def as_of(at: Annotated[str | None, typer.Option("--at", help="A UTC time, e.g. 2026-01-31T23:59:59Z.")] = None,
          offsets: Annotated[list[str] | None, typer.Option(
              "--offset", help="Instead of --at: TOPIC:PARTITION=OFFSET to stop before, one per partition.")] = None,
          csv_path: CsvOption = None, as_json: JsonOption = False,
          stuck_minutes: Annotated[float | None, minutes_option("--stuck-minutes", "Stuck threshold at that time.")]
          = None) -> None:
    """Balances per account and currency, and what the events themselves got wrong, as of a time.

    Events count when their own occurred_at is at or before --at. Exit 1 when there are findings."""
    from billing_cli.report_text import render_report
    from billing_domain.services.point_in_time import balances_from, replay_to, report_from
    from billing_domain.services.reconcile import new_run_id

    if offsets is not None and not any(i.strip() for value in offsets for i in value.split(",")):
        raise ConfigurationError("--offset: empty after trimming; give TOPIC:PARTITION=OFFSET, one per partition")
    if (at is None) == (not offsets):
        err.print("error: give either --at or --offset (one per partition)")
        raise typer.Exit(EXIT_ERROR)
    with cli_services() as services:
        minutes = stuck_minutes if stuck_minutes is not None else services.settings.stuck_after_minutes
        cut = _resolve(services.event_store, at, offsets or [])
        started = datetime.now(UTC)
        with progress_bar(f"replaying as of {cut.label}", as_json, total=cut.events) as progress:
            outcome = replay_to(services.event_store, cut, progress)
        balances = balances_from(outcome, cut)
        report = report_from(outcome, cut, run_id=new_run_id("as-of"), started_at=started,
                             stuck_after=timedelta(minutes=minutes))
        _write_csv(balances, csv_path)
        if as_json:
            sys.stdout.write(json.dumps({"balances": balances.to_json(), "report": report.to_json()}, indent=2,
                                        default=str) + "\n")
        else:
            _print_balances(balances)
            sys.stdout.write(render_report(report))
        raise typer.Exit(EXIT_CLEAN if report.is_clean else EXIT_FINDINGS)


def month_end_command(month: Annotated[str, typer.Argument(help="The month, e.g. 2026-01.")],
                      csv_path: CsvOption = None, as_json: JsonOption = False) -> None:
    """Every account's balance at the end of a month (UTC), with totals per currency (rows with --csv).

    Exit 1 when an account's stream is corrupt (its balance cannot be trusted)."""
    from billing_domain.services.point_in_time import balances_from, cut_at, month_end, replay_to

    with cli_services() as services:
        cut = _guard(lambda: cut_at(services.event_store, month_end(month)))
        with progress_bar(f"month end {month}", as_json, total=cut.events) as progress:
            balances = balances_from(replay_to(services.event_store, cut, progress), cut)
        _write_csv(balances, csv_path)
        if as_json:
            summary = {k: v for k, v in balances.to_json().items() if k != "accounts"}  # rows: --csv
            sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        else:
            _print_balances(balances)
        raise typer.Exit(EXIT_FINDINGS if balances.corrupt_accounts else EXIT_CLEAN)


def _resolve(event_store: Any, at: str | None, offsets: list[str]) -> AsOfCut:
    from billing_domain.services.point_in_time import cut_at, cut_at_offsets, parse_utc

    if at is not None:
        return _guard(lambda: cut_at(event_store, parse_utc(at)))
    return _guard(lambda: cut_at_offsets(event_store, parse_offsets(offsets)))


def parse_offsets(values: list[str]) -> dict[TopicPartitionKey, int]:
    """`TOPIC:PARTITION=OFFSET` items (repeated or comma-separated) as a stop-cut."""
    parsed: dict[TopicPartitionKey, int] = {}
    for item in (i.strip() for value in values for i in value.split(",") if i.strip()):
        name, _, offset = item.partition("=")
        topic, _, partition = name.rpartition(":")
        if not topic or not partition.isdigit() or not offset.strip().lstrip("-").isdigit():
            raise ConfigurationError(f"offset: {item!r} is not TOPIC:PARTITION=OFFSET")
        parsed[(topic, int(partition))] = int(offset)
    return parsed


def _guard(make: Any) -> AsOfCut:
    """Bad input is a usage error (exit 2) with the field named, not a traceback."""
    try:
        cut: AsOfCut = make()
    except ConfigurationError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    return cut


def _write_csv(balances: AsOfBalances, path: Path | None) -> None:
    if path is not None:
        balances.write_csv(path)
        err.print(f"wrote {len(balances.accounts)} account(s) to {path}")


def _print_balances(balances: AsOfBalances) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"As of {balances.as_of}: {len(balances.accounts)} account(s), {balances.events_read:,} "
                  f"event(s) read")
    table = Table("currency", "accounts", "total (minor units)")
    counts = balances.counts()
    for currency, total in balances.totals().items():
        table.add_row(currency, f"{counts[currency]:,}", f"{total:,}")
    console.print(table)
    if balances.corrupt_accounts:
        console.print(f"[red]{len(balances.corrupt_accounts)} account(s) with a corrupt stream; their balances "
                      f"cannot be trusted:[/] {', '.join(balances.corrupt_accounts[:20])}")
    if balances.late_events:
        console.print(f"[yellow]{balances.late_events} event(s) after the cut occurred before {balances.as_of} "
                      "(out of commit order); they are not counted[/]")
