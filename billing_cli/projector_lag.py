"""`billing-recon projector-lag`: how far the live projector's consumer group is behind the event store."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from billing_cli.support import EXIT_CLEAN, EXIT_FINDINGS, cli_services

# billing_domain.services.projector_lag.ENV_PROJECTOR_GROUP, named here so that `--help` imports no service
# (tests/unit/test_cli_startup.py holds the two equal).
ENV_PROJECTOR_GROUP = "BILLING_PROJECTOR_GROUP"


def register(app: typer.Typer) -> None:
    app.command("projector-lag")(projector_lag)


def projector_lag(group: Annotated[str | None, typer.Option(
                      "--group", help=f"The projector's consumer group (default ${ENV_PROJECTOR_GROUP} or "
                                      "billing-projector).")] = None,
                  as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Events the projector has not applied, per partition, and how long the oldest has waited.

    Exit 1 when past BILLING_MAX_PROJECTOR_LAG events or BILLING_MAX_PROJECTOR_LAG_AGE_MINUTES."""
    from rich.console import Console
    from rich.table import Table

    from billing_domain.services.progress import format_duration
    from billing_domain.services.projector_lag import LagThresholds, lag_verdict, measure_lag

    with cli_services() as services:
        thresholds = LagThresholds.from_env()
        lag = measure_lag(services.event_store, group)
        verdict = lag_verdict(lag, thresholds)
        if as_json:
            document = lag.to_json() | {"within_threshold": verdict.passed, "reasons": list(verdict.reasons),
                                        "max_events": thresholds.max_events,
                                        "max_age_minutes": thresholds.max_age.total_seconds() / 60}
            sys.stdout.write(json.dumps(document, indent=2) + "\n")
        else:
            console = Console()
            table = Table("partition", "end", "committed", "lag", "oldest unapplied at")
            for p in lag.partitions:
                table.add_row(p.name, f"{p.end:,}", "-" if p.committed is None else f"{p.committed:,}",
                              f"{p.lag:,}", p.oldest_unapplied_at.isoformat() if p.oldest_unapplied_at else "")
            console.print(table)
            console.print(f"group {lag.group_id}: {lag.total:,} event(s) unapplied; oldest waiting "
                          f"{format_duration(lag.oldest_unapplied_age.total_seconds())}")
            console.print("within bounds" if verdict.passed else f"[red]behind:[/] {'; '.join(verdict.reasons)}")
        raise typer.Exit(EXIT_CLEAN if verdict.passed else EXIT_FINDINGS)
